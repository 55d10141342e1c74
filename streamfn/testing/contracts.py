"""Contract test classes: the scenarios every implementation of a protocol must pass, written
once and subclassed per implementation, as faststream's broker tests are.

- :class:`EventQueueContract`: any :class:`~streamfn.asyncq.EventQueue`. Received events keep
  their fields and count in ``depth()``/``oldest()`` until deleted or dead-lettered; a retry
  comes back after its delay with its attempts; an App runs events and dead-letters failures.
- :class:`DurableEventQueueContract` adds: what was put and not settled outlives the queue
  object (a new one on the same storage receives it, retries with their attempts).
- :class:`SharedEventQueueContract` adds, for a queue several workers share through a broker:
  two workers run each event once; messages that are not events are dead-lettered once and
  logged, and the rest run.
- :class:`SourceContract`: any partitioned :class:`~streamfn.source.Source`. Every partition is
  announced to the assignment listener and read in offset order; an item identifier names its
  record; a new source resumes after the last commit.

A subclass provides one fixture, the harness: ``event_queue_harness`` (an
:class:`EventQueueHarness`, :class:`SharedEventQueueHarness` for the shared contract) or
``source_harness`` (a :class:`SourceHarness`), made fresh for each test (a new queue, topic,
stream or directory), and may raise :attr:`~EventQueueContract.timeout` for a slow broker. It
is free to add tests of its own. A subclass named ``Test...`` is collected; the contracts
themselves are not.

This module needs pytest and pytest-asyncio, and is not imported by :mod:`streamfn.testing`:
import it explicitly. Every scenario is marked ``pytest.mark.asyncio``, so it runs in
pytest-asyncio's strict mode too; an async harness fixture then needs
``@pytest_asyncio.fixture``. Example, the in-memory queue (a directory-backed queue would also
subclass :class:`DurableEventQueueContract`)::

    import pytest

    from streamfn.asyncq import DeadLetter, MemoryEventQueue
    from streamfn.testing import wait_until
    from streamfn.testing.contracts import EventQueueContract


    class MemoryQueues:
        def __init__(self) -> None:
            self._queue = MemoryEventQueue()

        def queue(self) -> MemoryEventQueue:
            return self._queue

        async def dead_letters(self, count: int) -> list[DeadLetter]:
            await wait_until(lambda: len(self._queue.dead_letters) >= count)
            return self._queue.dead_letters[:count]


    class TestMemoryEventQueue(EventQueueContract):
        @pytest.fixture
        def event_queue_harness(self) -> MemoryQueues:
            return MemoryQueues()

and a source, where a restarted ``MemorySource`` stands for a new one::

    from streamfn.testing import MemorySource
    from streamfn.testing.contracts import SourceContract


    class MemoryStream:
        partitions = 2

        def __init__(self) -> None:
            self._source = MemorySource(["p0", "p1"])

        def source(self) -> MemorySource:
            return self._source

        async def append(self, partition: str, values: list[bytes]) -> None:
            self._source.extend(partition, values)


    class TestMemorySource(SourceContract):
        @pytest.fixture
        def source_harness(self) -> MemoryStream:
            return MemoryStream()
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from typing import Any, ClassVar, Protocol

import orjson
import pytest

from ..app import App
from ..asyncq import DeadLetter, EventQueue, QueuedEvent
from ..config import MappingConfig
from ..context import Context
from ..record import Record
from ..source import Source
from .wait import wait_until

__all__ = [
    "DurableEventQueueContract",
    "EventQueueContract",
    "EventQueueHarness",
    "SharedEventQueueContract",
    "SharedEventQueueHarness",
    "SourceContract",
    "SourceHarness",
    "event_fields",
    "receive_events",
]

#: ``async_time_scale`` of the Apps in the scenarios: Lambda's one-minute retry takes 60 ms.
SCALE = 0.001


class EventQueueHarness(Protocol):
    """What the event-queue contracts need from the subclass: one test's storage."""

    def queue(self) -> EventQueue:
        """A new, unopened queue on this test's storage (the same queue, topic, directory or
        object for every queue made by one harness)."""
        ...

    async def dead_letters(self, count: int) -> list[DeadLetter]:
        """The first ``count`` dead letters stored for this test's queue, waiting for them."""
        ...


class SharedEventQueueHarness(EventQueueHarness, Protocol):
    """A harness of a queue on a broker that other programs can write to."""

    async def send_raw(self, bodies: Sequence[bytes]) -> None:
        """Put ``bodies`` on the queue's storage as messages, as they are."""
        ...

    async def raw_dead_letters(self, count: int) -> list[tuple[bytes, str]]:
        """The first ``count`` dead-letter messages as (body, the reason stored with it)."""
        ...

    async def wait_until_shared(self, queues: Sequence[EventQueue]) -> None:
        """Return once each open queue of ``queues`` has its share of the work (at once for a
        queue that hands events to whoever asks; when each owns its partitions for one that
        divides them)."""
        ...


class SourceHarness(Protocol):
    """What :class:`SourceContract` needs from the subclass: one test's stream."""

    #: How many partitions a source over the stream is assigned when it runs alone.
    partitions: int

    def source(self) -> Source:
        """A source over this test's stream, as a restarted worker would make it: it resumes
        from the commits of the sources made before it."""
        ...

    async def append(self, partition: str, values: Sequence[bytes]) -> None:
        """Write ``values`` to the partition the sources call ``partition``, in order."""
        ...


async def receive_events(queue: EventQueue, count: int, timeout: float) -> list[QueuedEvent]:
    """The next ``count`` events ``queue`` hands out, within ``timeout`` seconds."""
    received: list[QueuedEvent] = []
    async with asyncio.timeout(timeout):
        while len(received) < count:
            received += await queue.receive(count - len(received))
    return received


def event_fields(event: QueuedEvent) -> tuple[Any, ...]:
    """What a queue must keep of an event: :class:`~streamfn.asyncq.QueuedEvent`'s fields (a
    queue may hand out a subclass that carries its own bookkeeping too)."""
    return tuple(getattr(event, field.name) for field in dataclasses.fields(QueuedEvent))


def _event(n: int) -> QueuedEvent:
    now = time.time()
    return QueuedEvent(str(uuid.uuid4()), "f", None, orjson.dumps({"n": n}), now, due_at=now)


class EventQueueContract:
    """Scenarios every :class:`~streamfn.asyncq.EventQueue` passes. Subclass it with an
    ``event_queue_harness`` fixture that returns an :class:`EventQueueHarness`."""

    #: Seconds any one wait of a scenario may take.
    timeout: ClassVar[float] = 15.0

    @pytest.mark.asyncio
    async def test_received_events_keep_their_fields_and_count_until_settled(
        self, event_queue_harness: EventQueueHarness
    ) -> None:
        record = {
            "requestContext": {"condition": "RetriesExhausted", "approximateInvokeCount": 3},
            "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
            "responsePayload": {"errorMessage": "x" * 2000, "errorType": "ValueError"},
        }
        sent = [_event(1), _event(2)]
        async with event_queue_harness.queue() as queue:
            for event in sent:
                await queue.put(event)
            got = await receive_events(queue, 2, self.timeout)
            assert sorted(map(event_fields, got)) == sorted(map(event_fields, sent))
            await wait_until(lambda: queue.depth() == 2, self.timeout)
            assert queue.oldest() == min(event.enqueued_at for event in sent)
            failed, done = got
            letter = DeadLetter(
                failed.request_id,
                failed.function,
                failed.qualifier,
                failed.payload or b"",
                failed.enqueued_at,
                3,
                time.time(),
                "RetriesExhausted",
                record,
            )
            await queue.dead_letter(failed, letter)
            await queue.delete(done)
            await wait_until(lambda: queue.depth() == 0, self.timeout)
            assert queue.oldest() is None
        assert await event_queue_harness.dead_letters(1) == [letter]

    @pytest.mark.asyncio
    async def test_a_retried_event_comes_back_after_its_delay_with_its_counts(
        self, event_queue_harness: EventQueueHarness
    ) -> None:
        async with event_queue_harness.queue() as queue:
            await queue.put(_event(1))
            (got,) = await receive_events(queue, 1, self.timeout)
            got.attempts, got.throttles = 1, 2
            retried_at = time.time()
            await queue.retry(got, 0.2)
            (again,) = await receive_events(queue, 1, self.timeout)
            assert time.time() >= retried_at + 0.2
            assert (again.request_id, again.attempts, again.throttles) == (got.request_id, 1, 2)
            assert again.due_at == pytest.approx(retried_at + 0.2, abs=0.1)
            await queue.delete(again)
            await wait_until(lambda: queue.depth() == 0, self.timeout)

    @pytest.mark.asyncio
    async def test_an_app_runs_events_and_dead_letters_failures_after_retries(
        self, event_queue_harness: EventQueueHarness
    ) -> None:
        queue = event_queue_harness.queue()
        app = App("contract", event_queue=queue, async_time_scale=SCALE)
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
            (letter,) = await event_queue_harness.dead_letters(1)
            await wait_until(lambda: ran == [{"n": 1}] and queue.depth() == 0, self.timeout)
        assert len(attempts) == 3
        assert attempts[1] - attempts[0] >= 60 * SCALE
        assert attempts[2] - attempts[1] >= 120 * SCALE
        assert (letter.request_id, letter.function, letter.attempts, letter.condition) == (
            request_id,
            "fails",
            3,
            "RetriesExhausted",
        )
        assert orjson.loads(letter.payload) == {"n": 2}
        assert letter.record["responsePayload"]["errorMessage"] == "no 2"
        assert app.metrics.dead_letters.labels("fails", "RetriesExhausted").value == 1


class DurableEventQueueContract(EventQueueContract):
    """:class:`EventQueueContract` and what a durable queue adds: events outlive the queue
    object, as they outlive a worker's crash or restart."""

    @pytest.mark.asyncio
    async def test_unsettled_and_retried_events_outlive_the_queue(
        self, event_queue_harness: EventQueueHarness
    ) -> None:
        retried, unsettled = _event(1), _event(2)
        async with event_queue_harness.queue() as queue:
            await queue.put(retried)
            await queue.put(unsettled)
            received = await receive_events(queue, 2, self.timeout)
            got = {event.request_id: event for event in received}
            got[retried.request_id].attempts = 1
            await queue.retry(got[retried.request_id], 0.0)
        async with event_queue_harness.queue() as queue:
            again = await receive_events(queue, 2, self.timeout)
            by_id = {event.request_id: event for event in again}
            assert len(by_id) == 2
            assert event_fields(by_id[unsettled.request_id]) == event_fields(unsettled)
            assert by_id[retried.request_id].attempts == 1
            for event in again:
                await queue.delete(event)
            await wait_until(lambda: queue.depth() == 0, self.timeout)


class SharedEventQueueContract(DurableEventQueueContract):
    """:class:`DurableEventQueueContract` and what a queue that several workers share through a
    broker adds. Its fixture returns a :class:`SharedEventQueueHarness`."""

    @pytest.mark.asyncio
    async def test_two_workers_share_the_queue_and_run_each_event_once(
        self, event_queue_harness: SharedEventQueueHarness
    ) -> None:
        ran: list[tuple[str, int]] = []
        both = asyncio.Event()

        def worker(name: str, queue: EventQueue) -> App:
            app = App(name, event_queue=queue, async_time_scale=SCALE, async_max_in_flight=3)

            @app.function()
            async def work(event: Any, context: Context) -> None:
                ran.append((name, event["n"]))
                if {worker for worker, _ in ran} == {"a", "b"}:
                    both.set()
                async with asyncio.timeout(self.timeout):  # neither may take everything alone
                    await both.wait()

            return app

        queues = [event_queue_harness.queue(), event_queue_harness.queue()]
        a, b = worker("a", queues[0]), worker("b", queues[1])
        async with a.running(), b.running():
            await event_queue_harness.wait_until_shared(queues)
            await asyncio.gather(*(a.invoke_async("work", {"n": n}) for n in range(40)))
            await wait_until(
                lambda: len(ran) >= 40 and all(q.depth() == 0 for q in queues), self.timeout
            )
        assert sorted(n for _, n in ran) == list(range(40))
        assert {name for name, _ in ran} == {"a", "b"}

    @pytest.mark.asyncio
    async def test_malformed_messages_are_dead_lettered_once_and_the_rest_run(
        self, event_queue_harness: SharedEventQueueHarness, caplog: pytest.LogCaptureFixture
    ) -> None:
        queue = event_queue_harness.queue()
        app = App("contract", event_queue=queue, async_time_scale=SCALE)
        ran: list[Any] = []

        @app.function()
        async def f(event: Any, context: Context) -> None:
            ran.append(event)

        malformed = [b"not json", b"[]", b'{"requestId": 1}']
        await event_queue_harness.send_raw(malformed)
        with caplog.at_level(logging.ERROR, logger="streamfn"):
            async with app.running():
                await app.invoke_async("f", {"n": 1})
                buried = await event_queue_harness.raw_dead_letters(3)
                await wait_until(lambda: ran == [{"n": 1}] and queue.depth() == 0, self.timeout)
        assert sorted(body for body, _ in buried) == sorted(malformed)
        assert all(reason for _, reason in buried)
        logged = [
            r
            for r in caplog.records
            if r.levelno >= logging.ERROR and r.name.startswith("streamfn")
        ]
        assert len(logged) == 3
        assert all("malformed" in r.getMessage() for r in logged)


class _Assignments:
    """The assignment listener of a scenario: which partitions the source gave it."""

    def __init__(self) -> None:
        self.owned: set[str] = set()

    async def assigned(self, partitions: Collection[str]) -> None:
        self.owned.update(partitions)

    async def revoked(self, partitions: Collection[str]) -> None:
        self.owned.difference_update(partitions)


@contextlib.asynccontextmanager
async def _running(source: Source, partitions: int, timeout: float) -> AsyncIterator[list[str]]:
    """``source`` running alone, once it announced its ``partitions``; yields their ids."""
    listener = _Assignments()
    run = asyncio.create_task(source.run(MappingConfig(), listener))
    try:
        try:
            await wait_until(lambda: run.done() or len(listener.owned) == partitions, timeout)
        except TimeoutError:
            raise AssertionError(
                f"{source.describe()} announced {sorted(listener.owned)} in {timeout} s, "
                f"not {partitions} partitions"
            ) from None
        if run.done():
            run.result()  # raises what stopped it
            raise AssertionError(f"{source.describe()} stopped running without an error")
        yield sorted(listener.owned)
    finally:
        run.cancel()
        await asyncio.wait([run])
    if not run.cancelled() and run.exception() is not None:
        raise AssertionError(f"{source.describe()} failed while running") from run.exception()


async def _read(source: Source, partition: str, count: int, timeout: float) -> list[Record]:
    """The next ``count`` records of ``partition``, within ``timeout`` seconds."""
    records: list[Record] = []
    async with asyncio.timeout(timeout):
        while len(records) < count:
            records += await source.fetch(partition, count - len(records), 1.0)
    return records


class SourceContract:
    """Scenarios every partitioned :class:`~streamfn.source.Source` passes. Subclass it with a
    ``source_harness`` fixture that returns a :class:`SourceHarness`."""

    #: Seconds any one wait of a scenario may take.
    timeout: ClassVar[float] = 15.0

    @pytest.mark.asyncio
    async def test_every_partition_is_assigned_and_read_in_offset_order(
        self, source_harness: SourceHarness
    ) -> None:
        source = source_harness.source()
        assert isinstance(source, Source)
        async with _running(source, source_harness.partitions, self.timeout) as partitions:
            written = {p: [b"%s:%d" % (p.encode(), i) for i in range(5)] for p in partitions}
            for partition, values in written.items():
                await source_harness.append(partition, values)
            for partition, values in written.items():
                records = await _read(source, partition, len(values), self.timeout)
                assert [r.value for r in records] == values
                assert {r.partition for r in records} == {partition}
                offsets = [r.offset for r in records]
                assert offsets == sorted(set(offsets))
                for record in records:
                    named = source.identify(partition, source.item_identifier(record))
                    assert named == record.offset
                with pytest.raises(ValueError):
                    source.identify(partition, None)
            assert not await source.fetch(partitions[0], 10, 0.1)  # nothing new: empty in time

    @pytest.mark.asyncio
    async def test_a_new_source_resumes_after_the_last_commit(
        self, source_harness: SourceHarness
    ) -> None:
        first = source_harness.source()
        async with _running(first, source_harness.partitions, self.timeout) as partitions:
            partition = partitions[0]
            await source_harness.append(partition, [b"%d" % i for i in range(5)])
            records = await _read(first, partition, 5, self.timeout)
            await first.commit(partition, records[2])
        second = source_harness.source()
        async with _running(second, source_harness.partitions, self.timeout):
            resumed = await _read(second, partition, 2, self.timeout)
        assert [(r.offset, r.value) for r in resumed] == [(r.offset, r.value) for r in records[3:]]

    @pytest.mark.asyncio
    async def test_event_size_bounds_each_record_of_the_lambda_event(
        self, source_harness: SourceHarness
    ) -> None:
        """The payload cap of Lambda-format events counts ``event_size``: never less than what
        a record adds to its event, or a handler could receive an event over the cap; and
        close to it, or batches would be cut smaller than AWS cuts them."""
        source = source_harness.source()
        async with _running(source, source_harness.partitions, self.timeout) as partitions:
            partition = partitions[0]
            values = [b"x", b'{"quote": "\\"", "tab": "\t"}', bytes(range(256)) * 40]
            await source_harness.append(partition, values)
            records = await _read(source, partition, len(values), self.timeout)
        envelope = len(orjson.dumps(source.lambda_event(partition, [])))
        for record in records:
            alone = len(orjson.dumps(source.lambda_event(partition, [record]))) - envelope
            assert alone < source.event_size(record) <= alone + 128  # the comma, and some room
        whole = len(orjson.dumps(source.lambda_event(partition, records)))
        assert whole <= envelope + sum(source.event_size(r) for r in records)
