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

State lives in memory. When a shard stops (handed over, shut down, or read to its end) its open
window gets one final invocation with ``isWindowTerminatedEarly``, so the state of records
already checkpointed is not dropped; the next owner starts a new window from the checkpoint.
The engine has no hook for time passing on an idle shard, so each open window has a small
timer task, owned here, that ends with the window or with its partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from .backoff import retry_delay
from .dispatch import InvocationResult
from .outcome import INVALID_RESPONSE, Abandoned, Failure, StreamOutcome, response_error
from .record import Batch, Record

log = logging.getLogger("streamfn.windows")

#: AWS: "a maximum of 1 MB per shard. If it exceeds that size, Lambda terminates the window early."
STATE_LIMIT = 1024 * 1024


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
    touched: float = 0.0
    oversized: bool = False


_Run = tuple[Window, list[Record]]


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
        self._open: dict[str, _Open] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._timers: set[asyncio.Task[None]] = set()

    async def settle(self, partition: str, records: list[Record], stop: asyncio.Event) -> None:
        async with self._locks.setdefault(partition, asyncio.Lock()):
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

    def _begin(self, partition: str, window: Window, stop: asyncio.Event) -> _Open:
        current = self._open[partition] = _Open(window, stop)
        task = asyncio.get_running_loop().create_task(self._watch(partition, current))
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)
        return current

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
            size = len(orjson.dumps(state))
        except TypeError as exc:  # a state that is not JSON cannot be carried
            return -1, response_error(INVALID_RESPONSE, f"the window state is not JSON: {exc}")
        failure = super()._failure(partition, batch, result)
        if failure is None or failure[0] != -1:
            current = self._open[partition]
            current.state = state
            current.oversized = size > STATE_LIMIT
        return failure

    async def _finish(self, partition: str, current: _Open, *, early: bool) -> None:
        """The final invocation, retried like a batch; the window closes either way."""
        stats = self.stats.partition(partition)
        retries = 0
        try:
            while True:
                result = await self._call(partition, [], current, final=True, early=early)
                self._count(stats, 0)
                error = _window_error(result)
                if error is None:
                    return
                stats.failed_invocations += 1
                if self.max_retries != -1 and retries >= self.max_retries:
                    self._final_failed(partition, result, error, retries, "drop the window")
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
                    async with self._locks[partition]:
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
        """One final invocation for the window of a stopped partition; no retries, since
        nothing waits for it."""
        async with self._locks[partition]:
            if self._open.get(partition) is not current:
                return
            del self._open[partition]
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
