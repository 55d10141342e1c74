"""ActiveMQ connector tests against a real ActiveMQ 5.x broker (the session's
``activemq_broker``, started from the Debian package's files); shared helpers.

Every test uses its own uniquely named queue, so tests share the broker without seeing one
another's messages."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping

from streamfn.connectors.activemq.stomp import Frame, StompConnection
from streamfn.testing.activemq import ActiveMQBroker


def unique_queue() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def stomp(broker: ActiveMQBroker, user: str = "streamfn") -> AsyncIterator[StompConnection]:
    """A plain STOMP connection to the test broker, for producing and checking queues."""
    login, password = broker.credentials(user)
    async with await StompConnection.open(broker.host, broker.port, login, password) as conn:
        yield conn


async def send(
    broker: ActiveMQBroker,
    queue: str,
    bodies: Iterable[bytes],
    headers: Mapping[str, str] | None = None,
) -> None:
    """Send ``bodies`` as text messages (bytes messages when ``headers`` has
    ``content-length``, which :func:`send` fills in), each confirmed by the broker."""
    async with stomp(broker) as conn:
        for body in bodies:
            extra = dict(headers or {})
            if "content-length" in extra:
                extra["content-length"] = str(len(body))
            await conn.send(f"/queue/{queue}", body, extra)


async def receive(
    broker: ActiveMQBroker, queue: str, count: int, timeout: float = 10
) -> list[Frame]:
    """The next ``count`` messages of ``queue``, acknowledged."""
    async with stomp(broker) as conn:
        await conn.subscribe(f"/queue/{queue}", "check", {"activemq.prefetchSize": str(count)})
        frames: list[Frame] = []
        async with asyncio.timeout(timeout):
            while len(frames) < count:
                frames.append(await conn.messages.get())
        await conn.settle([f.headers["ack"] for f in frames], [])
        return frames


async def queued(broker: ActiveMQBroker, queue: str, timeout: float = 10) -> int:
    """How many messages ``queue`` holds, by browsing it (ActiveMQ ends a browse with a
    ``browser: end`` frame)."""
    async with stomp(broker) as conn:
        await conn.subscribe(f"/queue/{queue}", "browse", {"browser": "true", "ack": "auto"})
        count = 0
        async with asyncio.timeout(timeout):
            while True:
                frame = await conn.messages.get()
                if frame.headers.get("browser") == "end":
                    return count
                count += 1


class TcpProxy:
    """A loopback TCP proxy in front of the broker whose open connections a test can cut
    (:meth:`sever`), as a network failure would; new connections go through again."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.sever()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def sever(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers |= {writer, up_writer}
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._tasks.discard(task)
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()
