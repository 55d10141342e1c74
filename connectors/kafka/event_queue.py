"""A Kafka topic as the event queue of asynchronous invocations, shared by a consumer group.

Each event is one message in the wire format of :mod:`streamfn.connectors._eventq`, keyed
by its request id. ``put`` returns once the broker acknowledged it (``acks="all"``); the
producer batches concurrent puts. The members of ``group_id`` share the topic's partitions, so
the topic needs at least as many partitions as there are workers.

Offsets are committed by hand: an event's offset is committed only once it and every earlier
event of its partition are settled (deleted, dead-lettered, or re-produced for a retry), so a
worker that dies has its events run again rather than lost. A retry re-produces the event with
its new attempts and due time (same key, so same partition) before settling the old offset;
the partition's owner holds it until it is due. Until then it holds back that partition's
commit, not its other events: a crash in that time runs the later events of the partition
again too (at least once, as on Lambda). Throttled events wait in the worker
(``durable=False``).

Dead letters go to ``dead_letter_topic`` (``<topic>.dlq`` by default): the event as it failed
plus the invocation record, keyed by request id, with Lambda's ``RequestID``, ``ErrorCode`` and
``ErrorMessage`` as headers. A message that is not an event is copied there as it is, logged
once, and passed.

On a rebalance a member stops handing out events of the partitions it loses, gives the running
ones ``drain_timeout`` seconds to settle, commits, and lets go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from streamfn.asyncq import DeadLetter, QueuedEvent
from streamfn.backoff import retry_delay
from streamfn.errors import ConfigError, InvocationError, SourceError

from .._eventq import HeldEvents, MalformedEvent, decode, encode, encode_letter, letter_error
from ._client import (
    TOPIC,
    check_group_id,
    check_options,
    check_seconds,
    client_options,
    keep_alive,
    parse_servers,
    partition_id,
    security_of,
    start_client,
)
from .security import KafkaSecurity

log = logging.getLogger("streamfn.async.kafka")

#: Seconds between two attempts at a commit the broker refused.
COMMIT_RETRY_INTERVAL = 1.0
_FETCH_TIMEOUT_MS = 1000
#: Client options the queue sets itself; ``consumer_options``/``producer_options`` can't.
_MANAGED = dict.fromkeys(
    (
        "bootstrap_servers",
        "group_id",
        "enable_auto_commit",
        "auto_offset_reset",
        "acks",
        "security_protocol",
        "ssl_context",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
        "sasl_oauth_token_provider",
    ),
    "KafkaEventQueue sets it (security=)",
)


class _Partition:
    """A partition this member owns: its events fetched and not settled, and how far it may be
    committed (the first of them, or past everything fetched)."""

    __slots__ = ("committed", "events", "fetched_to", "idle", "order", "revoked", "running", "tp")

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.events: dict[int, _Message] = {}  # offset -> event not settled
        self.order: deque[int] = deque()  # their offsets, oldest first; settled ones drop off
        self.fetched_to: int | None = None
        self.committed: int | None = None
        self.running = 0  # events handed to the invoker and not settled or held again
        self.idle = asyncio.Event()
        self.idle.set()
        self.revoked = False

    def add(self, event: _Message) -> None:
        self.events[event.offset] = event
        self.order.append(event.offset)
        self.fetched_to = event.offset + 1

    def settle(self, offset: int) -> None:
        self.events.pop(offset, None)
        order = self.order
        while order and order[0] not in self.events:
            order.popleft()

    @property
    def commit_point(self) -> int | None:
        return self.order[0] if self.order else self.fetched_to

    def started(self) -> None:
        self.running += 1
        self.idle.clear()

    def stopped(self) -> None:
        self.running -= 1
        if self.running == 0:
            self.idle.set()


@dataclass(slots=True)
class _Message(QueuedEvent):
    """An event as fetched: where it sits, to commit past it once settled."""

    partition: _Partition | None = None
    offset: int = -1


def _owned(event: QueuedEvent) -> bool:
    assert isinstance(event, _Message) and event.partition is not None
    return not event.partition.revoked


class KafkaEventQueue:
    """The event queue of asynchronous invocations on a Kafka topic, so that several workers
    share it: ``App(event_queue=KafkaEventQueue(...))`` in each, with the same ``group_id``
    (``streamfn.<topic>`` by default).

    A group that has no commit yet starts at the topic's earliest event. A broker that is down
    at start-up is retried for ``connect_timeout`` seconds, then
    :class:`~streamfn.errors.SourceError` names it; a topic the broker does not have (and does
    not create) is a :class:`~streamfn.errors.ConfigError`. ``max_held`` bounds the events
    waiting in this worker for their time. ``security`` is how to connect and authenticate
    (:class:`KafkaSecurity`). ``consumer_options`` and ``producer_options`` pass
    other AIOKafkaConsumer / AIOKafkaProducer options through.
    """

    def __init__(
        self,
        topic: str,
        *,
        bootstrap_servers: str | Sequence[str],
        group_id: str | None = None,
        dead_letter_topic: str | None = None,
        security: KafkaSecurity | None = None,
        security_protocol: str = "PLAINTEXT",
        ssl_context: ssl.SSLContext | None = None,
        sasl_mechanism: str | None = None,
        sasl_plain_username: str | None = None,
        sasl_plain_password: str | None = None,
        connect_timeout: float = 30.0,
        commit_timeout: float = 10.0,
        drain_timeout: float = 30.0,
        max_held: int = 1000,
        consumer_options: Mapping[str, Any] | None = None,
        producer_options: Mapping[str, Any] | None = None,
    ) -> None:
        dead_letter_topic = dead_letter_topic or f"{topic}.dlq"
        group_id = group_id or f"streamfn.{topic}"
        for name, value in (("topic", topic), ("dead_letter_topic", dead_letter_topic)):
            if not isinstance(value, str) or not TOPIC.fullmatch(value):
                raise ConfigError.out_of_range(
                    name, value, "a topic name of 1-249 letters, digits, '.', '_', '-'"
                )
        if topic == dead_letter_topic:
            raise ConfigError(f"dead_letter_topic={topic!r} is invalid: it is the event topic")
        check_group_id(group_id)
        check_seconds("connect_timeout", connect_timeout)
        check_seconds("commit_timeout", commit_timeout)
        check_seconds("drain_timeout", drain_timeout)
        if isinstance(max_held, bool) or not isinstance(max_held, int) or max_held < 1:
            raise ConfigError.out_of_range("max_held", max_held, "an integer >= 1")
        self.consumer_options = dict(consumer_options or {})
        self.producer_options = dict(producer_options or {})
        check_options("consumer_options", self.consumer_options, AIOKafkaConsumer, _MANAGED)
        check_options("producer_options", self.producer_options, AIOKafkaProducer, _MANAGED)
        servers = parse_servers(bootstrap_servers)
        self.security = security_of(
            security,
            security_protocol,
            ssl_context,
            sasl_mechanism,
            sasl_plain_username,
            sasl_plain_password,
        )
        self._client_options = client_options(servers, self.security)
        self.topic = topic
        self.dead_letter_topic = dead_letter_topic
        self.group_id = group_id
        self.bootstrap_servers = ",".join(servers)
        self.connect_timeout = float(connect_timeout)
        self.commit_timeout = float(commit_timeout)
        self.drain_timeout = float(drain_timeout)
        self.max_held = max_held
        self._producer: Any = None
        self._consumer: Any = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._reset()

    def _reset(self) -> None:
        """The state of one run, from opening to closing."""
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._holding = HeldEvents(self._fetch, self.max_held, _owned)
        self._dirty = asyncio.Event()  # some partition may be committed further
        self._closing = False

    def describe(self) -> str:
        return f"kafka://{self.bootstrap_servers}/{self.topic}"

    @property
    def partitions(self) -> frozenset[str]:
        """The partitions this member owns right now, as ``"<topic>-<n>"``."""
        return frozenset(partition_id(tp.topic, tp.partition) for tp in self._partitions)

    # -- opening and closing -------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._reset()
        producer_kwargs = {**self.producer_options, **self._client_options, "acks": "all"}
        rebalance_ms = int((self.drain_timeout + self.commit_timeout) * 1000)
        consumer_kwargs = {
            "rebalance_timeout_ms": rebalance_ms,
            **self.consumer_options,
            **self._client_options,
            "group_id": self.group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
        }
        async with contextlib.AsyncExitStack() as stack:
            producer = await self._start(lambda: AIOKafkaProducer(**producer_kwargs))
            stack.push_async_callback(producer.stop)
            for topic in (self.topic, self.dead_letter_topic):
                await self._check_topic(producer, topic)
            consumer = await self._start(lambda: AIOKafkaConsumer(**consumer_kwargs))
            stack.push_async_callback(consumer.stop)
            consumer.subscribe([self.topic], listener=_Rebalance(self))
            self._producer, self._consumer = producer, consumer
            tasks = await stack.enter_async_context(asyncio.TaskGroup())
            self._loops = [
                tasks.create_task(self._commit_loop()),
                tasks.create_task(keep_alive(consumer, self._group_subject())),
            ]
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Commit what is settled and leave the group: the events still unsettled go to the
        partitions' next owners."""
        stack, self._stack = self._stack, None
        if stack is None:
            return
        self._closing = True
        try:
            await self._holding.close(cancel=True)  # what it fetched is fetched again
            await self._commit(list(self._partitions.values()))
        finally:
            for loop in self._loops:
                loop.cancel()
            self._partitions = {}
            self._producer = self._consumer = None
            await stack.aclose()

    async def _start(self, make: Callable[[], Any]) -> Any:
        return await start_client(
            make,
            self.bootstrap_servers,
            self.connect_timeout,
            {"queue": self.describe()},
            f"for event queue topic {self.topic!r} ",
            self.security,
        )

    def _group_subject(self) -> str:
        """What a fatal error of the consumer group names."""
        return f"Kafka event queue topic {self.topic!r}, group {self.group_id!r}"

    async def _check_topic(self, producer: Any, topic: str) -> None:
        try:
            async with asyncio.timeout(self.connect_timeout):
                await producer.partitions_for(topic)
        except (KafkaError, TimeoutError) as exc:
            raise ConfigError(
                f"Kafka topic {topic!r} is not available at {self.bootstrap_servers}: {exc!r}"
            ) from exc

    # -- the invoker's side --------------------------------------------------------------

    async def put(self, event: QueuedEvent) -> None:
        assert self._producer is not None, "the queue is not open"
        try:
            await self._producer.send_and_wait(
                self.topic, encode(event), key=event.request_id.encode()
            )
        except KafkaError as exc:
            raise InvocationError(
                f"Kafka event queue topic {self.topic!r} did not store the event: {exc!r}"
            ) from exc

    async def receive(self, max_events: int) -> list[QueuedEvent]:
        events = await self._holding.receive(max_events)
        for event in events:
            assert isinstance(event, _Message) and event.partition is not None
            event.partition.started()
        return events

    async def retry(self, event: QueuedEvent, delay: float, *, durable: bool = True) -> None:
        assert isinstance(event, _Message) and event.partition is not None
        event.due_at = time.time() + delay
        if not durable:
            event.partition.stopped()
            self._holding.hold(event)
            return
        try:
            await self._producer.send_and_wait(
                self.topic, encode(event), key=event.request_id.encode()
            )
        except KafkaError as exc:
            raise SourceError(
                f"Kafka event queue topic {self.topic!r} did not store the retried event: {exc!r}"
            ) from exc
        self._settle(event)

    async def delete(self, event: QueuedEvent) -> None:
        self._settle(event)

    async def dead_letter(self, event: QueuedEvent, letter: DeadLetter) -> None:
        status, message = letter_error(letter)
        headers = [("RequestID", letter.request_id.encode()), ("ErrorMessage", message.encode())]
        if status is not None:
            headers.append(("ErrorCode", str(status).encode()))
        try:
            await self._producer.send_and_wait(
                self.dead_letter_topic,
                encode_letter(event, letter),
                key=event.request_id.encode(),
                headers=headers,
            )
        except KafkaError as exc:
            raise SourceError(
                f"Kafka dead-letter topic {self.dead_letter_topic!r} did not store the event: "
                f"{exc!r}"
            ) from exc
        self._settle(event)

    def depth(self) -> int:
        """Events of this member's partitions not settled yet: fetched, or still to fetch as
        far as the last fetch response said (no call to the broker)."""
        consumer = self._consumer
        total = 0
        for partition in self._partitions.values():
            total += len(partition.events)
            high = consumer.highwater(partition.tp) if consumer is not None else None
            if high is not None and partition.fetched_to is not None:
                total += max(0, high - partition.fetched_to)
        return total

    def oldest(self) -> float | None:
        return min(
            (e.enqueued_at for p in self._partitions.values() for e in p.events.values()),
            default=None,
        )

    def _settle(self, event: QueuedEvent) -> None:
        assert isinstance(event, _Message) and event.partition is not None
        event.partition.stopped()
        event.partition.settle(event.offset)
        self._dirty.set()

    # -- fetching and committing ---------------------------------------------------------

    async def _fetch(self, max_events: int) -> list[QueuedEvent]:
        failures = 0
        while True:
            try:
                batches = await self._consumer.getmany(
                    timeout_ms=_FETCH_TIMEOUT_MS, max_records=max_events
                )
            except KafkaError as exc:
                if not exc.retriable:
                    raise SourceError(f"{self._group_subject()}: {exc!r}") from exc
                delay = retry_delay(failures, 0.5, 10.0)
                failures += 1
                log.warning(
                    "cannot fetch from the Kafka event queue; retrying",
                    extra={
                        "queue": self.describe(),
                        "retry_in": round(delay, 2),
                        "error": repr(exc),
                    },
                )
                await asyncio.sleep(delay)
                continue
            failures = 0
            events: list[QueuedEvent] = []
            for tp, messages in batches.items():
                partition = self._partitions.get(tp)
                if partition is None:  # fetched before on_partitions_assigned ran
                    partition = self._partitions[tp] = _Partition(tp)
                for message in messages:
                    try:
                        event = decode(message.value, _Message)
                    except MalformedEvent as exc:
                        await self._bury_malformed(message, exc)
                        partition.fetched_to = message.offset + 1
                        self._dirty.set()
                        continue
                    event.partition, event.offset = partition, message.offset
                    partition.add(event)
                    events.append(event)
            if events:
                return events

    async def _bury_malformed(self, message: Any, error: MalformedEvent) -> None:
        """Copy a message that is not an event to the dead-letter topic, trying until the
        broker takes it: its offset is passed only then."""
        reason = f"malformed event: {error}"
        failures = 0
        while True:
            try:
                await self._producer.send_and_wait(
                    self.dead_letter_topic,
                    message.value,
                    key=message.key,
                    headers=[("ErrorMessage", reason.encode())],
                )
                break
            except KafkaError as exc:
                delay = retry_delay(failures, 0.5, 30.0)
                failures += 1
                log.warning(
                    "cannot copy a malformed message to the dead-letter topic; retrying",
                    extra={
                        "queue": self.describe(),
                        "retry_in": round(delay, 2),
                        "error": repr(exc),
                    },
                )
                await asyncio.sleep(delay)
        log.error(
            "malformed message on the Kafka event queue; copied to the dead-letter topic",
            extra={
                "queue": self.describe(),
                "partition": message.partition,
                "offset": message.offset,
                "error": reason,
            },
        )

    async def _commit(self, partitions: Collection[_Partition]) -> bool:
        """Commit every partition of ``partitions`` that got further; False when refused."""
        offsets: dict[TopicPartition, int] = {}
        for partition in partitions:
            point = partition.commit_point
            if point is not None and point != partition.committed:
                offsets[partition.tp] = point
        if not offsets:
            return True
        try:
            async with asyncio.timeout(self.commit_timeout):
                await self._consumer.commit(offsets)
        except (KafkaError, TimeoutError) as exc:
            log.warning(
                "could not commit the Kafka event queue's offsets; retrying",
                extra={"queue": self.describe(), "error": repr(exc)},
            )
            return False
        for partition in partitions:
            if partition.tp in offsets:
                partition.committed = offsets[partition.tp]
        return True

    async def _commit_loop(self) -> None:
        """Group commit: whatever settled while a commit was in flight goes in the next."""
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if not await self._commit(list(self._partitions.values())):
                self._dirty.set()
                await asyncio.sleep(COMMIT_RETRY_INTERVAL)

    # -- rebalancing ---------------------------------------------------------------------

    def _assign(self, partitions: Collection[TopicPartition]) -> None:
        for tp in partitions:
            self._partitions.setdefault(tp, _Partition(tp))

    async def _revoke(self, partitions: Collection[TopicPartition]) -> None:
        """Hand out nothing more of ``partitions``, let the running events settle (within
        ``drain_timeout``), commit while they are still this member's, then let go."""
        losing = [p for tp in partitions if (p := self._partitions.get(tp)) is not None]
        for partition in losing:
            partition.revoked = True
        try:
            if not self._closing:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.drain_timeout):
                        for partition in losing:
                            await partition.idle.wait()
            await self._commit(losing)
        finally:
            for partition in losing:
                self._partitions.pop(partition.tp, None)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, queue: KafkaEventQueue) -> None:
        self.queue = queue

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.queue._revoke(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.queue._assign(assigned)
