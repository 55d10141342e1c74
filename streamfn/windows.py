"""Tumbling windows (Kinesis and DynamoDB Streams): aggregation state carried between
invocations of one shard, as Lambda's ``TumblingWindowInSeconds`` does.

Records fall into windows of ``tumbling_window`` seconds aligned to the epoch, by their arrival
timestamp; a batch is split where the window changes, and a window never goes back (a late
record joins the open window). Each invocation carries the window, the state returned by the
previous invocation of that window (``{}`` at first) and the shard; a response without
``state`` is a failed invocation, and the retry policy applies. The final invocation of a
window has no records and ``isFinalInvokeForWindow``; it comes when the next window's records
arrive, or once the window's end passed and the shard stayed idle for ``idle_grace`` seconds
(AWS waits up to 2 minutes). A state over 1 MB ends the window early
(``isWindowTerminatedEarly``) and its remaining records start from ``{}``.

Where the source keeps window state (:class:`~streamfn.source.KeepsWindowState`: Kinesis and
DynamoDB Streams, in the shard's lease) the open window travels with the checkpoint, as Lambda
keeps state per shard whichever poller reads it:

- every settled batch leaves a snapshot of (window, state) keyed by its last record; a commit
  of position P stores the snapshot of the last batch ending at or before P (commits are
  asynchronous and coalesced, so a lane may already have moved the state on; records filtered
  out after that batch change nothing). With ``parallelization_factor`` > 1 batches settle out
  of order and the latest snapshot is stored: it counts every record up to P, and possibly
  some after it, which run again after a crash (at least once);
- a crash, a restart or a handover resumes the stored window: records of it (and late ones)
  join it with its state; if its end passed while nobody read the shard, it gets its final
  invocation (not an early one) as soon as the shard starts again, or when the next window's
  records arrive. A graceful stop therefore does not end the window: the next owner does;
- a shard read to its end ends its window early (``isWindowTerminatedEarly``), as Lambda closes
  it at the end of a shard; children start fresh;
- a window is stored as zlib-compressed JSON; one larger than the source's ``window_limit``
  (DynamoDB lease items hold 400 KB) is logged once and kept in memory only, as before: a
  graceful stop ends it early, a crash loses its state.

Without such a source state lives in memory, and a stopping shard's open window gets one final
invocation with ``isWindowTerminatedEarly``, so the state of records already checkpointed is not
dropped; the next owner starts a new window from the checkpoint.

The engine has no hook for time passing on an idle shard, so each open window has a small timer
task. They belong to the outcome policy: :meth:`WindowedOutcome.drain`, which the mapping awaits
once its partitions are revoked, lets them finish (within ``shutdown_timeout``, then cancels
them), so no final invocation outlives the mapping.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from .backoff import retry_delay
from .dispatch import InvocationResult
from .outcome import INVALID_RESPONSE, Abandoned, Failure, StreamOutcome, response_error
from .record import Batch, Record
from .source import KeepsWindowState

log = logging.getLogger("streamfn.windows")

#: AWS: "a maximum of 1 MB per shard. If it exceeds that size, Lambda terminates the window early."
STATE_LIMIT = 1024 * 1024
#: Windows whose JSON is larger than this are compressed off the event loop.
_COMPRESS_INLINE = 64 * 1024
#: Snapshots a partition holds while its commits trail; beyond, the two oldest merge.
_PENDING_CAP = 64


class Window(NamedTuple):
    """Epoch seconds; ``end`` is exclusive."""

    start: float
    end: float


class WindowBatch(Batch):
    """The native-format event of a windowed invocation: the records plus Lambda's window
    fields in snake_case. Return ``{"state": ...}`` (optionally with ``batchItemFailures``)."""

    __slots__ = (
        "event_source_arn",
        "is_final_invoke_for_window",
        "is_window_terminated_early",
        "shard_id",
        "state",
        "window",
    )

    def __init__(
        self,
        records: list[Record],
        partition: str,
        source: str,
        *,
        window: Window,
        state: Any,
        event_source_arn: str,
        is_final_invoke_for_window: bool,
        is_window_terminated_early: bool,
    ) -> None:
        super().__init__(records, partition, source)
        self.window = window
        self.state = state
        self.shard_id = partition
        self.event_source_arn = event_source_arn
        self.is_final_invoke_for_window = is_final_invoke_for_window
        self.is_window_terminated_early = is_window_terminated_early


@dataclass(slots=True, eq=False)
class _Open:
    """The open window of one shard, tied to the partition runner that opened it."""

    window: Window
    stop: asyncio.Event
    state: Any = field(default_factory=dict)
    #: ``state`` as JSON, as measured against STATE_LIMIT
    encoded: bytes = b"{}"
    touched: float = 0.0
    oversized: bool = False


_Run = tuple[Window, list[Record]]
#: A window as it stood after a batch: (window, its state as JSON), or None when none is open.
Snapshot = tuple[Window, bytes] | None


def encode_window(window: Window, state: bytes) -> bytes:
    """The JSON of a window kept with a checkpoint (stored zlib-compressed), ``state`` being
    the state's JSON embedded as is; a version field lets a later format tell it apart."""
    start, end = orjson.dumps(window.start), orjson.dumps(window.end)
    return b'{"v":1,"start":%s,"end":%s,"state":%s}' % (start, end, state)


def decode_window(blob: bytes) -> tuple[Window, Any]:
    """The window and state of stored bytes (:func:`encode_window`'s, compressed);
    ``ValueError`` when they are not such bytes."""
    try:
        value = orjson.loads(zlib.decompress(blob))
    except (zlib.error, orjson.JSONDecodeError) as exc:
        raise ValueError(f"not a stored window: {exc}") from None
    if not isinstance(value, dict) or value.get("v") != 1:
        raise ValueError("not a stored window (version 1)")
    return Window(float(value["start"]), float(value["end"])), value["state"]


class WindowKeeper:
    """One partition runner's side of a kept window: the snapshots its batches left since its
    last commit, and what that commit stored. The runner asks :meth:`pick` for the snapshot
    that goes with the position it commits, and stores :meth:`encode` of it."""

    def __init__(
        self,
        policy: WindowedOutcome,
        partition: str,
        source: KeepsWindowState,
        stop: asyncio.Event,
        wake: Callable[[], None],
        resumed: Snapshot,
    ) -> None:
        self.policy = policy
        self.partition = partition
        self.source = source
        self.stop = stop
        self.parallel = policy.config.parallelization_factor > 1
        #: (last offset of a settled batch, the window after it), in settle order
        self.pending: deque[tuple[int, Snapshot]] = deque()
        #: the snapshot at the position picked last
        self.base: Snapshot = resumed
        #: the snapshot the source holds (its checkpoint's window)
        self.stored: Snapshot = resumed
        self._wake = wake
        self._last: int | None = None
        self._encoded: tuple[Snapshot, bytes | None] = (None, None)
        self._warned: Window | None = None

    def settled(self, offset: int, snapshot: Snapshot) -> None:
        self._last = offset
        pending = self.pending
        pending.append((offset, snapshot))
        if len(pending) > _PENDING_CAP:  # commits stalled: bound what is held, erring on
            first, _ = pending.popleft()  # counting a batch twice after a crash, not zero times
            _, newer = pending.popleft()
            pending.appendleft((first, newer))

    def closed(self) -> None:
        """The open window closed: its final invocation was made (or given up on by the
        retry policy). The checkpoint is written without it, even when no record moves the
        checkpoint (a window ended on an idle shard), so no restart makes the final again."""
        if self._last is None:
            self.base = None
        else:
            self.pending.append((self._last, None))
        self._wake()

    def pick(self, position: Record | None) -> Snapshot:
        """The window that goes with a commit of ``position``."""
        pending = self.pending
        if self.parallel:
            if pending:
                self.base = pending[-1][1]
                pending.clear()
        elif position is not None:
            offset = position.offset
            while pending and pending[0][0] <= offset:
                self.base = pending.popleft()[1]
        return self.base

    async def encode(self, snapshot: Snapshot) -> bytes | None:
        """The bytes to store for ``snapshot``; None for no window, and for one over the
        source's ``window_limit`` (logged once per window): it stays in memory only."""
        if snapshot is None:
            return None
        if self._encoded[0] is snapshot:
            return self._encoded[1]
        window, state = snapshot
        raw = encode_window(window, state)
        if len(raw) < _COMPRESS_INLINE:
            blob: bytes | None = zlib.compress(raw)
        else:
            blob = await asyncio.to_thread(zlib.compress, raw)
        assert blob is not None
        limit = self.source.window_limit
        if len(blob) > limit:
            if self._warned != window:
                self._warned = window
                self.policy.too_large(self.partition, window, len(blob), limit)
            blob = None
        self._encoded = (snapshot, blob)
        return blob


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _window_error(result: InvocationResult) -> dict[str, Any] | None:
    """None when the response carries a state, as Lambda requires; else the error object of
    the failure line (the handler's own, or one saying what came back instead)."""
    if result.error is not None:
        return result.error
    value = result.value
    if isinstance(value, Mapping) and "state" in value:
        return None
    got = "a mapping without 'state'" if isinstance(value, Mapping) else type(value).__name__
    message = f"a window invocation must return {{'state': ...}}, not {got}"
    return response_error(INVALID_RESPONSE, message)


class WindowedOutcome(StreamOutcome):
    """The stream outcome policy with tumbling windows (``tumbling_window`` > 0)."""

    #: Seconds an idle shard's window stays open after its end, for late arrivals.
    idle_grace = 2.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.width = self.config.tumbling_window
        source = self.source
        #: the source when it keeps windows with its checkpoints
        self.keeps = source if isinstance(source, KeepsWindowState) else None
        self._open: dict[str, _Open] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._keepers: dict[str, WindowKeeper] = {}
        #: every window timer, with the window it watches
        self._timers: dict[asyncio.Task[None], _Open] = {}

    def attach(
        self, partition: str, stop: asyncio.Event, wake: Callable[[], None]
    ) -> WindowKeeper | None:
        """Called as a partition runner is built: when the source keeps windows, resume the
        one stored with the partition's checkpoint, and return the keeper the runner commits
        through (None: the source keeps none). ``wake`` asks the runner to commit."""
        keeps = self.keeps
        if keeps is None:
            return None
        old = self._open.pop(partition, None)
        if old is not None and old.stop is not stop:
            old.stop.set()  # an earlier runner's window: its timer ends; the lease has the truth
        resumed = self._resume(partition, keeps.window_state(partition))
        keeper = self._keepers[partition] = WindowKeeper(
            self, partition, keeps, stop, wake, resumed
        )
        if resumed is not None:
            window, encoded = resumed
            # touched now: its records still to replay arrive within idle_grace and join it
            current = _Open(window, stop, orjson.loads(encoded), encoded, time.time())
            self._open[partition] = current
            self._start_timer(partition, current)
        return keeper

    def _resume(self, partition: str, blob: bytes | None) -> Snapshot:
        if blob is None:
            return None
        try:
            window, state = decode_window(blob)
        except ValueError as exc:
            log.warning(
                f"the stored window cannot be read ({exc}); starting a new window",
                extra={"function": self.function.name, "partition": partition},
            )
            return None
        return window, orjson.dumps(state)

    def too_large(self, partition: str, window: Window, size: int, limit: int) -> None:
        """Said once per window: it is kept in memory only."""
        log.warning(
            f"window state is {size} bytes compressed, over the {limit} the source keeps with "
            "its checkpoint: this window is kept in memory only (a crash loses its state; a "
            "stop ends it early)",
            extra={
                "function": self.function.name,
                "partition": partition,
                "window": _iso(window.start),
                "size": size,
                "limit": limit,
            },
        )

    async def drain(self) -> None:
        """Finish every window timer, once the mapping revoked its partitions: each one ends
        its window as a stopped partition does (a final invocation, or kept with the
        checkpoint); those still running after ``shutdown_timeout`` are cancelled. A runner
        cut short by a source failure never set its stop event, so it is set here."""
        if not self._timers:
            return
        for current in self._timers.values():
            current.stop.set()
        _, late = await asyncio.wait(list(self._timers), timeout=self.config.shutdown_timeout)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)

    async def settle(self, partition: str, records: list[Record], stop: asyncio.Event) -> None:
        async with self._lock(partition):
            current = self._open.get(partition)
            if current is not None and current.stop is not stop:  # a new runner starts afresh
                current = None
            for window, run in self._runs(records, current):
                if current is not None and current.window != window:
                    await self._finish(partition, current, early=False)
                    current = None
                if current is None:
                    current = self._begin(partition, window, stop)
                current.touched = time.time()
                await super().settle(partition, run, stop)
                if current.oversized:
                    await self._finish(partition, current, early=True)
                    current = None
            keeper = self._keepers.get(partition)
            if keeper is not None and keeper.stop is stop:  # the window after this batch
                last = records[-1].offset
                if current is not None and self._open.get(partition) is current:
                    keeper.settled(last, (current.window, current.encoded))
                else:
                    keeper.settled(last, None)

    def _runs(self, records: list[Record], current: _Open | None) -> list[_Run]:
        """The batch cut where the window changes; a window never goes back."""
        width = self.width
        floor = current.window.start if current is not None else float("-inf")
        runs: list[_Run] = []
        for rec in records:
            start = max(rec.timestamp // width * width, floor)
            if runs and runs[-1][0].start == start:
                runs[-1][1].append(rec)
            else:
                runs.append((Window(start, start + width), [rec]))
                floor = start
        return runs

    def _lock(self, partition: str) -> asyncio.Lock:
        """What serialises a partition's batches and its window's final invocations."""
        lock = self._locks.get(partition)
        if lock is None:
            lock = self._locks[partition] = asyncio.Lock()
        return lock

    def _begin(self, partition: str, window: Window, stop: asyncio.Event) -> _Open:
        current = self._open[partition] = _Open(window, stop)
        self._start_timer(partition, current)
        return current

    def _start_timer(self, partition: str, current: _Open) -> None:
        task = asyncio.get_running_loop().create_task(self._watch(partition, current))
        self._timers[task] = current
        task.add_done_callback(self._timer_done)

    def _timer_done(self, task: asyncio.Task[None]) -> None:
        self._timers.pop(task, None)

    def _closed(self, partition: str, current: _Open) -> None:
        keeper = self._keepers.get(partition)
        if keeper is not None and keeper.stop is current.stop:
            keeper.closed()

    async def _invoke(self, partition: str, batch: list[Record]) -> InvocationResult:
        return await self._call(partition, batch, self._open[partition], final=False, early=False)

    async def _call(
        self, partition: str, batch: list[Record], current: _Open, *, final: bool, early: bool
    ) -> InvocationResult:
        arn = getattr(self.source, "stream_arn", None) or self.source.describe()
        event: Any
        if self.lambda_format:
            event = self.source.lambda_event(partition, batch)
            event["window"] = {"start": _iso(current.window.start), "end": _iso(current.window.end)}
            event["state"] = current.state
            event["shardId"] = partition
            event["eventSourceARN"] = arn
            event["isFinalInvokeForWindow"] = final
            event["isWindowTerminatedEarly"] = early
        else:
            event = WindowBatch(
                batch,
                partition,
                self.source.kind,
                window=current.window,
                state=current.state,
                event_source_arn=arn,
                is_final_invoke_for_window=final,
                is_window_terminated_early=early,
            )
        return await self.function.invoke(event)

    def _failure(
        self, partition: str, batch: list[Record], result: InvocationResult
    ) -> Failure | None:
        error = _window_error(result)
        if error is not None:
            return -1, error
        state = result.value["state"]
        if state is None:
            state = {}
        try:
            encoded = orjson.dumps(state)
        except TypeError as exc:  # a state that is not JSON cannot be carried
            return -1, response_error(INVALID_RESPONSE, f"the window state is not JSON: {exc}")
        failure = super()._failure(partition, batch, result)
        if failure is None or failure[0] != -1:
            current = self._open[partition]
            current.state = state
            current.encoded = encoded
            current.oversized = len(encoded) > STATE_LIMIT
        return failure

    async def _finish(self, partition: str, current: _Open, *, early: bool) -> None:
        """The final invocation, retried like a batch; the window closes either way. One cut
        short by its partition stopping stays in the kept window, if any: its next owner
        makes it again."""
        stats = self.stats.partition(partition)
        retries = 0
        ended = False
        try:
            while True:
                result = await self._call(partition, [], current, final=True, early=early)
                self._count(stats, 0)
                error = _window_error(result)
                if error is None:
                    ended = True
                    return
                stats.failed_invocations += 1
                if self.max_retries != -1 and retries >= self.max_retries:
                    self._final_failed(partition, result, error, retries, "drop the window")
                    ended = True
                    return
                delay = retry_delay(
                    retries, self.config.retry_base_delay, self.config.retry_max_delay
                )
                self._final_failed(partition, result, error, retries, f"retry in {delay:.3g} s")
                await self._pause(delay, current.stop)
                stats.retries += 1
                retries += 1
        finally:
            if self._open.get(partition) is current:
                del self._open[partition]
                if ended:
                    self._closed(partition, current)

    async def _watch(self, partition: str, current: _Open) -> None:
        """Close ``current`` once its end passed on an idle shard, or early when its
        partition stops."""
        try:
            while self._open.get(partition) is current:
                delay = max(current.window.end, current.touched) + self.idle_grace - time.time()
                if current.stop.is_set():
                    await self._close_stopped(partition, current)
                    return
                if delay <= 0:
                    async with self._lock(partition):
                        if self._open.get(partition) is current:
                            await self._finish(partition, current, early=False)
                    return
                try:
                    async with asyncio.timeout(delay):
                        await current.stop.wait()
                except TimeoutError:
                    pass
        except Abandoned:
            return
        except Exception:  # never lose a timer's error silently
            log.exception(
                "window timer failed",
                extra={"function": self.function.name, "partition": partition},
            )

    async def _close_stopped(self, partition: str, current: _Open) -> None:
        """A stopped partition's window: kept with the checkpoint when the source keeps it
        (the runner's last commit stores it; the next owner resumes it), else ended by one
        final invocation, with no retries since nothing waits for it."""
        async with self._lock(partition):
            if self._open.get(partition) is not current:
                return
            del self._open[partition]
            keeper = self._keepers.get(partition)
            if keeper is not None and keeper.stop is not current.stop:
                keeper = None  # a later runner's
            elif keeper is not None:
                del self._keepers[partition]  # the runner holds it for its last commit
            if (
                keeper is not None
                and not keeper.source.finished(partition)
                and await keeper.encode((current.window, current.encoded)) is not None
            ):
                return
            if keeper is not None:
                keeper.closed()
            result = await self._call(partition, [], current, final=True, early=True)
            stats = self.stats.partition(partition)
            self._count(stats, 0)
            error = _window_error(result)
            if error is None:
                return
            stats.failed_invocations += 1
            self._final_failed(partition, result, error, 0, "no retry: its shard stopped")

    def _final_failed(
        self,
        partition: str,
        result: InvocationResult,
        error: dict[str, Any],
        retries: int,
        then: str,
    ) -> None:
        self._report(
            partition, [], result.request_id, error, retries + 1, then, "final window invocation"
        )
