"""One partition's pipeline: a poller task fetches records, routes them to lanes (by key when
parallelization_factor > 1), lanes settle batches through the outcome policy, and a committer
writes the checkpoint back to the source, coalescing commits while one is in flight.

A runner is built from the collaborators it works with (the source, the outcome policy, the
filter, the settings), not from the mapping that owns them, so the mapping depends on the
runner and never the other way round."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from zlib import crc32

from .backoff import retry_delay
from .batcher import Lane
from .checkpoint import Checkpoint, Chunk, Indexes
from .config import MappingConfig
from .errors import SourceError
from .filters import FilterCriteria
from .outcome import Abandoned, QueueOutcome, StreamOutcome
from .record import Record
from .source import QueueSource, Source

log = logging.getLogger("streamfn.poller")

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
    ) -> None:
        """``config`` is resolved (the source's default batch size and window filled in); a
        queue source has no checkpoint, so its runner commits nothing."""
        assert config.batch_size is not None and config.maximum_batching_window is not None
        self.partition = partition
        self.source = source
        self.outcome = outcome
        self.payload_limit = config.payload_limit
        self.matches = filter_criteria.matches if filter_criteria is not None else None
        self._stream: Source | None = None
        self._queue: QueueSource | None = None
        if isinstance(source, QueueSource):
            self._queue = source
        else:
            self._stream = source
        self.queue = self._queue is not None
        self.lanes = [
            Lane(config.batch_size, config.maximum_batching_window, config.payload_limit)
            for _ in range(config.parallelization_factor)
        ]
        self.checkpoint = Checkpoint()
        self.committed: Record | None = None
        self.inflight = 0
        # Streams keep one batch per lane buffered ahead; queue pollers take only what they can
        # invoke, so one poller does not hoard messages other pollers could run.
        self.max_inflight = (
            config.batch_size
            if self.queue
            else config.batch_size * (config.parallelization_factor + 1)
        )
        self.fetch_wait: float = getattr(source, "fetch_wait", FETCH_WAIT)
        self._room = asyncio.Event()
        self._dirty = asyncio.Event()
        self._stop = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._committer: asyncio.Task[None] | None = None
        self._lane_tasks: list[asyncio.Task[None]] = []

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
        try:
            await self._commit_once()
        except Exception as exc:  # the next owner replays from the last commit: at-least-once
            log.error(
                "final commit failed",
                extra={"partition": self.partition, "error": repr(exc)},
            )

    async def _poll(self) -> None:
        source = self.source
        matches = self.matches
        view = source.filter_view
        checkpoint = self.checkpoint
        failures = 0
        while True:
            while self.inflight >= self.max_inflight:
                self._room.clear()
                await self._room.wait()
            try:
                records = await source.fetch(
                    self.partition, self.max_inflight - self.inflight, self.fetch_wait
                )
                failures = 0
            except SourceError:
                raise
            except Exception as exc:  # a transient fetch error: back off, keep the partition
                log.warning(
                    "fetch failed; retrying",
                    extra={"partition": self.partition, "error": repr(exc)},
                )
                await asyncio.sleep(retry_delay(failures, 0.1, 10.0))
                failures += 1
                continue
            if not records:
                continue
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
        if keep:
            self._route(Chunk(keep), keep, (0, len(keep)))

    def _route(self, chunk: Chunk, records: list[Record], indexes: Indexes) -> None:
        """Hand records to lanes: all to one lane, or by key so one key stays in one lane."""
        self.inflight += len(records)
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
        outcome = self.outcome
        limit = self.payload_limit
        stop = self._stop
        while not stop.is_set():
            lane.busy = False
            records, portions = await lane.next_batch()
            lane.busy = True
            try:
                if len(records) == 1 and records[0].size > limit:
                    await outcome.reject_oversized(self.partition, records[0], stop)
                else:
                    await outcome.settle(self.partition, records, stop)
            except Abandoned:
                return
            self.inflight -= len(records)
            self._room.set()
            if not self.queue and self.checkpoint.settle(portions):
                self._dirty.set()
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
                log.warning(
                    "commit failed; retrying",
                    extra={"partition": self.partition, "error": repr(exc)},
                )
                self._dirty.set()
                await asyncio.sleep(retry_delay(failures, 0.1, 10.0))
                failures += 1

    async def _commit_once(self) -> None:
        position = self.checkpoint.position
        if position is not None and position is not self.committed:
            assert self._stream is not None, "a queue source has no checkpoint to commit"
            await self._stream.commit(self.partition, position)
            self.committed = position
