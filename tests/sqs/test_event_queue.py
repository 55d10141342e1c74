"""SQSEventQueue: the event queue of asynchronous invocations on an SQS queue that several
workers share. The event-queue contract (streamfn.testing.contracts) on moto, its harness
checking Lambda's message attributes on every dead letter; then what is SQS's own: puts stored
before they return and batched into SendMessageBatch, SQS's longest delay, a redriven dead
letter starting over, the redrive policy, and clear errors."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import pytest

from streamfn import App, ConfigError, SourceError
from streamfn.asyncq import DeadLetter, EventQueue, QueuedEvent
from streamfn.connectors._eventq import encode_letter
from streamfn.connectors.sqs.event_queue import SQSEventQueue
from streamfn.testing.contracts import SharedEventQueueContract, receive_events

from ..event_queues import lambda_attributes, letter_from_json
from . import counts, create_queue, sqs_client

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
    return await receive_events(queue, count, DEADLINE)


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


class SQSQueues:
    """One test's event queue and dead-letter queue on moto. The queue's visibility timeout
    (60 s) outlasts the contract's waits: an unsettled event comes back to the next queue only
    because closing releases it."""

    def __init__(self, sqs: Any, endpoint: str, queues: tuple[str, str]) -> None:
        self.sqs = sqs
        self.endpoint = endpoint
        self.url, self.dead = self.queues = queues

    def queue(self) -> SQSEventQueue:
        return event_queue(self.endpoint, self.queues, depth_interval=0.05)

    async def dead_letters(self, count: int) -> list[DeadLetter]:
        """The letters, each with Lambda's message attributes."""
        letters = []
        for message in await messages(self.sqs, self.dead, count):
            letter = letter_from_json(message["Body"].encode())
            attributes = message["MessageAttributes"]
            assert {name: a["StringValue"] for name, a in attributes.items()} == (
                lambda_attributes(letter)
            )
            letters.append(letter)
        return letters

    async def raw_dead_letters(self, count: int) -> list[tuple[bytes, str]]:
        return [
            (m["Body"].encode(), m["MessageAttributes"]["ErrorMessage"]["StringValue"])
            for m in await messages(self.sqs, self.dead, count)
        ]

    async def send_raw(self, bodies: Sequence[bytes]) -> None:
        for body in bodies:
            await self.sqs.send_message(QueueUrl=self.url, MessageBody=body.decode())

    async def wait_until_shared(self, queues: Sequence[EventQueue]) -> None:
        """SQS hands events to whichever worker asks."""


class TestSQSEventQueue(SharedEventQueueContract):
    @pytest.fixture
    def event_queue_harness(
        self, sqs: Any, moto_endpoint: str, queues: tuple[str, str]
    ) -> SQSQueues:
        return SQSQueues(sqs, moto_endpoint, queues)


async def test_put_is_stored_before_it_returns_and_hidden_from_others_once_received(
    sqs: Any, moto_endpoint: str, queues: tuple[str, str]
) -> None:
    url = queues[0]
    async with event_queue(moto_endpoint, queues) as queue:
        await queue.put(event(1))
        assert await counts(sqs, url) == (1, 0)  # stored before put returned
        (got,) = await receive(queue)
        assert await counts(sqs, url) == (0, 1)  # the other workers cannot see it
        await queue.delete(got)
        assert await counts(sqs, url) == (0, 0)


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


async def test_a_dead_letter_redriven_to_the_queue_starts_over(
    sqs: Any, moto_endpoint: str, queues: tuple[str, str]
) -> None:
    sent = event(7)
    sent.attempts = 3
    letter = DeadLetter(
        sent.request_id, "f", None, b"{}", sent.enqueued_at, 3, time.time(), "RetriesExhausted", {}
    )
    # What SQS's dead-letter redrive moves back: the body of a dead-letter message.
    await sqs.send_message(QueueUrl=queues[0], MessageBody=encode_letter(sent, letter).decode())
    async with event_queue(moto_endpoint, queues) as queue:
        (redriven,) = await receive(queue)
        assert (redriven.request_id, redriven.attempts) == (sent.request_id, 0)
        assert redriven.enqueued_at > sent.enqueued_at
        assert redriven.payload == sent.payload
        await queue.delete(redriven)


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
