"""The server under the Invoke API: uvicorn with httptools, bound by streamfn, holding every
client to :class:`~.wire.Limits`, with no signal handlers of its own (``App.serve`` owns SIGTERM
and SIGINT). ``streamfn bench http`` runs its bare ASGI baseline on this same stack.

Why a protocol of our own: uvicorn bounds neither a request's head (httptools buffers a header
line however long it grows: one client streaming header lines took the server from 75 MB to
1 GB in 4 s, never given back) nor how long a client may take, and past ``limit_concurrency``
it refuses every new client for as long as slow ones hold the slots. Here:

- a head is counted as it arrives and refused once past its limits (414, 431), so a connection
  buffers at most ``max_header_bytes`` plus one read before its request starts;
- the head and then the body must arrive before their deadlines (408), plain numbers checked by
  one sweep per server (:func:`_reap_slow_requests`), not a timer per request;
- past ``max_connections`` a new connection makes room by shedding the one that costs least to
  lose (:class:`_Shelves`); a new client is answered 503 only when every other connection has
  a request being answered;
- every answer the server writes itself (400, 408, 414, 431, 503) is Lambda's JSON error with
  ``x-amzn-ErrorType`` (:func:`~.wire.error_body`), then a lingering close: the client's input
  is read and dropped for a moment, as closing a socket with unread input resets the
  connection, and a reset can destroy the answer before the client reads it.

Refusals are logged at a bounded rate (one line, then a summary a minute), as a flood of them
is worth knowing about but not worth a line each.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, ClassVar

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from streamfn import App
from streamfn.errors import ConfigError

from .._retrylog import RetryLog
from .invoke import asgi_app
from .wire import Limits, error_body, request_id

log = logging.getLogger("streamfn.http")

#: How long a refused connection's input is drained before it is closed, and how much of it.
#: Enough for a client to read a few-hundred-byte answer; a client still sending past either
#: is not reading it.
_LINGER_SECONDS = 1.0
_LINGER_BYTES = 65536

# Where a connection is in its exchange. The shelf it is on (_Shelves) follows from it.
_HEAD = 0  # receiving a request line and headers (also: connected, nothing sent yet)
_BODY = 1  # receiving the body of a request whose head is in
_ANSWERING = 2  # the whole request is in; the application answers it
_IDLE = 3  # keep-alive, between requests
_REFUSED = 4  # answered by the server itself; input drained until closed
_GONE = 5  # closed by the server


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request the server has refused."""


class _Refusal(Exception):
    """A refusal, as :class:`RetryLog` logs it."""


class _Shelves:
    """One server's connections that may be shed to make room, each shelf oldest first:
    ``refused`` (answered, their input being drained), then ``idle`` (keep-alive, between
    requests), then ``receiving`` (a request's head or body arriving) ordered by latest
    progress, so its first is the connection longest without any. A connection whose request is
    being answered is on none: it is never shed."""

    def __init__(self) -> None:
        self.refused: OrderedDict[_Protocol, None] = OrderedDict()
        self.idle: OrderedDict[_Protocol, None] = OrderedDict()
        self.receiving: OrderedDict[_Protocol, None] = OrderedDict()
        self.refusals = RetryLog(log, "HTTP client refused by the server's limits")

    def cheapest(self, keep: _Protocol) -> _Protocol | None:
        """The connection to shed first, other than ``keep``; None when only ``keep`` and
        connections being answered are left."""
        for shelf in (self.refused, self.idle, self.receiving):
            for connection in shelf:
                if connection is not keep:
                    return connection
        return None


class _Protocol(HttpToolsProtocol):
    """httptools held to :attr:`limits`; each server gets a subclass with its own limits and
    shelves (:func:`uvicorn_config`). Overrides only count, time and refuse: parsing, the
    request/response cycle and keep-alive stay uvicorn's."""

    limits: ClassVar[Limits] = Limits()
    shelves: ClassVar[_Shelves]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.url = b""  # uvicorn sets it per message; the head checks may read it before
        self.shelf: OrderedDict[_Protocol, None] | None = None
        self.phase = _HEAD
        self.head_bytes = 0  # received since the head began (may include a body's first read)
        self.too_many_headers = False
        self.drained = 0
        self.linger: asyncio.TimerHandle | None = None
        self.request_deadline: float | None = None
        self._start_head()
        if len(self.connections) > self.limits.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._put_on(None)
        self.phase = _GONE
        self.request_deadline = None
        if self.linger is not None:
            self.linger.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase == _REFUSED:
            self.drained += len(data)
            if self.drained > _LINGER_BYTES:
                self.transport.close()
            return
        if phase == _IDLE:  # the first bytes of the next request
            self._start_head()
        elif self.shelf is not None:
            self.shelf.move_to_end(self)
        if self.phase == _HEAD:
            self.head_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()  # ws="none": answered as plain HTTP
        except httptools.HttpParserError as exc:
            if self.phase != _REFUSED:  # else refused by a callback, which stopped the parser
                self._refuse(
                    400,
                    "InvalidRequestContentException",
                    f"The request is not valid HTTP/1.1: {exc}.",
                )
            return
        if self.phase == _HEAD and (refusal := self._head_refusal()) is not None:
            self._refuse(*refusal)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.too_many_headers = False
        if self.phase != _HEAD:  # pipelined behind a request still being answered
            self._start_head()

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.headers) < self.limits.max_header_count:
            super().on_header(name, value)
        else:  # refused after this read; the fields beyond the limit are not kept
            self.too_many_headers = True

    def on_headers_complete(self) -> None:
        refusal = self._head_refusal(exact=True)
        if (
            refusal is None
            and len(self.connections) > self.limits.max_connections
            and not self._make_room()
        ):
            refusal = (
                503,
                "ServiceUnavailableException",
                f"Each of the server's {self.limits.max_connections} connections has a request "
                "being answered; retry.",
            )
        if refusal is not None:
            self._refuse(*refusal)
            raise _Refused
        self.phase = _BODY
        self.request_deadline = self.loop.time() + self.limits.body_timeout
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self.cycle.response_complete:  # answered before its body was in (a 413)
            self._become_idle()
        else:
            self.phase = _ANSWERING
            self.request_deadline = None
            self._put_on(None)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # self.cycle is the latest request's: a pipelined one may still be in progress.
        complete = self.phase == _ANSWERING and self.cycle.response_complete
        if complete and not self.transport.is_closing():
            self._become_idle()

    def request_too_slow(self) -> None:
        """Past the deadline of the head or body being received: 408 (or, if nothing of a
        request came, close without a word, as for an idle connection)."""
        if self.phase == _HEAD and not self.head_bytes:
            self._close()
            return
        if self.phase == _HEAD:
            part, timeout = "headers were", self.limits.header_timeout
        else:
            part, timeout = "body was", self.limits.body_timeout
        self._refuse(
            408,
            "RequestTimeoutException",
            f"The request {part} not received within {timeout:g} seconds.",
        )

    def shed(self) -> None:
        """Close to make room for a new connection: with a 503 if part of a request came in and
        the client is waiting for its answer."""
        if (self.phase == _BODY or (self.phase == _HEAD and self.head_bytes)) and (
            self._answerable()
        ):
            self.transport.write(
                _error(
                    503,
                    "ServiceUnavailableException",
                    f"The server is at its limit of {self.limits.max_connections} connections "
                    "and closed this one, the longest without progress; retry.",
                )
            )
            self._log_refusal(503, "ServiceUnavailableException", "connection shed")
        self._close()

    def _start_head(self) -> None:
        self.phase = _HEAD
        self.head_bytes = 0
        self.request_deadline = self.loop.time() + self.limits.header_timeout
        self._put_on(self.shelves.receiving)

    def _become_idle(self) -> None:
        self.phase = _IDLE
        self.request_deadline = None  # uvicorn's keep-alive timer closes it
        self._put_on(self.shelves.idle)

    def _put_on(self, shelf: OrderedDict[_Protocol, None] | None) -> None:
        if self.shelf is not None:
            del self.shelf[self]
        if shelf is not None:
            shelf[self] = None
        self.shelf = shelf

    def _make_room(self) -> bool:
        victim = self.shelves.cheapest(keep=self)
        if victim is None:
            return False
        victim.shed()
        return True

    def _head_refusal(self, *, exact: bool = False) -> tuple[int, str, str] | None:
        """414 or 431 if the head being received is past a limit. ``head_bytes`` may count a
        body's first bytes read with the head; with ``exact`` (the head is complete), a head it
        puts over the limit is measured."""
        limits = self.limits
        if len(self.url) > limits.max_url_bytes:
            return (
                414,
                "URITooLongException",
                f"The request URI is longer than {limits.max_url_bytes} bytes.",
            )
        if self.too_many_headers:
            return (
                431,
                "RequestHeaderFieldsTooLargeException",
                f"The request has more than {limits.max_header_count} header fields.",
            )
        if self.head_bytes > limits.max_header_bytes and (
            not exact or self._head_size() > limits.max_header_bytes
        ):
            return (
                431,
                "RequestHeaderFieldsTooLargeException",
                f"The request line and headers are longer than {limits.max_header_bytes} bytes.",
            )
        return None

    def _head_size(self) -> int:
        """The size of a complete head: request line, fields with their separators, blank
        line (give or take optional whitespace, which the parser drops)."""
        line = len(self.parser.get_method()) + len(self.url) + len(" HTTP/1.1\r\n") + 1
        return line + sum(len(name) + len(value) + 4 for name, value in self.headers) + 2

    def _answerable(self) -> bool:
        """Whether the client's next answer would be to the request being received: not if an
        earlier request is still being answered (pipelining)."""
        cycle = self.cycle
        if self.pipeline:
            return False
        if self.phase == _BODY:
            return not cycle.response_started
        return cycle is None or cycle.response_complete

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer ``status`` (when the client is waiting for an answer to this request), stop
        reading requests, drain the client's input for a moment, then close."""
        answer = self._answerable()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:  # the application sees it gone
            cycle.disconnected = True
            cycle.keep_alive = False
            cycle.message_event.set()
        self.pipeline.clear()
        self._unset_keepalive_if_required()
        self.request_deadline = None
        self.phase = _REFUSED
        self._put_on(self.shelves.refused)
        self._log_refusal(status, code, message)
        if not answer or not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write(_error(status, code, message))
        self.transport.write_eof()  # sent once the answer is
        self.flow.resume_reading()
        self.linger = self.loop.call_later(_LINGER_SECONDS, self.transport.close)

    def _close(self) -> None:
        self._put_on(None)
        self.phase = _GONE
        self.request_deadline = None
        self.transport.close()

    def _log_refusal(self, status: int, code: str, message: str) -> None:
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "unknown"
        self.shelves.refusals.failed(
            _Refusal(f"{message} (client {client})"), f"answered {status}", error_type=code
        )


def _error(status: int, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 answer the server writes itself, in Lambda's error shape."""
    body = error_body(status, code, message)
    return b"".join(
        (
            STATUS_LINE[status],
            b"content-type: application/json\r\nx-amzn-errortype: ",
            code.encode(),
            b"\r\nx-amzn-requestid: ",
            request_id().encode(),
            b"\r\nconnection: close\r\ncontent-length: %d\r\n\r\n" % len(body),
            body,
        )
    )


async def _reap_slow_requests(connections: set[Any], limits: Limits) -> None:
    """Refuse requests past their deadline, a few times per timeout."""
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


#: How a program calling :func:`serve` lifts :func:`check_exposure`'s refusal.
_CODE_REMEDY = (
    "give the app access keys (App(access_keys=...)), or pass allow_unauthenticated=True to let "
    "anyone who can reach it invoke every function"
)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only reaches this machine: a loopback address (127.0.0.0/8, ``::1``), or
    a name all of whose addresses are loopback ones (``localhost``). An empty host is every
    interface."""
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return False  # it cannot be bound either; bind() says so
    addresses = {info[4][0] for info in infos}
    return all(ipaddress.ip_address(str(a).partition("%")[0]).is_loopback for a in addresses)


def check_exposure(
    app: App, host: str, *, allow_unauthenticated: bool = False, remedy: str = _CODE_REMEDY
) -> bool:
    """Secure by default: refuse (ConfigError) to serve the Invoke API on ``host`` beyond this
    machine while ``app`` has no access keys, unless ``allow_unauthenticated``. Returns whether
    it will be served beyond loopback without authentication, which the caller logs at WARNING
    (:func:`serve` does). ``remedy`` says how to lift the refusal in the caller's terms
    (``streamfn run`` names its options). The one place this is decided: :func:`serve` checks
    it, and ``streamfn run`` checks it before starting anything."""
    if app.access_keys or is_loopback(host):
        return False
    if not allow_unauthenticated:
        where = host or "every interface (host '')"
        raise ConfigError(
            f"refusing to serve the Invoke API on {where} without access keys: {remedy}"
        )
    return True


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
    """The server stack streamfn runs on (and its benchmark compares against). The connection
    limit is the protocol's (shedding), not uvicorn's ``limit_concurrency`` (refusing)."""
    protocol = type("Protocol", (_Protocol,), {"limits": limits, "shelves": _Shelves()})
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
    )


async def serve(
    app: App,
    stop: asyncio.Event,
    *,
    host: str = "127.0.0.1",
    port: int = 9000,
    limits: Limits | None = None,
    operational_only: bool = False,
    allow_unauthenticated: bool = False,
) -> None:
    """Serve the Invoke API until ``stop`` is set, then finish in-flight requests before
    returning. Raises ConfigError if the address cannot be bound. ``limits`` bounds what each
    client may cost (:class:`~.wire.Limits`). With ``operational_only``, serve only
    ``/health``, ``/ready`` and ``/metrics`` (``streamfn run --metrics-port``), on any host.

    Secure by default: on a ``host`` beyond loopback (``0.0.0.0``, ``::``, ``""``, an
    interface's address) the Invoke API needs the app's access keys, else ConfigError before
    anything listens, unless ``allow_unauthenticated`` (then logged at WARNING)."""
    limits = limits or Limits()
    exposed = not operational_only and check_exposure(
        app, host, allow_unauthenticated=allow_unauthenticated
    )
    sock = bind(host, port)
    with sock:
        asgi = asgi_app(app, limits, operational_only=operational_only)
        server = Server(uvicorn_config(asgi, limits))
        routes = "operational" if operational_only else "all"
        if exposed:
            log.warning(
                "serving the Invoke API without authentication: anyone who can reach it may "
                "invoke every function",
                extra={"host": host, "port": sock.getsockname()[1]},
            )
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
