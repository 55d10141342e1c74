"""The server under the Invoke API: uvicorn with httptools, bound by streamfn, with a deadline
on receiving each request and no signal handlers of its own (``App.serve`` owns SIGTERM and
SIGINT). ``streamfn bench http`` runs its bare ASGI baseline on this same stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from streamfn import App
from streamfn.errors import ConfigError

from .invoke import asgi_app
from .wire import Limits

log = logging.getLogger("streamfn.http")


class _Protocol(HttpToolsProtocol):
    """httptools with a deadline on receiving each request: its headers within
    ``header_timeout``, then its body within ``body_timeout``. The deadlines are plain numbers
    checked by one sweep per server (:func:`_reap_slow_requests`), not a timer per request."""

    header_timeout = 10.0
    body_timeout = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.request_deadline: float | None = self.loop.time() + self.header_timeout

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.request_deadline = self.loop.time() + self.header_timeout

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self.request_deadline = self.loop.time() + self.body_timeout

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.request_deadline = None

    def request_too_slow(self) -> None:
        """Give up on the request being received: a 408 if its headers are in and nothing was
        answered yet, then close, which tells the application the client is gone."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_started and not cycle.response_complete:
            self.transport.write(_REQUEST_TIMEOUT)
        self.request_deadline = None
        self.transport.close()


_TIMEOUT_BODY = b'{"Type":"User","message":"The request was not received in time."}'
_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"x-amzn-errortype: RequestTimeoutException\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


async def _reap_slow_requests(connections: set[Any], limits: Limits) -> None:
    """Close connections whose request is past its deadline, a few times per timeout."""
    loop = asyncio.get_running_loop()
    period = max(0.01, min(limits.header_timeout, limits.body_timeout) / 4)
    while True:
        await asyncio.sleep(period)
        now = loop.time()
        for connection in list(connections):
            deadline = getattr(connection, "request_deadline", None)
            if deadline is not None and now > deadline:
                connection.request_too_slow()


class Server(uvicorn.Server):
    """uvicorn's server minus its signal handlers: ``App.serve`` owns SIGTERM/SIGINT and tells
    this server to stop through the ``stop`` event."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """Bind here rather than in uvicorn, whose bind failure calls ``sys.exit``."""
    try:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    try:
        return socket.create_server(address, family=family, backlog=2048)
    except OSError as exc:
        # create_server appends the address to strerror; the message already names it.
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(f"cannot listen on {host}:{port}: {reason}") from exc


def uvicorn_config(asgi: Any, limits: Limits) -> uvicorn.Config:
    """The server stack streamfn runs on (and its benchmark compares against)."""
    protocol = type(
        "Protocol",
        (_Protocol,),
        {"header_timeout": limits.header_timeout, "body_timeout": limits.body_timeout},
    )
    return uvicorn.Config(
        asgi,
        http=protocol,
        ws="none",
        lifespan="off",
        interface="asgi3",
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        date_header=False,
        timeout_keep_alive=int(limits.keep_alive),
        limit_concurrency=limits.max_connections,
    )


async def serve(
    app: App,
    stop: asyncio.Event,
    *,
    host: str = "127.0.0.1",
    port: int = 9000,
    limits: Limits | None = None,
    operational_only: bool = False,
) -> None:
    """Serve the Invoke API until ``stop`` is set, then finish in-flight requests before
    returning. Raises ConfigError if the address cannot be bound. With ``operational_only``,
    serve only ``/health``, ``/ready`` and ``/metrics`` (``streamfn run --metrics-port``)."""
    limits = limits or Limits()
    sock = bind(host, port)
    with sock:
        asgi = asgi_app(app, limits, operational_only=operational_only)
        server = Server(uvicorn_config(asgi, limits))
        routes = "operational" if operational_only else "all"
        log.info("listening", extra={"host": host, "port": sock.getsockname()[1], "routes": routes})
        running = asyncio.create_task(server.serve(sockets=[sock]))
        stopping = asyncio.create_task(stop.wait())
        reaping = asyncio.create_task(_reap_slow_requests(server.server_state.connections, limits))
        try:
            await asyncio.wait((running, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            server.should_exit = True
            await running
            reaping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaping
