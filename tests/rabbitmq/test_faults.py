"""RabbitMQSource when things go wrong: a broker connection closed mid-batch loses nothing, a
poison message leaves through the queue's dead-letter exchange instead of looping, a message
over the payload cap is rejected, and refused credentials, a missing virtual host or queue,
or a queue deleted while consumed disable the mapping with one clear line, while an
unreachable broker is retried."""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import pytest

from streamfn import App, Batch, Context, SourceError
from streamfn.connectors.rabbitmq import RabbitMQAccess, RabbitMQSource
from streamfn.errors import SourceUnreachable
from streamfn.testing import wait_until
from streamfn.testing.servers import free_port

from .conftest import URL, Broker, close_connections


async def test_a_connection_closed_mid_batch_loses_nothing(rabbit: Broker) -> None:
    queue = await rabbit.queue()
    bodies = [f"m{i}".encode() for i in range(30)]
    await rabbit.publish(queue, bodies)
    source = RabbitMQSource(queue, URL, access=rabbit.access)
    started = asyncio.Event()
    release = asyncio.Event()
    done: list[bytes] = []
    redelivered: list[bool] = []
    app = App()

    @app.consume(source, batch_size=10, maximum_batching_window=0.05, event_format="lambda")
    async def handler(event: dict[str, Any], context: Any) -> None:
        [messages] = event["rmqMessagesByQueue"].values()
        started.set()
        await release.wait()  # the first batch is in the handler when the connection goes
        done.extend(m["data"] for m in messages)
        redelivered.extend(m["redelivered"] for m in messages)

    mapping = app.mappings[0]
    async with app.running():
        await asyncio.wait_for(started.wait(), 15)
        assert await asyncio.to_thread(close_connections, f"streamfn {source.describe()}") == 1
        await wait_until(lambda: source.connections == 2)
        release.set()
        await wait_until(lambda: source.acked == 30)
        assert await rabbit.depth(queue) == (0, 1)
    assert mapping.stats.fatal is None and mapping.state == "Enabled"
    assert len(done) >= 30 and len(set(done)) == 30  # all of them; the broken batch maybe twice
    assert any(redelivered)  # what the lost connection held came back redelivered


async def test_a_poison_message_leaves_through_the_dead_letter_exchange(rabbit: Broker) -> None:
    dead = await rabbit.queue()
    queue = await rabbit.queue(
        quorum=True,
        arguments={
            "x-delivery-limit": 2,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dead,
        },
    )
    await rabbit.publish(queue, [b"good-1", b"poison", b"good-2"])
    source = RabbitMQSource(queue, URL, access=rabbit.access)
    attempts: list[bytes] = []
    app = App()

    @app.consume(
        source,
        batch_size=1,  # MQ mappings retry a batch whole: a batch of one isolates the poison
        maximum_batching_window=0,
        retry_base_delay=0.01,
        retry_max_delay=0.02,
    )
    async def handler(batch: Batch, context: Context) -> None:
        attempts.extend(r.value for r in batch)
        if batch[0].value == b"poison":
            raise ValueError("cannot parse")

    async with app.running():
        await rabbit.wait_depth(dead, 1)
        await wait_until(lambda: source.acked == 2)
    [letter] = await rabbit.drain(dead)
    assert letter.body == b"poison"
    headers: Any = letter.header.properties.headers
    assert headers["x-death"][0]["reason"] == "delivery_limit"
    assert attempts.count(b"poison") == 3  # the first delivery and x-delivery-limit retries
    assert attempts.count(b"good-1") == attempts.count(b"good-2") == 1
    assert source.requeued == 3


@pytest.mark.parametrize("event_format", ["native", "lambda"])
async def test_a_message_over_the_payload_cap_is_rejected_to_the_dead_letter_exchange(
    rabbit: Broker, caplog: pytest.LogCaptureFixture, event_format: str
) -> None:
    dead = await rabbit.queue()
    queue = await rabbit.queue(
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead}
    )
    # 3500 bytes fit the cap natively, not as base64 with their event around them
    big = b"x" * (5000 if event_format == "native" else 3500)
    await rabbit.publish(queue, [big, b"small"])
    source = RabbitMQSource(queue, URL, access=rabbit.access)
    seen: list[bytes] = []
    app = App()

    @app.consume(
        source, payload_limit=4096, maximum_batching_window=0.05, event_format=event_format
    )
    async def handler(event: Any, context: Any) -> None:
        if event_format == "native":
            seen.extend(r.value for r in event)
        else:
            [messages] = event["rmqMessagesByQueue"].values()
            seen.extend(base64.b64decode(m["data"]) for m in messages)

    async with app.running():
        await wait_until(lambda: source.rejected == 1 and source.acked == 1)
    assert seen == [b"small"]
    [letter] = await rabbit.drain(dead)
    assert letter.body == big
    assert any("rejected without requeue" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("access", "queue", "expected"),
    [
        (
            RabbitMQAccess("guest", "wrong"),
            None,
            "RabbitMQ at amqp://127.0.0.1:5672 refused user 'guest': ACCESS_REFUSED",
        ),
        (
            RabbitMQAccess(virtual_host="streamfn-no-such-vhost"),
            None,
            "refused virtual host 'streamfn-no-such-vhost': it does not exist, or user "
            "'guest' has no permission on it",
        ),
        (None, "streamfn-no-such-queue", "queue 'streamfn-no-such-queue' in virtual host"),
    ],
    ids=["bad-credentials", "missing-vhost", "missing-queue"],
)
async def test_refused_access_disables_the_mapping_with_one_clear_line(
    rabbit: Broker,
    caplog: pytest.LogCaptureFixture,
    access: RabbitMQAccess | None,
    queue: str | None,
    expected: str,
) -> None:
    name = queue or await rabbit.queue()
    source = RabbitMQSource(name, URL, access=access or rabbit.access)
    other_queue = await rabbit.queue()
    other = RabbitMQSource(other_queue, URL, access=rabbit.access)
    app = App()
    app.consume(source, name="doomed")(lambda batch, context: None)
    app.consume(other, name="other")(lambda batch, context: None)
    doomed = app.mappings[0]
    with caplog.at_level(logging.INFO, logger="streamfn"):
        async with app.running():
            await wait_until(lambda: doomed.error is not None)
            await rabbit.publish(other_queue, [b"still here"])
            await wait_until(lambda: other.acked == 1)  # the other mapping goes on
    assert isinstance(doomed.error, SourceError)
    assert not isinstance(doomed.error, SourceUnreachable)
    message = str(doomed.error)
    assert expected in message and "\n" not in message
    assert doomed.state == "Disabled"
    lines = [
        r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("streamfn")
    ]
    assert len(lines) == 1 and message in lines[0].getMessage()


async def test_a_queue_deleted_while_consumed_disables_the_mapping(rabbit: Broker) -> None:
    queue = await rabbit.queue()
    source = RabbitMQSource(queue, URL, access=rabbit.access)
    app = App()
    app.consume(source, name="doomed")(lambda batch, context: None)
    doomed = app.mappings[0]
    async with app.running():
        await wait_until(lambda: doomed.stats.assignments == 1)
        await rabbit.delete(queue)
        await wait_until(lambda: doomed.error is not None)
    assert "the queue was deleted" in str(doomed.error)
    assert doomed.state == "Disabled"


async def test_an_unreachable_broker_is_retried_not_disabled() -> None:
    source = RabbitMQSource("orders", f"amqp://127.0.0.1:{free_port()}", connect_timeout=2)
    app = App()
    app.consume(source, name="waiting")(lambda batch, context: None)
    mapping = app.mappings[0]
    async with app.running():
        await wait_until(lambda: mapping.stats.unreachable is not None)
        assert mapping.state == "Enabled" and mapping.error is None
    assert "cannot connect to RabbitMQ at amqp://127.0.0.1:" in (mapping.stats.unreachable or "")


async def test_tls_to_a_plain_listener_disables_the_mapping_with_one_line() -> None:
    """``amqps://`` builds a TLS context and handshakes; a listener that speaks no TLS (a
    wrong port or scheme) is a configuration error, not an outage to retry."""
    source = RabbitMQSource("orders", "amqps://127.0.0.1:5672", connect_timeout=5)
    app = App()
    app.consume(source, name="tls")(lambda batch, context: None)
    mapping = app.mappings[0]
    async with app.running():
        await wait_until(lambda: mapping.error is not None or mapping.stats.unreachable)
    assert isinstance(mapping.error, SourceError), mapping.stats.unreachable
    assert str(mapping.error).startswith("TLS with RabbitMQ at amqps://127.0.0.1:5672 failed")
