"""One partition's pipeline: a poller task fetches records, routes them to lanes (by key when
parallelization_factor > 1), lanes settle batches through the outcome policy, and a committer
writes the checkpoint back to the source, coalescing commits while one is in flight.

A runner is built from the collaborators it works with (the source, the outcome policy, the
filter, the settings, the partition's stats and the mapping's failure log), not from the mapping
that owns them, so the mapping depends on the runner and never the other way round. It counts
per fetch and per batch, never per record."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any
from zlib import crc32

import orjson

from .backoff import retry_delay
from .batcher import Lane, Signal, record_size
from .checkpoint import Checkpoint, Chunk, Indexes
from .config import MappingConfig
from .errors import SourceError
from .failures import FailureLog
from .filters import FilterCriteria
from .outcome import Abandoned, QueueOutcome, StreamOutcome
from .record import Record
from .source import QueueSource, Source
from .stats import PartitionStats
from .windows import WindowedOutcome, WindowKeeper

#: Seconds a fetch may wait for new records before the poller loops; a source may set its own
#: ``fetch_wait`` attribute (SQS long polls in whole seconds).
FETCH_WAIT = 0.5


class PartitionRunner:
    """Polls, batches, settles and commits one partition until stopped."""

    def __init__(
        self,
        partition: str,
        source: Source | QueueSource,
        outcome: StreamOutcome | QueueOutcome,
        config: MappingConfig,
        filter_criteria: FilterCriteria | None = None,
        *,
        stats: PartitionStats,
        failures: FailureLog,
    ) -> None:
        """``config`` is resolved (the source's default batch size and window filled in); a
        queue source has no checkpoint, so its runner commits nothing. ``stats`` may hold the
        counts of an earlier assignment of the partition: they continue."""
        assert config.batch_size is not None and config.maximum_batching_window is not None
        self.partition = partition
        self.source = source
        self.outcome = outcome
        self.stats = stats
        self.failures = failures
        stats.last_progress = time.monotonic()
        # With Lambda-format events the cap is on the event the handler receives: a record
        # counts as the source's estimate of its share, and the fields around the records
        # (measured once, on an event without records) come off the cap.
        self.measure: Callable[[Record], int] = record_size
        envelope = 0
        if config.event_format == "lambda":
            self.measure = source.event_size
            envelope = len(orjson.dumps(source.lambda_event(partition, [])))
        #: The cap on the records of a batch: the payload cap less the event's own fields.
        self.payload_limit = config.payload_limit - envelope
        self.matches = filter_criteria.matches if filter_criteria is not None else None
        self._stream: Source | None = None
        self._queue: QueueSource | None = None
        if isinstance(source, QueueSource):
            self._queue = source
        else:
            self._stream = source
        self.queue = self._queue is not None
        self.lanes = [
            Lane(
                config.batch_size,
                config.maximum_batching_window,
                self.payload_limit,
                self.measure,
            )
            for _ in range(config.parallelization_factor)
        ]
        self.checkpoint = Checkpoint()
        self.committed: Record | None = None
        #: ``checkpoint.settled`` at the last commit the source acknowledged
        self.committed_count = 0
        #: a lane waits before its next invocation while this many settled records are not
        #: committed yet (streams; 0: no bound): what a crash can make run twice stays within
        #: the batches in flight plus this
        bound = config.max_uncommitted_records
        self.uncommitted_limit = 0 if self.queue or bound is None or bound < 0 else bound
        self._commit_landed = Signal()
        # This runner's own count, for backpressure; the stats' count adds up every runner of
        # the partition, since a revoked one may still be finishing as the next one starts.
        self.inflight = 0
        # Streams keep one batch per lane buffered ahead; queue pollers take only what they can
        # invoke, so one poller does not hoard messages other pollers could run.
        self.max_inflight = (
            config.batch_size
            if self.queue
            else config.batch_size * (config.parallelization_factor + 1)
        )
        self.fetch_wait: float = getattr(source, "fetch_wait", FETCH_WAIT)
        self._room = Signal()
        self._dirty = Signal()
        self._stop = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._committer: asyncio.Task[None] | None = None
        self._lane_tasks: list[asyncio.Task[None]] = []
        #: tumbling windows kept with the checkpoint, when the source keeps them
        self._window: WindowKeeper | None = None
        if isinstance(outcome, WindowedOutcome):
            self._window = outcome.attach(partition, self._stop, self._dirty.set)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._poller = tg.create_task(self._poll())
            if not self.queue:
                self._committer = tg.create_task(self._commit_loop())
            self._lane_tasks = [tg.create_task(self._drive(lane)) for lane in self.lanes]

    async def stop(self, timeout: float) -> None:
        """Stop polling, let busy lanes finish their batch within ``timeout`` (then abandon
        them), and commit what is settled."""
        self._stop.set()
        if self._poller is not None:
            self._poller.cancel()
        busy = []
        for lane, task in zip(self.lanes, self._lane_tasks, strict=True):
            if lane.busy:
                busy.append(task)
            else:
                task.cancel()
        if busy:
            _, late = await asyncio.wait(busy, timeout=timeout)
            for task in late:
                task.cancel()
        if self._committer is not None:
            self._committer.cancel()
        tasks = [t for t in (self._poller, self._committer, *self._lane_tasks) if t is not None]
        await asyncio.wait(tasks)
        self.stats.in_flight -= self.inflight  # abandoned: the next owner runs them again
        self.inflight = 0
        try:
            await self._commit_once()
        except Exception as exc:  # the next owner replays from the last commit: at-least-once
            then = "the next owner replays from the last commit"
            self._failed("commit", exc, then, level=logging.ERROR)
        self.failures.closed(self.partition)

    async def _poll(self) -> None:
        source = self.source
        matches = self.matches
        view = source.filter_view
        checkpoint = self.checkpoint
        stats = self.stats
        room = self._room
        failures = 0
        while True:
            while self.inflight >= self.max_inflight:
                room.clear()
                await room.wait()
            try:
                records = await source.fetch(
                    self.partition, self.max_inflight - self.inflight, self.fetch_wait
                )
                failures = 0
            except SourceError:
                raise
            except Exception as exc:  # a transient fetch error: back off, keep the partition
                delay = retry_delay(failures, 0.1, 10.0)
                failures += 1
                self._failed("fetch", exc, f"retry in {delay:.3g} s", failures)
                await asyncio.sleep(delay)
                continue
            if not records:
                if not self.inflight:  # nothing to do is progress; a stuck batch is not
                    stats.last_progress = time.monotonic()
                continue
            stats.polled += len(records)
            if self.queue:
                await self._queue_arrived(records)
                continue
            if matches is None:
                chunk = checkpoint.add(records)
                self._route(chunk, list(records), (0, len(records)))
                continue
            keep: list[int] = []
            skipped: list[int] = []
            for i, rec in enumerate(records):
                (keep if matches(view(rec)) else skipped).append(i)
            stats.filtered += len(skipped)
            chunk = checkpoint.add(records, skipped)
            if keep:
                self._route(chunk, [records[i] for i in keep], keep)
            elif checkpoint.advance():
                self._dirty.set()

    async def _queue_arrived(self, records: Sequence[Record]) -> None:
        """Queue messages need no checkpoint; those filtered out are deleted at once, as AWS
        deletes SQS messages that match no filter."""
        keep: list[Record] = list(records)
        queue = self._queue
        assert queue is not None
        if self.matches is not None:
            matches, view = self.matches, queue.filter_view
            skipped: list[Record] = []
            keep = []
            for rec in records:
                (keep if matches(view(rec)) else skipped).append(rec)
            if skipped:
                await queue.settle(self.partition, skipped, [])
                self.stats.filtered += len(skipped)
                self.stats.deleted += len(skipped)
        if keep:
            self._route(Chunk(keep), keep, (0, len(keep)))

    def _route(self, chunk: Chunk, records: list[Record], indexes: Indexes) -> None:
        """Hand records to lanes: all to one lane, or by key so one key stays in one lane."""
        self.inflight += len(records)
        self.stats.in_flight += len(records)
        lanes = self.lanes
        if len(lanes) == 1:
            lanes[0].put(chunk, records, indexes)
            return
        n = len(lanes)
        index_list = list(range(*indexes)) if isinstance(indexes, tuple) else indexes
        routed: list[tuple[list[Record], list[int]]] = [([], []) for _ in range(n)]
        for rec, i in zip(records, index_list, strict=True):
            key = rec.key
            recs, idxs = routed[(crc32(key) if key is not None else rec.offset) % n]
            recs.append(rec)
            idxs.append(i)
        for lane, (recs, idxs) in zip(lanes, routed, strict=True):
            if recs:
                lane.put(chunk, recs, idxs)

    async def _drive(self, lane: Lane) -> None:
        """Run ``lane``'s batches through the outcome policy, one at a time. Before taking a
        batch it waits while the partition holds ``uncommitted_limit`` settled records the
        source has not acknowledged: the commit, not the handler, then sets the pace, and
        a crash re-delivers at most the batches in flight plus that bound."""
        outcome = self.outcome
        limit = self.payload_limit
        measure = self.measure
        stop = self._stop
        stats = self.stats
        failures = self.failures
        limit_uncommitted = self.uncommitted_limit
        checkpoint = self.checkpoint
        partition = self.partition
        landed, room, dirty = self._commit_landed, self._room, self._dirty
        stream = not self.queue
        while not stop.is_set():
            lane.busy = False
            while limit_uncommitted and (
                checkpoint.settled - self.committed_count >= limit_uncommitted
            ):
                landed.clear()
                await landed.wait()
            records, portions = await lane.next_batch()
            lane.busy = True
            n = len(records)
            try:
                if n == 1 and measure(records[0]) > limit:
                    await outcome.reject_oversized(partition, records[0], stop)
                else:
                    await outcome.settle(partition, records, stop)
            except Abandoned:
                return
            self.inflight -= n
            stats.in_flight -= n
            stats.last_progress = time.monotonic()
            if failures.pending:
                failures.progressed(partition)
            room.set()
            if stream and checkpoint.settle(portions):
                dirty.set()
        lane.busy = False

    async def _commit_loop(self) -> None:
        failures = 0
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._commit_once()
                failures = 0
            except Exception as exc:
                self._dirty.set()
                delay = retry_delay(failures, 0.1, 10.0)
                failures += 1
                self._failed("commit", exc, f"retry in {delay:.3g} s", failures)
                await asyncio.sleep(delay)

    async def _commit_once(self) -> None:
        """Commit the settled position; with a kept tumbling window, the window as it stood
        after the batch that ended at or before it, in the same write (also when only the
        window changed: one closed on an idle shard)."""
        position = self.checkpoint.position
        moved = position is not None and position is not self.committed
        window = self._window
        settled = self.checkpoint.settled
        if window is not None:
            snapshot = window.pick(position)
            if not moved and snapshot is window.stored:
                return
            blob = await window.encode(snapshot)
            await window.source.commit_window(self.partition, position, blob)
            window.stored = snapshot
        elif moved:
            assert self._stream is not None, "a queue source has no checkpoint to commit"
            assert position is not None
            await self._stream.commit(self.partition, position)
        else:
            return
        if moved:
            self.committed = position
            self.committed_count = settled
            self._commit_landed.set()
        self.stats.commits += 1
        self.stats.last_commit = time.time()

    def _failed(
        self,
        kind: str,
        exc: Exception,
        then: str,
        attempt: int | None = None,
        level: int = logging.WARNING,
    ) -> None:
        """A fetch or commit error; ``then`` says what happens next."""
        fields: dict[str, Any] = {"errorType": type(exc).__name__, "errorMessage": str(exc)}
        if attempt is not None:
            fields["attempt"] = attempt
        fields["next"] = then
        self.failures.report(
            self.partition,
            kind,
            level,
            f"{kind} failed: {type(exc).__name__}: {exc}; {then}",
            fields,
        )
