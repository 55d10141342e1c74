"""A small STOMP 1.2 client on asyncio streams: just what the ActiveMQ source needs (connect
with a login, subscribe with ``client-individual`` acknowledgements and a prefetch, ACK, NACK,
unsubscribe, send, heart-beats) and nothing else.

Why our own: of the Python STOMP clients on PyPI, ``stomp.py`` (and ``amqstompclient`` on top
of it) runs a receiver thread per connection and calls back from it, so every frame would cross
a thread into the event loop; ``aiostomp`` (last release 2022) speaks STOMP 1.1, hides connection
errors behind its own reconnect loop and cannot tell a refused login from a dropped socket, which
the source must (one is fatal, the other is retried); ``stomper`` and ``stompest`` are unmaintained
framers or synchronous clients. AMQP 1.0 (``python-qpid-proton``) is not an option either: the
Debian ``activemq`` package ships no AMQP transport, and proton runs its own reactor. STOMP's
framing is a few dozen lines over :class:`asyncio.StreamReader`, so the loop never blocks.

What this module guarantees: frames are read by one reader task owned by the connection
(``async with``); ``MESSAGE`` frames go to :attr:`StompConnection.messages` in arrival order;
a ``RECEIPT`` or ``ERROR`` answering a frame sent with a receipt resolves that call; an ERROR
the broker sends unasked, end of stream and a silent broker (missed heart-beats) close the
connection and set :attr:`StompConnection.error`. Internal to the ActiveMQ connector.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType

#: STOMP 1.2 header escapes (not applied to CONNECT / CONNECTED frames).
_ESCAPES = {"\\": "\\\\", "\r": "\\r", "\n": "\\n", ":": "\\c"}
_UNESCAPES = {"\\": "\\", "r": "\r", "n": "\n", "c": ":"}
#: Heart-beat tolerance: the broker may be silent this many of its intervals, plus a second,
#: before we give up. ActiveMQ beats only when it wrote nothing during its last check interval,
#: so two of its beats can be almost two intervals apart (and its first comes after two).
_HEARTBEAT_GRACE = 3.0
_HEARTBEAT_SLACK = 1.0
#: The longest frame line or NUL-terminated body read (a text message has no content-length):
#: above Lambda's 6 MB payload cap, so an oversized message still arrives and is refused whole.
READ_LIMIT = 64 * 1024 * 1024


class StompError(Exception):
    """The broker answered with an ERROR frame; ``message`` is its ``message`` header."""

    def __init__(self, message: str, body: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.body = body


class ConnectionLost(ConnectionError):
    """The connection ended (closed by the broker, a broken socket, missed heart-beats)."""


@dataclass(slots=True)
class Frame:
    command: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def _escape(value: str) -> str:
    if not any(c in value for c in _ESCAPES):
        return value
    return "".join(_ESCAPES.get(c, c) for c in value)


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    out: list[str] = []
    chars = iter(value)
    for c in chars:
        if c == "\\":
            nxt = next(chars, "")
            if nxt not in _UNESCAPES:
                raise ValueError(f"invalid STOMP header escape \\{nxt}")
            out.append(_UNESCAPES[nxt])
        else:
            out.append(c)
    return "".join(out)


def encode(command: str, headers: Mapping[str, str], body: bytes = b"") -> bytes:
    """One frame on the wire (headers escaped, except on CONNECT as STOMP 1.2 says)."""
    raw = command in ("CONNECT", "STOMP")
    lines = [command]
    for name, value in headers.items():
        lines.append(f"{name}:{value}" if raw else f"{_escape(name)}:{_escape(value)}")
    return ("\n".join(lines) + "\n\n").encode() + body + b"\0"


async def read_frame(reader: asyncio.StreamReader, idle: float | None = None) -> Frame:
    """The next frame; heart-beat EOLs before it are skipped. The body is read by
    ``content-length`` when the frame has one (it may hold NULs), else up to the NUL.
    ``idle`` bounds each wait for a line between frames (a heart-beat restarts it):
    ``TimeoutError`` when the broker stays silent that long."""
    line = b""
    while not line:
        async with asyncio.timeout(idle):
            line = (await reader.readuntil(b"\n")).rstrip(b"\r\n")
    command = line.decode()
    headers: dict[str, str] = {}
    raw = command == "CONNECTED"
    while True:
        line = (await reader.readuntil(b"\n")).rstrip(b"\r\n")
        if not line:
            break
        name, _, value = line.decode().partition(":")
        if not raw:
            name, value = _unescape(name), _unescape(value)
        headers.setdefault(name, value)  # STOMP 1.2: the first of a repeated header wins
    length = headers.get("content-length")
    if length is not None:
        body = await reader.readexactly(int(length))
        if await reader.readexactly(1) != b"\0":
            raise ValueError("STOMP frame body is not followed by NUL")
    else:
        body = (await reader.readuntil(b"\0"))[:-1]
    return Frame(command, headers, body)


class StompConnection:
    """One STOMP 1.2 connection; use :meth:`open` and ``async with``.

    Example::

        async with await StompConnection.open("127.0.0.1", 61613, "user", "pw") as stomp:
            await stomp.subscribe("/queue/orders", "1", {"activemq.prefetchSize": "10"})
            frame = await stomp.messages.get()
            await stomp.settle([frame.headers["ack"]], [])
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        connected: Frame,
        heartbeat: tuple[int, int],
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.server = connected.headers.get("server", "")
        self.session = connected.headers.get("session", "")
        self.messages: asyncio.Queue[Frame] = asyncio.Queue()
        #: why the connection ended; None while it is open or after a clean close
        self.error: BaseException | None = None
        self.closed = asyncio.Event()
        self._receipts: dict[str, asyncio.Future[None]] = {}
        self._ids = itertools.count(1)
        # Negotiated as STOMP 1.2 says: we send every ``send_every`` ms, the broker every
        # ``expect_every`` ms (0: no heart-beat that way).
        ours_send, ours_want = heartbeat
        theirs_send, theirs_want = _heartbeat(connected.headers.get("heart-beat", "0,0"))
        self._send_every = max(ours_send, theirs_want) if ours_send and theirs_want else 0
        self._expect_every = max(theirs_send, ours_want) if theirs_send and ours_want else 0
        self._tasks = [asyncio.create_task(self._read_loop(), name="stomp-reader")]
        if self._send_every:
            self._tasks.append(asyncio.create_task(self._beat(), name="stomp-heartbeat"))

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        login: str | None = None,
        passcode: str | None = None,
        *,
        vhost: str | None = None,
        heartbeat: tuple[int, int] = (10_000, 10_000),
        timeout: float = 10.0,
    ) -> StompConnection:
        """Connect and log in. Raises :class:`StompError` when the broker refuses (bad
        credentials), ``OSError`` / ``TimeoutError`` when it cannot be reached."""
        headers = {
            "accept-version": "1.2",
            "host": vhost or host,
            "heart-beat": f"{heartbeat[0]},{heartbeat[1]}",
        }
        if login is not None:
            headers["login"] = login
        if passcode is not None:
            headers["passcode"] = passcode
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=READ_LIMIT)
            try:
                writer.write(encode("CONNECT", headers))
                try:
                    frame = await read_frame(reader)
                except asyncio.IncompleteReadError as exc:
                    raise ConnectionLost(
                        f"the broker at {host}:{port} closed the connection at login"
                    ) from exc
                if frame.command == "ERROR":
                    raise _error(frame)
                if frame.command != "CONNECTED":
                    raise ConnectionLost(f"expected CONNECTED, got {frame.command}")
            except BaseException:
                writer.close()
                raise
        return cls(reader, writer, frame, heartbeat)

    async def __aenter__(self) -> StompConnection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _write(self, command: str, headers: Mapping[str, str], body: bytes = b"") -> None:
        if self.closed.is_set():
            raise ConnectionLost(f"connection closed: {self.error!r}")
        self._writer.write(encode(command, headers, body))

    async def _request(self, command: str, headers: dict[str, str], body: bytes = b"") -> None:
        """Send a frame with a receipt and wait for the broker to confirm it (or refuse it
        with an ERROR naming the receipt)."""
        receipt = f"r{next(self._ids)}"
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._receipts[receipt] = waiter
        try:
            self._write(command, {**headers, "receipt": receipt}, body)
            await self._writer.drain()
            await waiter
        finally:
            self._receipts.pop(receipt, None)

    async def subscribe(
        self, destination: str, sub_id: str, headers: Mapping[str, str] | None = None
    ) -> None:
        await self._request(
            "SUBSCRIBE",
            {
                "destination": destination,
                "id": sub_id,
                "ack": "client-individual",
                **(headers or {}),
            },
        )

    async def unsubscribe(self, sub_id: str) -> None:
        await self._request("UNSUBSCRIBE", {"id": sub_id})

    async def settle(self, acks: list[str], nacks: list[str]) -> None:
        """ACK ``acks`` and NACK ``nacks``, then wait for the broker's receipt of the last
        frame: on one ordered connection it answers only after processing those before it,
        so on return every acknowledgement has been applied."""
        frames = [("ACK", a) for a in acks] + [("NACK", n) for n in nacks]
        if not frames:
            return
        for command, ack_id in frames[:-1]:
            self._write(command, {"id": ack_id})
        command, ack_id = frames[-1]
        await self._request(command, {"id": ack_id})

    async def send(
        self, destination: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        """Send one message and wait for the broker's receipt."""
        await self._request("SEND", {"destination": destination, **(headers or {})}, body)

    async def close(self) -> None:
        """DISCONNECT (unacknowledged messages go back to the queue) and close the socket."""
        if not self.closed.is_set():
            with contextlib.suppress(Exception):
                self._writer.write(encode("DISCONNECT", {}))
                async with asyncio.timeout(1.0):
                    await self._writer.drain()
        self._finish(None)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()

    def abort(self) -> None:
        """Drop the socket at once, as a network failure would (tests use it)."""
        self._writer.transport.abort()

    def _finish(self, error: BaseException | None) -> None:
        if self.closed.is_set():
            return
        self.error = error
        self.closed.set()
        self._writer.close()
        lost = error or ConnectionLost("connection closed")
        for waiter in self._receipts.values():
            if not waiter.done():
                waiter.set_exception(lost)

    async def _read_loop(self) -> None:
        reader = self._reader
        timeout = (
            self._expect_every * _HEARTBEAT_GRACE / 1000 + _HEARTBEAT_SLACK
            if self._expect_every
            else None
        )
        try:
            while True:
                frame = await read_frame(reader, timeout)
                if frame.command == "MESSAGE":
                    self.messages.put_nowait(frame)
                    continue
                waiter = self._receipts.get(frame.headers.get("receipt-id", ""))
                if frame.command == "RECEIPT":
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
                elif frame.command == "ERROR":
                    error = _error(frame)
                    if waiter is not None and not waiter.done():
                        waiter.set_exception(error)
                        continue
                    self._finish(error)  # ActiveMQ closes the connection after it anyway
                    return
        except TimeoutError:
            self._finish(ConnectionLost(f"no heart-beat from the broker for {timeout:g} s"))
        except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            self._finish(ConnectionLost(f"connection lost: {exc!r}"))
        except ValueError as exc:  # a malformed frame: nothing after it can be trusted
            self._finish(ConnectionLost(f"malformed STOMP frame: {exc}"))
        else:  # pragma: no cover - the loop only ends by an exception
            self._finish(None)

    async def _beat(self) -> None:
        # Twice per agreed interval: a beat that is late by a scheduling hiccup is still in time.
        interval = self._send_every / 2000
        with contextlib.suppress(OSError, ConnectionError):
            while not self.closed.is_set():
                await asyncio.sleep(interval)
                self._writer.write(b"\n")


def _heartbeat(value: str) -> tuple[int, int]:
    try:
        send, want = (int(x) for x in value.split(","))
    except ValueError:
        return 0, 0
    return send, want


def _error(frame: Frame) -> StompError:
    body = frame.body.decode(errors="replace").strip()
    return StompError(frame.headers.get("message") or body or "ERROR frame", body)
