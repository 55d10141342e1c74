"""SQSEventQueue: the event queue of asynchronous invocations on an SQS queue that several
workers share. Durable puts batched into SendMessageBatch, retries that keep their attempts and
delay, dead letters with Lambda's attributes, exactly-once runs across two workers, an App
running on it end to end, malformed messages, and clear errors."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from streamfn import App, ConfigError, Context, SourceError
from streamfn.asyncq import DeadLetter, EventQueue, QueuedEvent
from streamfn.connectors._eventq import encode
from streamfn.connectors.sqs.event_queue import SQSEventQueue

from .. import event_queues
from ..event_queues import fields
from . import counts, create_queue, sqs_client, wait_empty, wait_until

SCALE = 0.001  # async_time_scale: one minute becomes 60 ms
DEADLINE = 15.0


@pytest.fixture
async def sqs(moto_endpoint: str, aws_env: None) -> AsyncIterator[Any]:
    async with sqs_client(moto_endpoint) as client:
        yield client


@pytest.fixture
async def queues(sqs: Any) -> tuple[str, str]:
    """A fresh event queue and dead-letter queue: (url, dead-letter url)."""
    return await create_queue(sqs), await create_queue(sqs)


def event_queue(endpoint: str, queues: tuple[str, str], **options: Any) -> SQSEventQueue:
    url, dead = queues
    options.setdefault("dead_letter_queue", dead)
    return SQSEventQueue(url, endpoint_url=endpoint, wait_time=1, **options)


def event(n: int, *, due_in: float = 0.0, function: str = "f") -> QueuedEvent:
    now = time.time()
    payload = orjson.dumps({"n": n})
    return QueuedEvent(str(uuid.uuid4()), function, None, payload, now, due_at=now + due_in)


async def receive(queue: EventQueue, count: int = 1) -> list[QueuedEvent]:
    return await event_queues.receive(queue, count, DEADLINE)


async def messages(sqs: Any, url: str, count: int) -> list[dict[str, Any]]:
    """The next ``count`` messages of ``url``, with their attributes."""
    found: list[dict[str, Any]] = []
    async with asyncio.timeout(DEADLINE):
        while len(found) < count:
            response = await sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                MessageAttributeNames=["All"],
            )
            found += response.get("Messages", [])
    return found


async def delayed(sqs: Any, url: str) -> int:
    attributes = await sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )
    return int(attributes["Attributes"]["ApproximateNumberOfMessagesDelayed"])


async def test_put_is_stored_then_received_invisible_until_deleted(
    sqs: Any, moto_endpoint: str, queues: tuple[str, str]
) -> None:
    url = queues[0]
    queue: EventQueue = event_queue(moto_endpoint, queues, depth_interval=0.05)
    async with queue:
        sent = event(1)
        await queue.put(sent)
        assert await counts(sqs, url) == (1, 0)  # stored before put returned
        (got,) = await receive(queue)
        assert fields(got) == fields(sent)
        assert await counts(sqs, url) == (0, 1)  # the other workers cannot see it
        assert queue.oldest() == sent.enqueued_at
        await wait_until(lambda: queue.depth() == 1)
        await queue.delete(got)
        assert await counts(sqs, url) == (0, 0)
        assert queue.oldest() is None
        await wait_until(lambda: queue.depth() == 0)


async def test_concurrent_puts_share_send_message_batch_calls(
    sqs: Any, moto_endpoint: str, queues: tuple[str, str]
) -> None:
    calls = 0

    def count(**kwargs: Any) -> None:
        nonlocal calls
        calls += 1

    async with event_queue(moto_endpoint, queues) as queue:
        queue._client.meta.events.register("before-call.sqs.SendMessageBatch", count)
        await asyncio.gather(*(queue.put(event(n)) for n in range(60)))
    assert await counts(sqs, queues[0]) == (60, 0)
    assert calls <= 12  # ten entries a call, whatever arrived together goes together


async def test_retry_persists_attempts_and_due_time_for_any_worker(
    sqs: Any, moto_endpoint: str, queues: tuple[str, str]
) -> None:
    async with event_queue(moto_endpoint, queues) as first:
        await first.put(event(1))
        (got,) = await receive(first)
        got.attempts, got.throttles = 1, 2
        retried_at = time.time()
        await first.retry(got, 1.5)
    async with event_queue(moto_endpoint, queues) as second:
        (again,) = await receive(second)
        assert time.time() >= retried_at + 1.5
        assert (again.request_id, again.attempts, again.throttles) == (got.request_id, 1, 2)
        assert again.due_at == pytest.approx(retried_at + 1.5, abs=0.1)
        await second.delete(again)
    await wait_empty(sqs, queues[0])


async def test_a_delay_over_900_seconds_hides_the_event_until_due(
    sqs: Any, moto_endpoint: str, queues: tuple[str, str]
) -> None:
    url = queues[0]
    async with event_queue(moto_endpoint, queues) as queue:
        await queue.put(event(1))
        (got,) = await receive(queue)
        await queue.retry(got, 3600.0)
        assert await delayed(sqs, url) == 1  # re-sent with SQS's longest delay, 900 s
        await queue.put(event(2, due_in=3600.0))  # visible now, due in an hour
        waiting = asyncio.create_task(queue.receive(10))
        try:
            async with asyncio.timeout(DEADLINE):
                while await counts(sqs, url) != (0, 1):  # received once, hidden until due
                    await asyncio.sleep(0.05)
            assert not waiting.done()
            assert queue.oldest() is None
        finally:
            waiting.cancel()


async def test_dead_letter_keeps_the_event_and_record_with_lambda_attributes(
    sqs: Any, moto_endpoint: str, queues: tuple[str, str]
) -> None:
    url, dead = queues
    record = {
        "requestContext": {"condition": "RetriesExhausted", "approximateInvokeCount": 3},
        "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
        "responsePayload": {"errorMessage": "x" * 2000, "errorType": "ValueError"},
    }
    async with event_queue(moto_endpoint, queues) as queue:
        sent = event(7)
        await queue.put(sent)
        (got,) = await receive(queue)
        got.attempts = 3
        letter = DeadLetter(
            got.request_id,
            got.function,
            None,
            got.payload or b"",
            got.enqueued_at,
            3,
            time.time(),
            "RetriesExhausted",
            record,
        )
        await queue.dead_letter(got, letter)
        assert await counts(sqs, url) == (0, 0)
    (message,) = await messages(sqs, dead, 1)
    body = orjson.loads(message["Body"])
    assert body["requestId"] == sent.request_id
    assert orjson.loads(body["payload"]) == {"n": 7}
    assert (body["attempts"], body["condition"], body["record"]) == (3, "RetriesExhausted", record)
    attributes = message["MessageAttributes"]
    assert attributes["RequestID"]["StringValue"] == sent.request_id
    assert attributes["ErrorCode"]["StringValue"] == "200"
    assert attributes["ErrorMessage"]["StringValue"] == "x" * 1024

    # Moved back to the event queue (SQS's DLQ redrive), a dead letter starts over.
    await sqs.send_message(QueueUrl=url, MessageBody=message["Body"])
    async with event_queue(moto_endpoint, queues) as queue:
        (redriven,) = await receive(queue)
        assert (redriven.request_id, redriven.attempts) == (sent.request_id, 0)
        assert redriven.enqueued_at > sent.enqueued_at
        await queue.delete(redriven)


async def test_closing_gives_unsettled_events_back_at_once(
    sqs: Any, moto_endpoint: str, queues: tuple[str, str]
) -> None:
    async with event_queue(moto_endpoint, queues, visibility_timeout=600) as first:
        await first.put(event(1))
        (got,) = await receive(first)
    async with event_queue(moto_endpoint, queues) as second:
        (again,) = await receive(second)  # not after 600 s: released when the first closed
        assert again.request_id == got.request_id
        await second.delete(again)


async def test_an_app_runs_events_and_dead_letters_failures_after_retries(
    sqs: Any, moto_endpoint: str, queues: tuple[str, str]
) -> None:
    app = App("shared", event_queue=event_queue(moto_endpoint, queues), async_time_scale=SCALE)
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
        (message,) = await messages(sqs, queues[1], 1)
        await wait_until(lambda: ran == [{"n": 1}])
    await wait_empty(sqs, queues[0])
    assert len(attempts) == 3
    assert attempts[1] - attempts[0] >= 60 * SCALE
    assert attempts[2] - attempts[1] >= 120 * SCALE
    body = orjson.loads(message["Body"])
    assert (body["requestId"], body["function"], body["attempts"]) == (request_id, "fails", 3)
    assert body["record"]["requestContext"]["condition"] == "RetriesExhausted"
    assert body["record"]["responsePayload"]["errorMessage"] == "no 2"
    assert message["MessageAttributes"]["ErrorMessage"]["StringValue"] == "no 2"
    assert app.metrics.dead_letters.labels("fails", "RetriesExhausted").value == 1


async def test_two_workers_share_the_queue_and_run_each_event_once(
    sqs: Any, moto_endpoint: str, queues: tuple[str, str]
) -> None:
    ran: list[tuple[str, int]] = []
    both = asyncio.Event()

    def worker(name: str) -> App:
        queue = event_queue(moto_endpoint, queues)
        app = App(name, event_queue=queue, async_time_scale=SCALE, async_max_in_flight=3)

        @app.function()
        async def work(event: Any, context: Context) -> None:
            ran.append((name, event["n"]))
            if {worker for worker, _ in ran} == {"a", "b"}:
                both.set()
            async with asyncio.timeout(DEADLINE):  # neither may take everything alone
                await both.wait()

        return app

    a, b = worker("a"), worker("b")
    async with a.running(), b.running():
        await asyncio.gather(
            *(a.invoker.submit("work", None, orjson.dumps({"n": n}), str(n)) for n in range(40))
        )
        await wait_until(lambda: len(ran) >= 40, DEADLINE)
        await wait_empty(sqs, queues[0])
    assert sorted(n for _, n in ran) == list(range(40))
    assert {name for name, _ in ran} == {"a", "b"}


async def test_malformed_messages_are_dead_lettered_once_and_the_rest_run(
    sqs: Any, moto_endpoint: str, queues: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    url, dead = queues
    app = App("shared", event_queue=event_queue(moto_endpoint, queues), async_time_scale=SCALE)
    ran: list[Any] = []

    @app.function()
    async def f(event: Any, context: Context) -> None:
        ran.append(event)

    bodies = ["not json", '{"requestId": 1}', encode(event(1)).decode(), "[]"]
    for body in bodies:
        await sqs.send_message(QueueUrl=url, MessageBody=body)
    with caplog.at_level(logging.ERROR, logger="streamfn.async.sqs"):
        async with app.running():
            buried = await messages(sqs, dead, 3)
            await wait_until(lambda: ran == [{"n": 1}])
        await wait_empty(sqs, url)
    assert sorted(m["Body"] for m in buried) == sorted([bodies[0], bodies[1], bodies[3]])
    reasons = sorted(m["MessageAttributes"]["ErrorMessage"]["StringValue"] for m in buried)
    assert reasons[:2] == [
        "malformed event: a JSON list, not an object",
        "malformed event: field 'requestId' is 1",
    ]
    assert reasons[2].startswith("malformed event: not JSON (")
    logged = [r for r in caplog.records if r.name == "streamfn.async.sqs"]
    assert len(logged) == 3
    assert all("moved to the dead-letter queue" in r.getMessage() for r in logged)


async def test_the_redrive_policy_target_is_the_default_dead_letter_queue(
    sqs: Any, moto_endpoint: str
) -> None:
    dead = await create_queue(sqs)
    arn = (await sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"]))[
        "Attributes"
    ]["QueueArn"]
    policy = orjson.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 10}).decode()
    url = await create_queue(sqs, RedrivePolicy=policy)
    async with SQSEventQueue(url, endpoint_url=moto_endpoint) as queue:
        assert queue.dead_letter_url == dead


async def test_a_queue_without_a_dead_letter_queue_is_refused(sqs: Any, moto_endpoint: str) -> None:
    url = await create_queue(sqs)
    name = url.rsplit("/", 1)[-1]
    with pytest.raises(ConfigError, match=f"SQS event queue '{name}' has no dead-letter queue"):
        async with SQSEventQueue(url, endpoint_url=moto_endpoint):
            pass


async def test_a_missing_queue_is_a_clear_error(sqs: Any, moto_endpoint: str) -> None:
    app = App(event_queue=SQSEventQueue("no-such-events", endpoint_url=moto_endpoint))
    with pytest.raises(SourceError, match="SQS queue 'no-such-events' does not exist"):
        async with app.running():
            pass
    url = await create_queue(sqs)
    queue = SQSEventQueue(url, dead_letter_queue="no-such-dlq", endpoint_url=moto_endpoint)
    with pytest.raises(SourceError, match="SQS queue 'no-such-dlq' does not exist"):
        async with queue:
            pass


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"queue": "events.fifo"}, "queue='events.fifo' is invalid: must be a standard queue"),
        ({"dead_letter_queue": "d.fifo"}, "dead_letter_queue='d.fifo' is invalid"),
        ({"visibility_timeout": 0}, "visibility_timeout=0 is invalid"),
        ({"wait_time": 21}, "wait_time=21 is invalid: must be an integer 1-20"),
        ({"max_held": 0}, "max_held=0 is invalid"),
        ({"depth_interval": 0}, "depth_interval=0 is invalid"),
        ({"queue": "bad name"}, "queue='bad name' is invalid"),
    ],
)
def test_settings_are_validated(options: dict[str, Any], message: str) -> None:
    queue = options.pop("queue", "events")
    with pytest.raises(ConfigError, match=message):
        SQSEventQueue(queue, **options)
