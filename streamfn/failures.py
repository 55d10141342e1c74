"""The failure lines of an event source mapping, at a bounded rate.

Every failure must be visible, yet a handler failing a thousand times a minute must not write a
thousand lines. So, per partition and kind of failure (a failed invocation, a discard, an
on-failure delivery, a destination, fetch or commit error), the first one is written in full,
and the next ones are counted until ``interval`` seconds have passed since that line; then a
summary line carries their count and the last one's fields. The next failure of that kind, the
next settled batch of the partition, or the partition stopping writes the summary, whichever
comes first after the interval: lines of one kind on one partition are at least ``interval``
apart, except the one written as the partition stops. Nothing is lost: the ``repeated`` counts
of a kind's lines add up to its failures.

Only failures call in here. A settled batch reads :attr:`FailureLog.pending` (an int) and calls
:meth:`FailureLog.progressed` only while a summary is owed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Seconds between two lines of one kind of failure on one partition.
SUMMARY_INTERVAL = 60.0

log = logging.getLogger("streamfn.failures")


@dataclass(slots=True)
class _Kind:
    """One kind of failure on one partition: when its last line was written, and what has
    happened since."""

    written: float = -math.inf
    count: int = 0
    level: int = logging.ERROR
    message: str = ""
    fields: dict[str, Any] = field(default_factory=dict)


class FailureLog:
    """The failure lines of one mapping. ``interval`` and ``clock`` (monotonic seconds) may be
    changed on a mapping's log, e.g. to pin the bound in a test without waiting a minute.

    Example::

        failures = FailureLog("orders", "kafka://broker:9092/orders")
        failures.report("orders-0", "invocation", logging.ERROR, "invocation failed: ...",
                        {"errorType": "ValueError"}, stack_trace=[...])
    """

    def __init__(
        self,
        function: str,
        mapping: str,
        *,
        interval: float = SUMMARY_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.function = function
        self.mapping = mapping
        self.interval = interval
        self.clock = clock
        #: kinds (over all partitions) with failures counted but not written yet
        self.pending = 0
        self._partitions: dict[str, dict[str, _Kind]] = {}

    def report(
        self,
        partition: str,
        kind: str,
        level: int,
        message: str,
        fields: dict[str, Any],
        stack_trace: list[str] | None = None,
    ) -> None:
        """Write this failure, or count it into the next summary of its kind. A stack trace
        goes on full lines only."""
        now = self.clock()
        kinds = self._partitions.setdefault(partition, {})
        state = kinds.get(kind)
        if state is None:
            state = kinds[kind] = _Kind()
        if now < state.written + self.interval or state.count:
            if not state.count:
                self.pending += 1
            state.count += 1
            state.level, state.message, state.fields = level, message, fields
            if now >= state.written + self.interval:
                self._summarise(partition, state, now)
            return
        extra: dict[str, Any] = {
            "function": self.function,
            "mapping": self.mapping,
            "partition": partition,
        }
        extra.update(fields)
        if stack_trace is not None:
            extra["stackTrace"] = stack_trace
        log.log(level, message, extra=extra)
        state.written = now

    def progressed(self, partition: str) -> None:
        """A batch of ``partition`` settled: write its summaries that are due."""
        now = self.clock()
        for state in self._partitions.get(partition, {}).values():
            if state.count and now >= state.written + self.interval:
                self._summarise(partition, state, now)

    def closed(self, partition: str) -> None:
        """``partition`` stopped: write what is counted, so no failure goes unreported. It
        starts afresh if it comes back."""
        now = self.clock()
        for state in self._partitions.pop(partition, {}).values():
            if state.count:
                self._summarise(partition, state, now)

    def _summarise(self, partition: str, state: _Kind, now: float) -> None:
        seconds = now - state.written
        extra: dict[str, Any] = {
            "function": self.function,
            "mapping": self.mapping,
            "partition": partition,
        }
        extra.update(state.fields)
        extra["repeated"] = state.count
        extra["seconds"] = round(seconds, 1)
        log.log(
            state.level,
            f"{state.message} [{state.count} times in {seconds:.0f} s]",
            extra=extra,
        )
        self.pending -= 1
        state.count = 0
        state.written = now
