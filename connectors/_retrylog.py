"""The lines of a failure a connector retries by itself (a throttled GetRecords, a broker that
is away, a gauge that cannot be read), at a bounded rate: such a failure can repeat every second
for hours, and one line per failure would flood the log while none would hide it.

As the engine's failure lines do (:mod:`streamfn.failures`), the first failure is written in
full (``errorType``, ``errorMessage`` and what happens next); the next ones are counted until
``interval`` seconds have passed since that line, and then a summary carries their count
(``repeated``) and the last one's fields. The next failure or the next success after the
interval writes the summary. The first success after a written failure says so in one line,
which carries the failures counted since (``repeated``). So the ``repeated`` counts add up to
the failures (a first line counts one), except those of the last interval when the subject
stops. A failure that never stops writes one line a minute; one that comes and goes writes at
most two.

Internal: shared by the connector packages; nothing here is public.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any


class RetryLog:
    """The lines of one kind of retried failure of one subject (a shard, a consumer, a queue).

    ``what`` names the failed operation; ``context`` goes into every line; failures are
    written at ``level`` (WARNING: retried, nothing lost) and a recovery at INFO. ``interval``
    and ``clock`` (monotonic seconds) may be changed, e.g. to pin the bound in a test. Call
    :meth:`failed` for each failure and :meth:`succeeded` after each success (it costs an
    attribute check while nothing is owed).

    Example::

        failures = RetryLog(log, "cannot read the queue depth", queue="orders")
        try:
            depth = await read_depth()
        except ClientError as exc:
            failures.failed(exc, "the gauge keeps its last value; reading again in 15 s")
        else:
            failures.succeeded()
    """

    def __init__(
        self,
        log: logging.Logger,
        what: str,
        *,
        level: int = logging.WARNING,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        **context: Any,
    ) -> None:
        self._log = log
        self._level = level
        self._what = what
        self.interval = interval
        self.clock = clock
        self._context = context
        self._written = -math.inf  # monotonic time of the last failure line
        self._count = 0  # failures counted since that line, not written yet
        self._fields: dict[str, Any] = {}  # the last counted failure's
        self._then = ""  # ... and what happened next
        self._unresolved = False  # a failure line was written and no success since

    def failed(self, error: BaseException, then: str, *, error_type: str | None = None) -> None:
        """Write this failure, or count it into the next summary. ``then`` says what happens
        next (``"retrying in 2 s"``); ``error_type`` replaces the exception's class name when
        it says more (an AWS error code rather than ``ClientError``)."""
        now = self.clock()
        self._fields = {
            **self._context,
            "errorType": error_type or type(error).__name__,
            "errorMessage": str(error),
        }
        self._then = then
        if self._count or now < self._written + self.interval:
            self._count += 1
            if now >= self._written + self.interval:
                self._summarise(now)
            return
        self._log.log(self._level, f"{self._what}; {then}", extra=self._fields)
        self._written = now
        self._unresolved = True

    def succeeded(self) -> None:
        """The operation worked: write the summary if one is due, and say it recovered once
        after a written failure."""
        if not (self._count or self._unresolved):
            return
        now = self.clock()
        if self._count and now >= self._written + self.interval:
            self._summarise(now)
        if self._unresolved:
            self._log.info(
                f"{self._what}: recovered", extra={**self._context, "repeated": self._count}
            )
            self._unresolved = False
            self._count = 0

    def _summarise(self, now: float) -> None:
        seconds = now - self._written
        self._log.log(
            self._level,
            f"{self._what}; {self._then} [{self._count} times in {seconds:.0f} s]",
            extra={**self._fields, "repeated": self._count, "seconds": round(seconds, 1)},
        )
        self._count = 0
        self._written = now
        self._unresolved = True
