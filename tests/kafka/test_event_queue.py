"""KafkaEventQueue: the event queue of asynchronous invocations on a Kafka topic that a consumer
group shares. Acknowledged puts, commits that never pass an unsettled event, retries
re-produced with their attempts and due time, the dead-letter topic, re-delivery after a crash,
exactly-once runs across two workers, an App running on it end to end, malformed messages, and
clear errors."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import orjson
import pytest

from streamfn import App, ConfigError, Context, SourceError
from streamfn.asyncq import DeadLetter, EventQueue, QueuedEvent
from streamfn.connectors._eventq import encode
from streamfn.connectors.kafka.event_queue import KafkaEventQueue

from .. import event_queues
from ..event_queues import fields
from .conftest import Kafka, eventually

SCALE = 0.001  # async_time_scale: one minute becomes 60 ms
DEADLINE = 20.0
#: tansu lets a group settle in about a session timeout and does not act on LeaveGroup, so a
#: short one keeps joins (and a join after a member left) to a second or a few.
FAST_GROUP = {"heartbeat_interval_ms": 250, "session_timeout_ms": 2000}


def event_queue(kafka: Kafka, topic: str, dead: str, group: str, **options: Any) -> KafkaEventQueue:
    return KafkaEventQueue(
        topic,
        bootstrap_servers=kafka.address,
        group_id=group,
        dead_letter_topic=dead,
        consumer_options=FAST_GROUP,
        **options,
    )


async def topics(kafka: Kafka, partitions: int = 1) -> tuple[str, str, str]:
    """A fresh event topic, its dead-letter topic (one partition) and a group id."""
    topic = await kafka.create_topic(partitions, prefix="events")
    dead = await kafka.create_topic(1, prefix="dlq")
    return topic, dead, f"g-{uuid.uuid4().hex[:12]}"


def event(n: int) -> QueuedEvent:
    now = time.time()
    return QueuedEvent(str(uuid.uuid4()), "f", None, orjson.dumps({"n": n}), now, due_at=now)


async def receive(queue: EventQueue, count: int = 1) -> list[QueuedEvent]:
    return await event_queues.receive(queue, count, DEADLINE)


async def committed(kafka: Kafka, group: str, topic: str, offset: int) -> None:
    """Wait until ``group`` has committed ``offset`` for partition 0 of ``topic``."""
    async with asyncio.timeout(DEADLINE):
        while await kafka.committed(group, topic) != [offset]:
            await asyncio.sleep(0.05)


async def test_put_is_acknowledged_and_committed_only_once_settled(kafka: Kafka) -> None:
    topic, dead, group = await topics(kafka)
    queue: EventQueue = event_queue(kafka, topic, dead, group)
    async with queue:
        sent = [event(n) for n in range(3)]
        for e in sent:
            await queue.put(e)
        got = await receive(queue, 3)
        assert [fields(e) for e in got] == [fields(e) for e in sent]
        assert queue.oldest() == sent[0].enqueued_at
        await queue.delete(got[1])
        await queue.delete(got[2])
        await committed(kafka, group, topic, 0)  # never past the first, still running
        assert queue.depth() == 1
        await queue.delete(got[0])
        await committed(kafka, group, topic, 3)
        assert (queue.depth(), queue.oldest()) == (0, None)


async def test_a_crashed_worker_s_events_are_delivered_again(kafka: Kafka) -> None:
    topic, dead, group = await topics(kafka)
    async with event_queue(kafka, topic, dead, group) as first:
        await first.put(event(1))
        (got,) = await receive(first)  # and never settled
    async with event_queue(kafka, topic, dead, group) as second:
        (again,) = await receive(second)
        assert fields(again) == fields(got)
        await second.delete(again)
        await committed(kafka, group, topic, 1)


async def test_retry_reproduces_the_event_with_its_attempts_and_due_time(kafka: Kafka) -> None:
    topic, dead, group = await topics(kafka)
    async with event_queue(kafka, topic, dead, group) as queue:
        await queue.put(event(1))
        (got,) = await receive(queue)
        got.attempts, got.throttles = 1, 2
        retried_at = time.time()
        await queue.retry(got, 0.5)
        await committed(kafka, group, topic, 1)  # the first copy is settled
        (again,) = await receive(queue)
        assert time.time() >= retried_at + 0.5
        assert (again.request_id, again.attempts, again.throttles) == (got.request_id, 1, 2)
        assert again.due_at == pytest.approx(retried_at + 0.5, abs=0.1)
        await queue.delete(again)
        await committed(kafka, group, topic, 2)
    _, copy = await kafka.read(topic, 2)
    assert orjson.loads(copy.value)["attempts"] == 1
    assert copy.key == got.request_id.encode()


async def test_dead_letters_go_to_the_dead_letter_topic_with_lambda_headers(
    kafka: Kafka,
) -> None:
    topic, dead, group = await topics(kafka)
    record = {
        "requestContext": {"condition": "RetriesExhausted", "approximateInvokeCount": 3},
        "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
        "responsePayload": {"errorMessage": "boom", "errorType": "ValueError"},
    }
    async with event_queue(kafka, topic, dead, group) as queue:
        sent = event(7)
        await queue.put(sent)
        (got,) = await receive(queue)
        got.attempts = 3
        letter = DeadLetter(
            got.request_id,
            "f",
            None,
            got.payload or b"",
            got.enqueued_at,
            3,
            time.time(),
            "RetriesExhausted",
            record,
        )
        await queue.dead_letter(got, letter)
        await committed(kafka, group, topic, 1)
    (message,) = await kafka.read(dead, 1)
    body = orjson.loads(message.value)
    assert (body["requestId"], body["attempts"]) == (sent.request_id, 3)
    assert orjson.loads(body["payload"]) == {"n": 7}
    assert (body["condition"], body["record"]) == ("RetriesExhausted", record)
    assert message.key == sent.request_id.encode()
    assert dict(message.headers) == {
        "RequestID": sent.request_id.encode(),
        "ErrorCode": b"200",
        "ErrorMessage": b"boom",
    }


async def test_an_app_runs_events_and_dead_letters_failures_after_retries(kafka: Kafka) -> None:
    topic, dead, group = await topics(kafka)
    queue = event_queue(kafka, topic, dead, group)
    app = App("shared", event_queue=queue, async_time_scale=SCALE)
    ran: list[Any] = []
    attempts: list[float] = []

    @app.function()
    async def works(event: Any, context: Context) -> None:
        ran.append(event)

    @app.function()
    async def fails(event: Any, context: Context) -> None:
        attempts.append(time.monotonic())
        raise ValueError(f"no {event['n']}")

    async with app.running():
        await app.invoke_async("works", {"n": 1})
        request_id = await app.invoke_async("fails", {"n": 2})
        (message,) = await kafka.read(dead, 1)
        await eventually(lambda: ran == [{"n": 1}], DEADLINE)
        await committed(kafka, group, topic, 4)  # two events and two retries, all settled
    assert len(attempts) == 3
    assert attempts[1] - attempts[0] >= 60 * SCALE
    assert attempts[2] - attempts[1] >= 120 * SCALE
    body = orjson.loads(message.value)
    assert (body["requestId"], body["function"], body["attempts"]) == (request_id, "fails", 3)
    assert body["record"]["requestContext"]["condition"] == "RetriesExhausted"
    assert body["record"]["responsePayload"]["errorMessage"] == "no 2"


async def test_two_workers_share_the_partitions_and_run_each_event_once(kafka: Kafka) -> None:
    topic, dead, group = await topics(kafka, partitions=4)
    ran: list[tuple[str, int]] = []
    both = asyncio.Event()

    def worker(name: str) -> tuple[App, KafkaEventQueue]:
        queue = event_queue(kafka, topic, dead, group)
        app = App(name, event_queue=queue, async_time_scale=SCALE)

        @app.function()
        async def work(event: Any, context: Context) -> None:
            ran.append((name, event["n"]))
            if {worker for worker, _ in ran} == {"a", "b"}:
                both.set()
            async with asyncio.timeout(DEADLINE):  # neither may take everything alone
                await both.wait()

        return app, queue

    (a, qa), (b, qb) = worker("a"), worker("b")
    async with a.running(), b.running():
        await eventually(lambda: len(qa.partitions) == len(qb.partitions) == 2, DEADLINE)
        await asyncio.gather(
            *(a.invoker.submit("work", None, orjson.dumps({"n": n}), str(n)) for n in range(40))
        )
        await eventually(lambda: len(ran) >= 40 and qa.depth() == qb.depth() == 0, DEADLINE)
    assert sorted(n for _, n in ran) == list(range(40))
    assert {name for name, _ in ran} == {"a", "b"}
    offsets = await kafka.committed(group, topic, partitions=4)
    assert sum(offset or 0 for offset in offsets) == 40  # every event settled and committed


async def test_malformed_messages_are_dead_lettered_once_and_the_rest_run(
    kafka: Kafka, caplog: pytest.LogCaptureFixture
) -> None:
    topic, dead, group = await topics(kafka)
    app = App("shared", event_queue=event_queue(kafka, topic, dead, group))
    ran: list[Any] = []

    @app.function()
    async def f(event: Any, context: Context) -> None:
        ran.append(event)

    await kafka.produce(topic, [b"not json", encode(event(1)), b'{"requestId": "x"}'])
    with caplog.at_level(logging.ERROR, logger="streamfn.async.kafka"):
        async with app.running():
            buried = await kafka.read(dead, 2)
            await eventually(lambda: ran == [{"n": 1}], DEADLINE)
            await committed(kafka, group, topic, 3)
    assert [m.value for m in buried] == [b"not json", b'{"requestId": "x"}']
    assert list(buried[1].headers) == [("ErrorMessage", b"malformed event: no 'function' field")]
    logged = [r for r in caplog.records if r.name == "streamfn.async.kafka"]
    assert len(logged) == 2
    assert all("copied to the dead-letter topic" in r.getMessage() for r in logged)


async def test_a_dead_broker_is_a_clear_error(unused_address: str) -> None:
    queue = KafkaEventQueue("events", bootstrap_servers=unused_address, connect_timeout=1.0)
    app = App(event_queue=queue)
    message = f"cannot connect to Kafka at {unused_address} for event queue topic 'events'"
    with pytest.raises(SourceError, match=message):
        async with app.running():
            pass


def test_defaults_name_the_group_and_dead_letter_topic_after_the_topic() -> None:
    queue = KafkaEventQueue("orders", bootstrap_servers="127.0.0.1:9092")
    assert (queue.group_id, queue.dead_letter_topic) == ("streamfn.orders", "orders.dlq")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"topic": "bad topic"}, "topic='bad topic' is invalid"),
        ({"dead_letter_topic": "events"}, "dead_letter_topic='events' is invalid"),
        ({"group_id": "bad|group"}, "group_id='bad|group' is invalid"),
        ({"drain_timeout": 0}, "drain_timeout=0 is invalid"),
        ({"max_held": 0}, "max_held=0 is invalid"),
        ({"consumer_options": {"group_id": "x"}}, r"consumer_options\['group_id'\] is not allowed"),
        ({"producer_options": {"acks": 1}}, r"producer_options\['acks'\] is not allowed"),
        ({"producer_options": {"nope": 1}}, "is not an option of AIOKafkaProducer"),
    ],
)
def test_settings_are_validated(options: dict[str, Any], message: str) -> None:
    topic = options.pop("topic", "events")
    with pytest.raises(ConfigError, match=message):
        KafkaEventQueue(topic, bootstrap_servers="127.0.0.1:9092", **options)
