"""Reading one shard the source holds, for Kinesis and DynamoDB Streams alike.

A :class:`_ShardReader` reads its shard with GetShardIterator/GetRecords:

- at most ``max_calls_per_second`` GetRecords calls per shard (Kinesis allows 5, shared by every
  consumer of the shard; every source of this process reading a shard shares one pacer), with
  exponential backoff on ProvisionedThroughputExceededException and other throttles, logged at
  a bounded rate (they can repeat several times a second);
- one GetRecords response is buffered, so the engine's small fetches cost no extra calls;
- an expired iterator is renewed after the last record read (AFTER_SEQUENCE_NUMBER), and a new
  lease starts after its checkpoint; the mapping's starting_position applies only to a shard
  without one;
- a shard whose GetRecords returns no NextShardIterator is finished once its last record is
  checkpointed (:meth:`_ShardReader.done`); :mod:`._stream` then ends its lease.

The reader sees its source only through :class:`_ShardSource`, so this module stands apart from
the lease and discovery machinery of :mod:`._stream` (and imports nothing of it).
:class:`ShardMetrics`, what a reader reports, is public (re-exported by the package).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import ClientError

from streamfn.backoff import retry_delay
from streamfn.errors import SourceError
from streamfn.leases import TRIM_HORIZON, Lease
from streamfn.record import Record

from .._aws import refusal
from .._retrylog import RetryLog

log = logging.getLogger("streamfn.kinesis")

#: Errors after which a shard's reader waits (exponential backoff) before its next call.
THROTTLES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "ThrottlingException",
        "KMSThrottlingException",
        "RequestLimitExceeded",
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
    }
)
_NOT_FOUND = "ResourceNotFoundException"
_BACKOFF_BASE = 0.5  # seconds
_BACKOFF_CAP = 10.0

Position = tuple[str, Any]  # (ShardIteratorType, sequence number or timestamp)


@dataclass(slots=True)
class ShardMetrics:
    """What a shard's reader reports, per shard this worker holds."""

    #: Kinesis's MillisBehindLatest from the last GetRecords (None for DynamoDB Streams).
    millis_behind_latest: int | None = None
    #: Lambda's IteratorAge: when the last GetRecords returned records, how long before it the
    #: last of them arrived in the stream; 0 once a GetRecords finds the shard caught up. AWS
    #: measures it when it reads a batch, and so does the reader: while the shard's records
    #: wait on the function, nothing is read and the age stays where it was.
    iterator_age_ms: int = 0
    get_records_calls: int = 0
    throttles: int = 0
    records: int = 0


class _Pacer:
    """The next free GetRecords slot of one shard."""

    __slots__ = ("interval", "next_at")

    def __init__(self, calls_per_second: float) -> None:
        self.interval = 1.0 / calls_per_second
        self.next_at = 0.0


#: One pacer per (stream ARN, shard) for the whole process: the limit counts every consumer.
_PACERS: dict[tuple[str, str], _Pacer] = {}


def _pacer(stream_arn: str, shard: str, calls_per_second: float) -> _Pacer:
    key = (stream_arn, shard)
    pacer = _PACERS.get(key)
    if pacer is None:
        pacer = _PACERS[key] = _Pacer(calls_per_second)
    return pacer


class _ShardSource(Protocol):
    """What a shard reader needs of the source that holds its shard (a ``_StreamSource``)."""

    stream_arn: str
    max_calls_per_second: float
    idle_interval: float
    #: Where a shard without a checkpoint starts: the mapping's starting_position.
    _start: Position

    def describe(self) -> str: ...

    async def _shard_iterator(self, shard: str, position: Position) -> str: ...

    async def _get_records(self, iterator: str) -> tuple[list[Any], str | None, int | None]: ...

    def _records(self, shard: str, raw: list[Any]) -> list[Record]: ...

    def _finish(self, shard: str) -> None:
        """The shard was read to its end and checkpointed."""


class _ShardReader:
    """Reads one held shard: pacing, backoff, iterator renewal, a one-response buffer, and the
    end of a closed shard."""

    def __init__(self, source: _ShardSource, lease: Lease, metrics: ShardMetrics) -> None:
        self.source = source
        self.shard = lease.key
        self.checkpoint = lease.checkpoint
        self.metrics = metrics
        self.pacer = _pacer(source.stream_arn, lease.key, source.max_calls_per_second)
        self.iterator: str | None = None
        self.position: int | None = None  # sequence number of the last record read
        self.delivered: int | None = None  # ... and of the last handed to the engine
        self.committed: int | None = None
        self.ended = False
        self._buffer: list[Record] = []
        self._next = 0
        self._not_before = 0.0
        self._failures = 0
        self._read_failures = RetryLog(
            log, "reading the shard failed", source=source.describe(), shard=lease.key
        )

    def done(self) -> bool:
        """Read to the end, and everything read is checkpointed."""
        return (
            self.ended
            and self._next >= len(self._buffer)
            and (self.delivered is None or self.committed == self.delivered)
        )

    async def read(self, max_records: int, timeout: float) -> Sequence[Record]:
        if self._next < len(self._buffer):
            return self._take(max_records)
        loop = asyncio.get_running_loop()
        now = loop.time()
        at = max(now, self._not_before, self.pacer.next_at)
        if self.ended or at - now > timeout:
            await asyncio.sleep(timeout)
            return ()
        self.pacer.next_at = at + self.pacer.interval
        if at > now:
            await asyncio.sleep(at - now)
        self._buffer = await self._get_records(loop)
        self._next = 0
        if self.done():
            self.source._finish(self.shard)
        return self._take(max_records)

    def _take(self, max_records: int) -> Sequence[Record]:
        start = self._next
        out = self._buffer[start : start + max_records]
        if out:
            self._next = start + len(out)
            self.delivered = out[-1].offset
        return out

    def _start(self) -> Position:
        if self.position is not None:
            return "AFTER_SEQUENCE_NUMBER", str(self.position)
        if self.checkpoint is None:
            return self.source._start
        if self.checkpoint == TRIM_HORIZON:
            return TRIM_HORIZON, None
        return "AFTER_SEQUENCE_NUMBER", self.checkpoint

    async def _get_records(self, loop: asyncio.AbstractEventLoop) -> list[Record]:
        source, metrics = self.source, self.metrics
        metrics.get_records_calls += 1
        try:
            if self.iterator is None:
                self.iterator = await source._shard_iterator(self.shard, self._start())
            raw, self.iterator, behind = await source._get_records(self.iterator)
        except ClientError as exc:
            if not self._failed(exc, loop):
                raise
            return []
        self._failures = 0
        self._read_failures.succeeded()
        records = source._records(self.shard, raw)
        metrics.millis_behind_latest = behind
        if records:
            self.position = records[-1].offset
            metrics.records += len(records)
            metrics.iterator_age_ms = max(0, int((time.time() - records[-1].timestamp) * 1000))
        elif not behind:
            metrics.iterator_age_ms = 0
            self._not_before = loop.time() + source.idle_interval
        if self.iterator is None:
            self.ended = True
            log.info("shard ended", extra={"source": source.describe(), "shard": self.shard})
        return records

    def _failed(self, exc: Any, loop: asyncio.AbstractEventLoop) -> bool:
        """Handle a GetShardIterator/GetRecords error the reader can recover from."""
        code = exc.response.get("Error", {}).get("Code", "")
        refused = refusal(exc)
        if refused is not None:  # no retry fixes it: the mapping is disabled
            raise SourceError(
                f"{self.source.describe()}: AWS refused access to shard {self.shard} ({refused})"
            ) from exc
        if code == "ExpiredIteratorException":  # unused for 5 minutes: records waited that long
            log.info(
                "shard iterator expired; renewing it after the last record read",
                extra={"source": self.source.describe(), "shard": self.shard},
            )
            self.iterator = None
            return True
        if (
            code in THROTTLES
            or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500
        ):
            self.metrics.throttles += 1
            delay = retry_delay(self._failures, _BACKOFF_BASE, _BACKOFF_CAP)
            self._not_before = loop.time() + delay
            self._failures += 1
            self._read_failures.failed(exc, f"retrying in {delay:.2f} s", error_type=code)
            return True
        if code == _NOT_FOUND:  # trimmed past the retention period: nothing left to read
            log.warning(
                "shard no longer exists",
                extra={"source": self.source.describe(), "shard": self.shard},
            )
            self.iterator = None
            self.ended = True
            return True
        return False
