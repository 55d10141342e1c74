"""ActiveMQSource against a real ActiveMQ 5.x broker: batching, whole-batch redelivery, Lambda's
``aws:mq`` event, connection loss, competing consumers, the dead-letter queue and the fatal
errors that disable a mapping."""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import pytest

from streamfn import App, Batch, Context
from streamfn.connectors.activemq import ActiveMQSource
from streamfn.connectors.activemq.stomp import StompConnection
from streamfn.errors import ConfigError, SourceError
from streamfn.testing import wait_until
from streamfn.testing.activemq import ActiveMQBroker

from . import TcpProxy, queued, receive, send, unique_queue

MQ_MESSAGE_KEYS = [
    "messageID",
    "messageType",
    "deliveryMode",
    "replyTo",
    "type",
    "expiration",
    "priority",
    "correlationId",
    "redelivered",
    "destination",
    "data",
    "timestamp",
    "brokerInTime",
    "brokerOutTime",
]


def source(broker: ActiveMQBroker, queue: str, **options: Any) -> ActiveMQSource:
    user, password = broker.credentials(options.pop("user", "streamfn"))
    options.setdefault("redelivery_delay", 0.01)
    return ActiveMQSource(
        queue, port=options.pop("port", broker.port), username=user, password=password, **options
    )


async def disabled_by(app: App, timeout: float = 15.0) -> SourceError:
    """Run ``app`` until its first mapping is disabled; the error that disabled it."""
    mapping = app.mappings[0]
    async with app.running():
        await wait_until(lambda: mapping.error is not None, timeout)
    assert mapping.error is not None
    return mapping.error


async def test_batches_are_cut_at_batch_size_and_when_the_window_ends(
    activemq_broker: ActiveMQBroker,
) -> None:
    queue = unique_queue()
    await send(activemq_broker, queue, [str(n).encode() for n in range(12)])
    sizes: list[int] = []
    app = App()

    @app.consume(source(activemq_broker, queue), batch_size=5, maximum_batching_window=0.2)
    async def handler(batch: Batch, context: Context) -> None:
        sizes.append(len(batch))

    async with app.running():
        await wait_until(lambda: sum(sizes) == 12)
    # The broker pushes at most one batch (prefetch = batch_size): two full batches, then the
    # window releases the last two.
    assert sizes == [5, 5, 2]
    assert await queued(activemq_broker, queue) == 0


async def test_a_failed_batch_comes_back_whole_and_redelivered(
    activemq_broker: ActiveMQBroker,
) -> None:
    queue = unique_queue()
    await send(activemq_broker, queue, [b"a", b"b", b"c"])
    calls: list[list[tuple[str, bool]]] = []
    src = source(activemq_broker, queue)
    app = App()

    @app.consume(src, batch_size=10, maximum_batching_window=0.2, event_format="lambda")
    async def handler(event: dict[str, Any], context: Context) -> None:
        calls.append([(m["messageID"], m["redelivered"]) for m in event["messages"]])
        if len(calls) == 1:
            raise RuntimeError("first try fails")

    async with app.running():
        await wait_until(lambda: src.acknowledged == 3)
    first, second = calls
    assert [redelivered for _, redelivered in first] == [False] * 3
    assert [redelivered for _, redelivered in second] == [True] * 3
    assert [mid for mid, _ in second] == [mid for mid, _ in first]
    assert src.returned == 3 and src.dead_lettered == 0
    assert await queued(activemq_broker, queue) == 0


async def test_messages_held_for_the_next_batch_do_not_go_back_with_a_failed_one(
    activemq_broker: ActiveMQBroker,
) -> None:
    """A batch cut by its window leaves room in the prefetch: what arrives meanwhile waits in
    the engine for the next batch. When the running batch fails, those messages must stay
    this consumer's (run once, acknowledged), or the broker would hand them to another
    consumer while this one runs them too."""
    queue = unique_queue()
    await send(activemq_broker, queue, [b"m1"])
    calls: list[list[tuple[bytes, bool]]] = []
    release = asyncio.Event()
    src = source(activemq_broker, queue)
    app = App()

    @app.consume(src, batch_size=3, maximum_batching_window=0.05, event_format="lambda")
    async def handler(event: dict[str, Any], context: Context) -> None:
        calls.append([(base64.b64decode(m["data"]), m["redelivered"]) for m in event["messages"]])
        if len(calls) == 1:
            await release.wait()
            raise RuntimeError("the first batch fails")

    async with app.running():
        await wait_until(lambda: len(calls) == 1)
        await send(activemq_broker, queue, [b"m2", b"m3"])
        await wait_until(lambda: src.received == 3)  # m2 and m3 wait for the next batch
        release.set()
        await wait_until(lambda: src.acknowledged == 3)
    assert calls == [
        [(b"m1", False)],
        [(b"m2", False), (b"m3", False)],
        [(b"m1", True)],
    ]


async def test_the_lambda_event_is_the_aws_mq_event(activemq_broker: ActiveMQBroker) -> None:
    queue = unique_queue()
    expires = 4_102_444_800_000  # 2100-01-01, in ms
    await send(
        activemq_broker,
        queue,
        [b'{"order": 1}'],
        {
            "correlation-id": "order-1",
            "reply-to": "/queue/replies",
            "type": "OrderCreated",
            "priority": "7",
            "expires": str(expires),
            "persistent": "true",
        },
    )
    await send(activemq_broker, queue, [b"\x00\x01\xfe\xff"], {"content-length": ""})
    events: list[dict[str, Any]] = []
    src = source(
        activemq_broker, queue, broker_arn="arn:aws:mq:us-east-2:111122223333:broker:t:b-1"
    )
    app = App()

    @app.consume(src, batch_size=2, maximum_batching_window=1, event_format="lambda")
    async def handler(event: dict[str, Any], context: Context) -> None:
        events.append(event)

    async with app.running():
        await wait_until(lambda: src.acknowledged == 2)
    (event,) = events
    assert list(event) == ["eventSource", "eventSourceArn", "messages"]
    assert event["eventSource"] == "aws:mq"
    assert event["eventSourceArn"] == "arn:aws:mq:us-east-2:111122223333:broker:t:b-1"
    text, data = event["messages"]
    for message in (text, data):
        assert list(message) == MQ_MESSAGE_KEYS
        assert message["messageID"].startswith("ID:")
        assert message["destination"] == {"physicalname": queue}
        assert message["redelivered"] is False
        assert isinstance(message["timestamp"], int) and message["timestamp"] > 0
        assert message["brokerInTime"] == message["timestamp"]
        assert message["brokerOutTime"] >= message["brokerInTime"]
    # timeStampingBrokerPlugin moves the expiration with the timestamp it re-stamps (the time
    # to live is kept), by the milliseconds between the two stamps.
    assert expires <= text["expiration"] <= expires + 60_000
    assert {k: text[k] for k in MQ_MESSAGE_KEYS[1:9]} == {
        "messageType": "jms/text-message",
        "deliveryMode": 2,
        "replyTo": "queue://replies",
        "type": "OrderCreated",
        "expiration": text["expiration"],
        "priority": 7,
        "correlationId": "order-1",
        "redelivered": False,
    }
    assert base64.b64decode(text["data"]) == b'{"order": 1}'
    assert {k: data[k] for k in MQ_MESSAGE_KEYS[1:9]} == {
        "messageType": "jms/bytes-message",
        "deliveryMode": 1,
        "replyTo": None,
        "type": None,
        "expiration": 0,
        "priority": 4,
        "correlationId": None,
        "redelivered": False,
    }
    assert base64.b64decode(data["data"]) == b"\x00\x01\xfe\xff"


async def test_a_large_text_message_arrives_whole(activemq_broker: ActiveMQBroker) -> None:
    queue = unique_queue()
    body = b"x" * 300_000 + b"\xc3\xa9"  # a text frame has no content-length: read to its NUL
    await send(activemq_broker, queue, [body])
    seen: list[bytes] = []
    app = App()

    @app.consume(source(activemq_broker, queue), maximum_batching_window=0)
    async def handler(batch: Batch, context: Context) -> None:
        seen.extend(r.value for r in batch)

    async with app.running():
        await wait_until(lambda: seen == [body])


async def test_filter_criteria_match_on_data_and_the_rest_is_acknowledged(
    activemq_broker: ActiveMQBroker,
) -> None:
    queue = unique_queue()
    await send(activemq_broker, queue, [b'{"kind": "keep"}', b'{"kind": "drop"}', b"not json"])
    seen: list[bytes] = []
    src = source(activemq_broker, queue)
    app = App()

    @app.consume(
        src,
        batch_size=10,
        maximum_batching_window=0.2,
        filter_criteria={"Filters": [{"Pattern": '{"data": {"kind": ["keep"]}}'}]},
    )
    async def handler(batch: Batch, context: Context) -> None:
        seen.extend(r.value for r in batch)

    async with app.running():
        await wait_until(lambda: src.acknowledged == 3)
    assert seen == [b'{"kind": "keep"}']
    assert await queued(activemq_broker, queue) == 0


async def test_a_connection_cut_mid_batch_loses_no_message(
    activemq_broker: ActiveMQBroker,
) -> None:
    queue = unique_queue()
    bodies = [str(n).encode() for n in range(20)]
    await send(activemq_broker, queue, bodies)
    done: set[bytes] = set()
    started = asyncio.Event()
    redelivered: list[bool] = []
    async with TcpProxy(activemq_broker.port) as proxy:
        src = source(activemq_broker, queue, port=proxy.port)
        app = App()

        @app.consume(src, batch_size=5, maximum_batching_window=0.2, event_format="lambda")
        async def handler(event: dict[str, Any], context: Context) -> None:
            messages = event["messages"]
            redelivered.extend(m["redelivered"] for m in messages)
            if proxy.connections == 1 and done:
                started.set()
                await asyncio.Event().wait()  # held until the connection is cut
            done.update(base64.b64decode(m["data"]) for m in messages)

        async with app.running():
            await asyncio.wait_for(started.wait(), 15)
            proxy.sever()
            await wait_until(lambda: src.acknowledged == 20, timeout=20)
        assert proxy.connections >= 2
    assert done == set(bodies)
    assert True in redelivered  # the cut batch came again
    assert await queued(activemq_broker, queue) == 0


async def test_two_consumers_never_handle_one_message_at_once(
    activemq_broker: ActiveMQBroker,
) -> None:
    queue = unique_queue()
    bodies = [str(n).encode() for n in range(40)]
    await send(activemq_broker, queue, bodies)
    running: set[bytes] = set()
    overlaps: list[bytes] = []
    handled: dict[str, list[bytes]] = {"a": [], "b": []}
    apps = []
    for name, pollers in (("a", 2), ("b", 1)):
        app = App(name)
        src = source(activemq_broker, queue, pollers=pollers)

        @app.consume(src, batch_size=4, maximum_batching_window=0.05)
        async def handler(batch: Batch, context: Context, name: str = name) -> None:
            values = [r.value for r in batch]
            overlaps.extend(v for v in values if v in running)
            running.update(values)
            await asyncio.sleep(0.01)  # let the other consumer run meanwhile
            running.difference_update(values)
            handled[name].extend(values)

        apps.append(app)

    async with apps[0].running(), apps[1].running():
        await wait_until(lambda: len(handled["a"]) + len(handled["b"]) == 40)
    assert overlaps == []
    assert sorted(handled["a"] + handled["b"]) == sorted(bodies)
    assert handled["a"] and handled["b"]  # the broker shared the queue between them
    assert await queued(activemq_broker, queue) == 0


async def test_a_poison_message_goes_to_the_dead_letter_queue_after_its_redeliveries(
    activemq_broker: ActiveMQBroker, caplog: pytest.LogCaptureFixture
) -> None:
    queue = unique_queue()
    await send(activemq_broker, queue, [b"poison"])
    deliveries: list[bool] = []
    src = source(activemq_broker, queue, maximum_redeliveries=2)
    app = App()

    @app.consume(src, batch_size=1, maximum_batching_window=0, event_format="lambda")
    async def handler(event: dict[str, Any], context: Context) -> None:
        deliveries.append(event["messages"][0]["redelivered"])
        raise ValueError("cannot parse")

    with caplog.at_level(logging.WARNING, logger="streamfn.activemq"):
        async with app.running():
            await wait_until(lambda: src.dead_lettered == 1)
    # One delivery and two redeliveries, then the broker's per-queue DLQ (test broker config).
    assert deliveries == [False, True, True]
    (frame,) = await receive(activemq_broker, f"DLQ.{queue}", 1)
    assert frame.body == b"poison"
    assert frame.headers["original-destination"] == f"/queue/{queue}"
    assert await queued(activemq_broker, queue) == 0
    assert [r.getMessage() for r in caplog.records if "dead-letter" in r.getMessage()] == [
        "messages failed on their last allowed delivery (maximum_redeliveries); rejected to "
        "the broker's dead-letter queue"
    ]


async def test_refused_credentials_disable_the_mapping_with_one_clear_line(
    activemq_broker: ActiveMQBroker, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()
    src = ActiveMQSource(
        unique_queue(), port=activemq_broker.port, username="streamfn", password="wrong"
    )

    @app.consume(src)
    async def handler(batch: Batch, context: Context) -> None:
        raise AssertionError("never invoked")

    with caplog.at_level(logging.ERROR):
        error = await disabled_by(app)
    assert type(error) is SourceError
    assert "refused the login of user 'streamfn'" in str(error)
    assert "User name [streamfn] or password is invalid." in str(error)
    lines = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(lines) == 1 and "the mapping is disabled" in lines[0].getMessage()
    assert app.mappings[0].state == "Disabled"


async def test_a_queue_the_user_may_not_read_disables_the_mapping(
    activemq_broker: ActiveMQBroker,
) -> None:
    app = App()

    @app.consume(source(activemq_broker, unique_queue(), user="outsider"))
    async def handler(batch: Batch, context: Context) -> None:
        raise AssertionError("never invoked")

    error = await disabled_by(app)
    assert type(error) is SourceError
    assert "refused to let user 'outsider' read queue" in str(error)
    assert "not authorized to read" in str(error)


async def test_an_unreachable_broker_is_retried_not_disabled(
    activemq_broker: ActiveMQBroker,
) -> None:
    from streamfn.testing.servers import free_port

    app = App()

    @app.consume(ActiveMQSource(unique_queue(), port=free_port(), connect_timeout=1))
    async def handler(batch: Batch, context: Context) -> None:
        raise AssertionError("never invoked")

    mapping = app.mappings[0]
    async with app.running():
        await wait_until(lambda: mapping.stats.unreachable is not None)
        assert mapping.error is None
        assert mapping.state == "Enabled"
        assert "cannot connect to ActiveMQ" in (mapping.state_reason or "")


async def test_report_batch_item_failures_is_refused_as_on_lambda(
    activemq_broker: ActiveMQBroker,
) -> None:
    app = App()

    @app.consume(
        source(activemq_broker, unique_queue()),
        function_response_types=["ReportBatchItemFailures"],
    )
    async def handler(batch: Batch, context: Context) -> None:
        raise AssertionError("never invoked")

    with pytest.raises(BaseExceptionGroup) as info:
        async with asyncio.timeout(15), app.running():
            await asyncio.Event().wait()  # ended by the mapping's refusal to start
    assert info.group_contains(ConfigError, match="no partial batch response")


def test_source_settings_are_checked_at_construction() -> None:
    for kwargs, field in (
        ({"queue": "a,b"}, "queue"),
        ({"queue": "orders.>"}, "queue"),
        ({"queue": "q", "pollers": 6}, "pollers"),
        ({"queue": "q", "maximum_redeliveries": -1}, "maximum_redeliveries"),
        ({"queue": "q", "username": "u"}, "username and password"),
    ):
        with pytest.raises(ConfigError, match=field):
            ActiveMQSource(**kwargs)
    assert ActiveMQSource("/queue/orders").queue == "orders"


async def test_heart_beats_keep_an_idle_connection_open(activemq_broker: ActiveMQBroker) -> None:
    """ActiveMQ's beats may come almost two intervals apart, and each restarts the wait."""
    login, password = activemq_broker.credentials()
    async with await StompConnection.open(
        activemq_broker.host, activemq_broker.port, login, password, heartbeat=(100, 100)
    ) as conn:
        with pytest.raises(TimeoutError):  # still open after 15 of the broker's intervals
            await wait_until(lambda: conn.closed.is_set(), timeout=1.5)
        await conn.send(f"/queue/{unique_queue()}", b"still connected")
