"""The machine's RabbitMQ (127.0.0.1:5672, guest/guest) for the RabbitMQ tests: a virtual host
of their own for the session (created and deleted with rabbitmqctl), and per test a
:class:`Broker` that declares uniquely named queues in it, publishes, reads queues back and
deletes its queues afterwards. Nothing of the broker is mocked."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import aiormq
import pytest
from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage
from pamqp.commands import Basic

from streamfn.connectors.rabbitmq import RabbitMQAccess

HOST = "127.0.0.1"
URL = f"amqp://{HOST}:5672"


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl`` (quiet) and return its output; fail the test on an error."""
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"rabbitmqctl {' '.join(args)}: {done.stderr or done.stdout}"
    return done.stdout


@pytest.fixture(scope="session")
def rabbit_vhost() -> Iterator[str]:
    """A virtual host for this session's queues, guest allowed everything in it."""
    name = f"streamfn-test-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield name
    finally:
        rabbitmqctl("delete_vhost", name)


class Broker:
    """A test's view of the broker: its own connection to the session's virtual host."""

    def __init__(self, vhost: str, connection: AbstractConnection, channel: AbstractChannel):
        self.vhost = vhost
        self.access = RabbitMQAccess(virtual_host=vhost)
        self._connection = connection
        self._channel = channel
        self._queues: list[str] = []

    async def queue(self, *, quorum: bool = False, arguments: dict[str, Any] | None = None) -> str:
        """A new uniquely named durable queue (quorum or classic) with these ``x-`` arguments,
        deleted after the test."""
        name = f"t-{uuid.uuid4().hex[:12]}"
        arguments = dict(arguments or {})
        if quorum:
            arguments["x-queue-type"] = "quorum"
        await self._channel.queue_declare(name, durable=True, arguments=arguments)
        self._queues.append(name)
        return name

    async def publish(self, queue: str, bodies: Iterable[bytes], **properties: Any) -> None:
        """Publish ``bodies`` to ``queue`` through the default exchange, confirmed."""
        props = Basic.Properties(**properties)
        for body in bodies:
            await self._channel.basic_publish(body, routing_key=queue, properties=props)

    async def depth(self, queue: str) -> tuple[int, int]:
        """(ready messages, consumers) of ``queue``."""
        ok = await self._channel.queue_declare(queue, passive=True)
        return int(ok.message_count or 0), int(ok.consumer_count or 0)

    async def wait_depth(self, queue: str, count: int, timeout: float = 15.0) -> None:
        """Wait until ``queue`` holds ``count`` ready messages; TimeoutError after
        ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while (await self.depth(queue))[0] != count:
                await asyncio.sleep(0.01)

    async def drain(self, queue: str) -> list[DeliveredMessage]:
        """Every ready message of ``queue``, acked."""
        got: list[DeliveredMessage] = []
        while True:
            message = await self._channel.basic_get(queue, no_ack=True)
            if isinstance(message.delivery, Basic.GetEmpty):
                return got
            got.append(message)

    async def delete(self, queue: str) -> None:
        await self._channel.queue_delete(queue)
        self._queues.remove(queue)

    async def close(self) -> None:
        for name in self._queues:
            await self._channel.queue_delete(name)
        await self._connection.close()


def close_connections(match: str) -> int:
    """Close, as an operator would, every broker connection whose client properties contain
    ``match`` (the source names its connections ``streamfn rabbitmq://...``); returns how
    many."""
    closed = 0
    for line in rabbitmqctl("list_connections", "pid", "client_properties").splitlines():
        if match in line:
            pid = line.split("\t", 1)[0]
            rabbitmqctl("close_connection", pid, "closed by the streamfn test suite")
            closed += 1
    return closed


@pytest.fixture
async def rabbit(rabbit_vhost: str) -> AsyncIterator[Broker]:
    connection = await aiormq.connect(f"{URL}/{rabbit_vhost}")
    channel = await connection.channel()
    broker = Broker(rabbit_vhost, connection, channel)
    try:
        yield broker
    finally:
        await broker.close()
