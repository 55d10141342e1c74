"""KafkaEventQueue: the event queue of asynchronous invocations on a Kafka topic that a consumer
group shares. The event-queue contract (streamfn.testing.contracts) on tansu, its harness
checking the key and Lambda's headers of every dead letter; then what is Kafka's own: commits
that never pass an unsettled event, retries re-produced under the event's key, and clear
errors."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from streamfn import App, ConfigError, SourceError
from streamfn.asyncq import DeadLetter, EventQueue, QueuedEvent
from streamfn.connectors.kafka.event_queue import KafkaEventQueue
from streamfn.testing import wait_until
from streamfn.testing.contracts import SharedEventQueueContract, receive_events

from ..event_queues import lambda_attributes, letter_from_json
from .conftest import FAST_GROUP, Kafka

DEADLINE = 20.0
#: Partitions of an event topic: two, so that two workers each own one.
PARTITIONS = 2


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


async def committed(kafka: Kafka, group: str, topic: str, offset: int) -> None:
    """Wait until ``group`` has committed ``offset`` for partition 0 of ``topic``."""
    async with asyncio.timeout(DEADLINE):
        while await kafka.committed(group, topic) != [offset]:
            await asyncio.sleep(0.05)


class KafkaQueues:
    """One test's event topic, dead-letter topic and consumer group on tansu."""

    def __init__(self, kafka: Kafka, topic: str, dead: str, group: str) -> None:
        self.kafka = kafka
        self.topic, self.dead, self.group = topic, dead, group

    def queue(self) -> KafkaEventQueue:
        return event_queue(self.kafka, self.topic, self.dead, self.group)

    async def dead_letters(self, count: int) -> list[DeadLetter]:
        """The letters, each keyed by its request id and with Lambda's headers."""
        letters = []
        for message in await self.kafka.read(self.dead, count):
            letter = letter_from_json(message.value)
            assert message.key == letter.request_id.encode()
            assert dict(message.headers) == {
                name: value.encode() for name, value in lambda_attributes(letter).items()
            }
            letters.append(letter)
        return letters

    async def raw_dead_letters(self, count: int) -> list[tuple[bytes, str]]:
        return [
            (m.value, dict(m.headers)["ErrorMessage"].decode())
            for m in await self.kafka.read(self.dead, count)
        ]

    async def send_raw(self, bodies: Sequence[bytes]) -> None:
        await self.kafka.produce(self.topic, bodies)

    async def wait_until_shared(self, queues: Sequence[EventQueue]) -> None:
        """Each member owns its partitions: wait until the group has divided them."""
        members = [q for q in queues if isinstance(q, KafkaEventQueue)]
        share = PARTITIONS // len(members)
        await wait_until(lambda: all(len(q.partitions) == share for q in members), DEADLINE)


class TestKafkaEventQueue(SharedEventQueueContract):
    timeout = DEADLINE

    @pytest.fixture
    async def event_queue_harness(self, kafka: Kafka) -> KafkaQueues:
        return KafkaQueues(kafka, *await topics(kafka, PARTITIONS))


async def test_commits_never_pass_an_unsettled_event_and_retries_keep_their_key(
    kafka: Kafka,
) -> None:
    topic, dead, group = await topics(kafka)
    async with event_queue(kafka, topic, dead, group) as queue:
        sent = [event(n) for n in range(3)]
        for e in sent:
            await queue.put(e)
        first, second, third = await receive_events(queue, 3, DEADLINE)
        await queue.delete(third)
        second.attempts = 1
        await queue.retry(second, 0.0)
        await committed(kafka, group, topic, 0)  # never past the first, still running
        await queue.delete(first)
        await committed(kafka, group, topic, 3)
        (again,) = await receive_events(queue, 1, DEADLINE)
        assert (again.request_id, again.attempts) == (second.request_id, 1)
        await queue.delete(again)
        await committed(kafka, group, topic, 4)
    *_, copy = await kafka.read(topic, 4)
    assert copy.key == second.request_id.encode()
    assert orjson.loads(copy.value)["attempts"] == 1


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
