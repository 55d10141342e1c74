"""Helpers for the HTTP adapter's tests: raw HTTP/1.1 exchanges (for what boto3 cannot send),
boto3's lambda client off the event loop, an app served in-process, and ``streamfn run`` as a
subprocess. Every wait has a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

from streamfn import App, testing
from streamfn.connectors import http
from streamfn.connectors.http.wire import Limits

ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"
DEADLINE = 10.0  # seconds any single exchange or wait may take
ACCOUNT = "000000000000"
ARN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function"
SESSION = boto3.session.Session()  # shared, so the service model is loaded once


@contextlib.contextmanager
def log_record(logger_name: str, message: str) -> Iterator[asyncio.Future[logging.LogRecord]]:
    """A future resolved by the first ``message`` logged on ``logger_name``: waiting for a log
    line without polling."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[logging.LogRecord] = loop.create_future()

    def resolve(record: logging.LogRecord) -> None:
        if not future.done():
            future.set_result(record)

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == message:
                loop.call_soon_threadsafe(resolve, record)

    logger = logging.getLogger(logger_name)
    handler, level = Catch(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield future
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


#: Polls a condition; like every wait here, it fails after DEADLINE seconds unless told.
wait_until = functools.partial(testing.wait_until, timeout=DEADLINE)


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    header_list: list[tuple[str, str]]

    def json(self) -> Any:
        return json.loads(self.body)


async def raw_request(
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    chunked: bool = False,
    host: str | None = None,
) -> RawResponse:
    """One HTTP/1.1 exchange on a fresh connection. The body is written without waiting, since
    the server may answer (413) before reading it; it then discards the rest."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        if chunked:
            for start in range(0, len(body), 65536):
                piece = body[start : start + 65536]
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(body)
        return await read_response(reader, method)
    finally:
        writer.transport.abort()  # drop whatever of an oversized body is still unsent


async def read_response(reader: asyncio.StreamReader, method: str = "GET") -> RawResponse:
    status = int((await reader.readline()).split()[1])
    header_list: list[tuple[str, str]] = []
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        header_list.append((name.strip().lower(), value.strip()))
    headers = dict(header_list)
    length = 0 if method == "HEAD" else int(headers.get("content-length", "0"))
    return RawResponse(status, headers, await reader.readexactly(length), header_list)


def lambda_client(port: int, **config: Any) -> Any:
    return SESSION.client(
        "lambda",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=botocore.config.Config(
            retries={"max_attempts": 0},
            connect_timeout=DEADLINE,
            read_timeout=DEADLINE,
            **config,
        ),
    )


async def invoke(client: Any, **kwargs: Any) -> tuple[dict[str, Any], Any]:
    """boto3's invoke off the event loop (it blocks); returns the response and decoded payload."""

    def call() -> tuple[dict[str, Any], bytes]:
        response = client.invoke(**kwargs)
        return response, response["Payload"].read()

    response, payload = await asyncio.to_thread(call)
    return response, json.loads(payload) if payload else None


async def invoke_error(client: Any, **kwargs: Any) -> dict[str, Any]:
    """The botocore error response of an invoke that must be refused."""
    with pytest.raises(ClientError) as info:
        await invoke(client, **kwargs)
    response: dict[str, Any] = info.value.response
    return response


async def wait_until_serving(port: int) -> None:
    while True:
        try:
            if (await raw_request(port, "GET", "/health")).status == 200:
                return
        except OSError:
            pass
        await asyncio.sleep(0.01)


async def wait_until_refusing(port: int) -> None:
    """Wait for the listening socket to close, i.e. for the server to be shutting down."""
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return
        writer.transport.abort()
        await asyncio.sleep(0.01)


@dataclass
class Served:
    app: App
    port: int
    client: Any
    stop: asyncio.Event
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def serving(app: App, limits: Limits | None = None) -> AsyncIterator[Served]:
    """``app`` with its Invoke API on a free port, run as ``streamfn run`` runs it (App.serve),
    stopped and awaited on exit."""
    stop = asyncio.Event()
    server = functools.partial(http.serve, port=0, limits=limits)
    async with asyncio.timeout(DEADLINE):
        with log_record("streamfn.http", "listening") as listening:
            task = asyncio.create_task(app.serve(server, stop=stop))
            await asyncio.wait((listening, task), return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()  # serve failed before listening: raise its error
            port = listening.result().__dict__["port"]
        await wait_until_serving(port)
    client = lambda_client(port)
    try:
        yield Served(app, port, client, stop, task)
    finally:
        client.close()
        stop.set()
        async with asyncio.timeout(DEADLINE):
            await task


@dataclass
class Cli:
    """A ``streamfn run`` subprocess and the JSON log lines it has printed so far."""

    proc: asyncio.subprocess.Process
    port: int
    lines: list[dict[str, Any]]

    async def read_until(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first log line (already read or still to come) that satisfies ``predicate``."""
        for line in self.lines:
            if predicate(line):
                return line
        assert self.proc.stderr is not None
        async with asyncio.timeout(DEADLINE):
            while True:
                raw = await self.proc.stderr.readline()
                assert raw, f"streamfn run exited early: {self.lines[-5:]}"
                line = json.loads(raw)
                self.lines.append(line)
                if predicate(line):
                    return line

    async def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(DEADLINE):
            assert self.proc.stderr is not None
            for raw in (await self.proc.stderr.read()).splitlines():
                self.lines.append(json.loads(raw))
            return await self.proc.wait()


async def start_cli(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamfn.cli",
        *args,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


@contextlib.asynccontextmanager
async def streamfn_run(
    target: str, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[Cli]:
    """``streamfn run target --port 0 ...``, yielded once it listens (the port is read from its
    "listening" line: no window for another process to take it); killed if still running."""
    proc = await start_cli("run", target, "--port", "0", *args, env=env)
    cli = Cli(proc, 0, [])
    try:
        listening = await cli.read_until(lambda line: line.get("message") == "listening")
        cli.port = listening["port"]
        yield cli
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def cli_output(*args: str, timeout: float = 30.0) -> tuple[int, str, str]:
    """Run a ``streamfn`` subcommand to completion: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamfn.cli",
        *args,
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(timeout):
        stdout, stderr = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, stdout.decode(), stderr.decode()


async def send_events(port: int, function: str, payloads: list[bytes]) -> list[str]:
    """``Event`` invocations over concurrent raw connections; the request ids of the 202s."""

    async def one(payload: bytes) -> str:
        response = await raw_request(
            port,
            "POST",
            f"/2015-03-31/functions/{function}/invocations",
            payload,
            {"X-Amz-Invocation-Type": "Event"},
        )
        assert response.status == 202, response.body
        return response.headers["x-amzn-requestid"]

    return list(await asyncio.gather(*(one(p) for p in payloads)))
