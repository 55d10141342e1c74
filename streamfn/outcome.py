"""What happens after a batch is invoked.

Streams (:class:`StreamOutcome`): success, retry with backoff, bisect, partial batch response
(rewind to the lowest failed record), record age, and the on-failure destination. ``settle``
returns only when every record of the batch has succeeded, been delivered to on_failure, or been
discarded as AWS does without a destination; it raises :class:`Abandoned` when the partition is
stopping, and then nothing of the batch may be committed.

Queues (:class:`QueueOutcome`): one invocation, then the source deletes what succeeded and
releases what failed; retrying is the queue's redelivery, as with Lambda's SQS mappings.

Both count what they do in the partition's stats once per invocation, and report every failure
(with what happens next) to the mapping's :class:`~streamfn.failures.FailureLog`, which writes
it or folds it into a summary. A successful batch costs a few integer additions.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
import uuid
from collections.abc import Mapping, Sequence
from operator import attrgetter
from typing import Any

from . import tracing
from .backoff import retry_delay
from .config import MappingConfig
from .destinations import Destination, failure_record
from .dispatch import Function, InvocationResult
from .failures import FailureLog
from .record import Batch, BatchResult, Record, is_partial_response
from .source import QueueSource, Source
from .stats import MappingStats, PartitionStats

RETRIES_EXHAUSTED = "RetryAttemptsExhausted"
RECORD_AGE_EXCEEDED = "RecordAgeExceeded"
PAYLOAD_TOO_LARGE = "MaximumPayloadSizeExceeded"

#: The errorType of a handler cut by its timeout (:func:`streamfn.dispatch.timeout_object`).
TIMED_OUT = "Sandbox.Timedout"
#: errorTypes of the failure lines for answers that are not errors of the handler: a valid
#: partial batch response, and one the engine cannot honour (the whole batch fails, as on AWS).
ITEM_FAILURES = "BatchItemFailures"
INVALID_RESPONSE = "InvalidBatchResponse"

Failure = tuple[int, dict[str, Any]]

_timestamp = attrgetter("timestamp")


class Abandoned(Exception):
    """The partition stopped while this batch was still unsettled."""


class _InvalidResponse(Exception):
    """A partial batch response Lambda takes as a complete failure; the message says why."""


def response_error(error_type: str, message: str) -> dict[str, Any]:
    """An error object, shaped like Lambda's, for a response the engine counts as a failure."""
    return {"errorType": error_type, "errorMessage": message}


def _failed_indexes(
    source: Source | QueueSource,
    partition: str,
    batch: Sequence[Record],
    value: BatchResult | Mapping[str, Any],
) -> list[int] | None:
    """The indexes in ``batch`` of the records a partial batch response names; None when it
    names none (a success: ``batchItemFailures`` empty, null or absent).

    Raises :class:`_InvalidResponse` for what Lambda takes as a complete failure, whatever the
    other entries name, so that no record is committed on the strength of an answer the engine
    cannot read: ``batchItemFailures`` that is not a list, an entry that is not an object with
    an ``itemIdentifier`` key (a bare identifier included), an identifier that is null, empty,
    or not the source's kind (:meth:`~streamfn.source.Source.identify`), or one naming no
    record of this batch. A :class:`BatchResult` lists identifiers without the object around
    them, or the batch's own records: a record of another batch (an earlier delivery, another
    partition) names nothing here.
    """
    from_result = isinstance(value, BatchResult)
    entries: Sequence[Any]
    if isinstance(value, BatchResult):
        entries = value.failures
    else:
        listed = value.get("batchItemFailures")
        if listed is None:
            return None
        if not isinstance(listed, list):
            raise _InvalidResponse(f"batchItemFailures is a {type(listed).__name__}, not a list")
        entries = listed
    if not entries:
        return None
    where = {rec.offset: i for i, rec in enumerate(batch)}
    indexes = []
    for entry in entries:
        if from_result and isinstance(entry, Record):
            i = where.get(entry.offset)
            if i is None or batch[i] is not entry:
                raise _InvalidResponse(f"{entry!r} is not a record of this batch")
            indexes.append(i)
            continue
        if from_result:
            identifier = entry
        elif not isinstance(entry, Mapping):
            raise _InvalidResponse(f"{entry!r} is not an object with an itemIdentifier")
        elif "itemIdentifier" not in entry:
            raise _InvalidResponse(f"{entry!r} has no itemIdentifier")
        else:
            identifier = entry["itemIdentifier"]
        if identifier is None or (isinstance(identifier, str) and not identifier):
            what = "a null" if identifier is None else "an empty"
            raise _InvalidResponse(f"{what} itemIdentifier in {entry!r}")
        try:
            offset = source.identify(partition, identifier)
        except (ValueError, TypeError) as exc:
            raise _InvalidResponse(f"invalid itemIdentifier in {entry!r}: {exc}") from None
        i = where.get(offset)
        if i is None:
            raise _InvalidResponse(f"itemIdentifier {identifier!r} is not in the batch")
        indexes.append(i)
    return indexes


def _records(n: int) -> str:
    return "1 record" if n == 1 else f"{n} records"


def _error_fields(error: dict[str, Any] | None) -> dict[str, Any]:
    if error is None:
        return {}
    return {"errorType": error["errorType"], "errorMessage": error["errorMessage"]}


class _Policy:
    """What both outcome policies share: the invocation counts and the failure line."""

    def __init__(
        self,
        function: Function,
        config: MappingConfig,
        stats: MappingStats,
        failures: FailureLog,
    ) -> None:
        self.function = function
        self.config = config
        self.lambda_format = config.event_format == "lambda"
        self.report_failures = config.report_batch_item_failures
        self.stats = stats
        self.batch_sizes = stats.batch_sizes
        self.failures = failures

    async def drain(self) -> None:
        """Called by the mapping once every partition is revoked: a policy that runs work of
        its own (the final invocations of tumbling windows) finishes it here, within the
        mapping's ``shutdown_timeout``, so nothing outlives the mapping. Nothing to do here."""

    def _count(self, stats: PartitionStats, records: int) -> None:
        """One invocation of ``records`` records."""
        stats.invocations += 1
        stats.invoked += records
        sizes = self.batch_sizes
        sizes[records] = sizes.get(records, 0) + 1

    def _batch_fields(self, batch: Sequence[Record]) -> dict[str, Any]:
        """The batch as a failure line names it."""
        if not batch:
            return {"records": 0}
        return {
            "firstOffset": batch[0].offset,
            "lastOffset": batch[-1].offset,
            "records": len(batch),
        }

    def _report(
        self,
        partition: str,
        batch: Sequence[Record],
        request_id: str,
        error: dict[str, Any],
        attempt: int | None,
        then: str,
        what: str = "invocation",
    ) -> None:
        """The failure line of one failed invocation; ``then`` says what happens next."""
        error_type = error["errorType"]
        if error_type == TIMED_OUT:
            head = f"{what} timed out after {self.function.timeout:.2f} s"
        else:
            head = f"{what} failed: {error_type}: {error['errorMessage']}"
        fields = {
            **_error_fields(error),
            "requestId": request_id,
            **self._batch_fields(batch),
            "next": then,
        }
        if attempt is not None:
            fields["attempt"] = attempt
        self.failures.report(
            partition,
            "invocation",
            logging.ERROR,
            f"{head}; {then}",
            fields,
            error.get("stackTrace"),
        )


class StreamOutcome(_Policy):
    """The stream outcome policy of one event source mapping."""

    def __init__(
        self,
        function: Function,
        source: Source,
        config: MappingConfig,
        on_failure: Destination | None,
        max_retries: int,
        stats: MappingStats,
        failures: FailureLog,
    ) -> None:
        super().__init__(function, config, stats, failures)
        self.source = source
        self.on_failure = on_failure
        self.max_retries = max_retries
        self.bisect = config.bisect_batch_on_function_error
        self.max_age = config.maximum_record_age

    @property
    def errors(self) -> int:
        """Failed invocations, over every partition."""
        return sum(p.failed_invocations for p in self.stats.partitions.values())

    async def settle(self, partition: str, records: list[Record], stop: asyncio.Event) -> None:
        """Settle ``records`` under their batch span: every attempt and what is given up on.
        Without tracing there is no span, and not entering its no-op context saves a tenth of
        a microsecond per batch."""
        if not tracing.enabled:
            return await self._settle(partition, records, stop)
        with tracing.batch(self.source, partition, records):
            await self._settle(partition, records, stop)

    async def _settle(self, partition: str, records: list[Record], stop: asyncio.Event) -> None:
        stats = self.stats.partition(partition)
        pending: list[tuple[list[Record], int, int]] = [
            (records, 0, 0)
        ]  # (records, retries, invokes)
        while pending:
            batch, retries, invokes = pending.pop()
            if self.max_age != -1:
                batch = await self._drop_expired(partition, batch, invokes, stop)
                if not batch:
                    continue
            result = await self._invoke(partition, batch)
            invokes += 1
            self._count(stats, len(batch))
            failure = self._failure(partition, batch, result)
            if failure is None:
                continue
            stats.failed_invocations += 1
            failed_at, error = failure
            invoked = batch
            if failed_at >= 0:  # a partial response: the records before the lowest failure are done
                batch = batch[failed_at:]
            elif self.bisect and len(batch) > 1:  # splitting does not consume the retry quota
                mid = len(batch) // 2
                then = f"bisect into {mid} + {len(batch) - mid} records"
                self._report(partition, invoked, result.request_id, error, invokes, then)
                stats.bisects += 1
                pending.append((batch[mid:], retries, invokes))
                pending.append((batch[:mid], retries, invokes))
                continue
            if self.max_retries != -1 and retries >= self.max_retries:
                then = self._giving_up()
                self._report(partition, invoked, result.request_id, error, invokes, then)
                await self._give_up(
                    partition, batch, RETRIES_EXHAUSTED, invokes, result, stop, error
                )
                continue
            delay = retry_delay(retries, self.config.retry_base_delay, self.config.retry_max_delay)
            then = f"retry in {delay:.3g} s"
            if failed_at > 0:
                then = f"retry from offset {batch[0].offset} in {delay:.3g} s"
            self._report(partition, invoked, result.request_id, error, invokes, then)
            await self._pause(delay, stop)
            stats.retries += 1
            pending.append((batch, retries + 1, invokes))

    async def reject_oversized(self, partition: str, record: Record, stop: asyncio.Event) -> None:
        """A single record above the payload cap can never be invoked: straight to on_failure."""
        await self._give_up(partition, [record], PAYLOAD_TOO_LARGE, 0, None, stop)

    async def _invoke(self, partition: str, batch: list[Record]) -> InvocationResult:
        event: Any = (
            self.source.lambda_event(partition, batch)
            if self.lambda_format
            else Batch(batch, partition, self.source.kind)
        )
        return await self.function.invoke(event)

    def _failure(
        self, partition: str, batch: list[Record], result: InvocationResult
    ) -> Failure | None:
        """None when the batch succeeded; else the index of its lowest failed record (-1 when
        it failed as a whole) and the error object the failure line reports."""
        if result.error is not None:
            return -1, result.error
        value = result.value
        if not self.report_failures or not is_partial_response(value):
            return None
        try:
            failed = _failed_indexes(self.source, partition, batch, value)
        except _InvalidResponse as exc:
            return -1, response_error(INVALID_RESPONSE, f"{exc}; the whole batch failed")
        if failed is None:
            return None
        lowest = min(failed)  # the batch is in partition order
        count = len(set(failed))
        message = f"{count} of {len(batch)} records failed, from offset {batch[lowest].offset}"
        return lowest, response_error(ITEM_FAILURES, message)

    def _giving_up(self) -> str:
        """What happens to a batch out of retries."""
        if self.on_failure is None:
            return "discard: no on_failure destination"
        return f"send to on_failure {self.on_failure.describe()}"

    async def _drop_expired(
        self, partition: str, batch: list[Record], invokes: int, stop: asyncio.Event
    ) -> list[Record]:
        """``batch`` without its records older than ``maximum_record_age``, which go to
        on_failure (or are discarded) first.

        Every record is judged, not the first: a Kafka record's CreateTime is the producer's
        clock, so an old record may follow fresh ones. Each run of expired records next to one
        another is one on-failure record, because its batch info names a range (first to last
        record) that a reader fetches again from the stream; the fresh records are invoked
        together, in order. Nothing of the batch is checkpointed until all of it has settled,
        so sending an expired record before the fresh ones around it were invoked loses
        nothing.
        """
        oldest_allowed = time.time() - self.max_age
        if min(map(_timestamp, batch)) >= oldest_allowed:
            return batch
        fresh: list[Record] = []
        expired: list[Record] = []
        for rec in batch:
            if rec.timestamp < oldest_allowed:
                expired.append(rec)
                continue
            if expired:
                await self._give_up(partition, expired, RECORD_AGE_EXCEEDED, invokes, None, stop)
                expired = []
            fresh.append(rec)
        if expired:
            await self._give_up(partition, expired, RECORD_AGE_EXCEEDED, invokes, None, stop)
        return fresh

    async def _give_up(
        self,
        partition: str,
        batch: list[Record],
        condition: str,
        invokes: int,
        result: InvocationResult | None,
        stop: asyncio.Event,
        error: dict[str, Any] | None = None,
    ) -> None:
        """Hand ``batch`` to on_failure (or discard it without one), and say so; ``error`` is
        the last failure's, when an invocation failed."""
        destination = self.on_failure
        stats = self.stats.partition(partition)
        cause = f"{condition}: {error['errorType']}" if error is not None else condition
        if destination is None:
            stats.dropped += len(batch)
            self.failures.report(
                partition,
                "discard",
                logging.WARNING,
                f"discarding records: no on_failure destination ({cause})",
                {
                    "condition": condition,
                    **_error_fields(error),
                    **self._batch_fields(batch),
                    "batch": self.source.batch_info(partition, batch)[1],
                },
            )
            return
        # A Kafka topic destination gets one message per record, keyed like the record.
        groups = [[r] for r in batch] if getattr(destination, "per_record", False) else [batch]
        for records in groups:
            record = failure_record(
                request_id=result.request_id if result else str(uuid.uuid4()),
                function_arn=self.function.config.arn,
                condition=condition,
                invoke_count=invokes,
                batch_info=self.source.batch_info(partition, records),
                function_error="Unhandled" if result is not None and result.error else None,
                payload=(
                    self.source.lambda_event(partition, records)
                    if destination.include_payload
                    else None
                ),
            )
            await self._deliver(partition, destination, record, records[0].key, stop)
        stats.on_failure += len(batch)
        self.failures.report(
            partition,
            "on_failure",
            logging.WARNING,
            f"sent to on_failure {destination.describe()}: {_records(len(batch))} ({cause})",
            {
                "destination": destination.describe(),
                "condition": condition,
                **_error_fields(error),
                **self._batch_fields(batch),
            },
        )

    async def _deliver(
        self,
        partition: str,
        destination: Destination,
        record: dict[str, Any],
        key: bytes | None,
        stop: asyncio.Event,
    ) -> None:
        """Send until the destination stores the record: a destination that is down must not
        lose it, and the checkpoint waits."""
        attempt = 0
        while True:
            try:
                await destination.send(record, key=key)
                return
            except Exception as exc:
                delay = retry_delay(
                    attempt, self.config.retry_base_delay, self.config.retry_max_delay
                )
                attempt += 1
                self.failures.report(
                    partition,
                    "destination",
                    logging.ERROR,
                    f"on_failure destination {destination.describe()} failed: "
                    f"{type(exc).__name__}: {exc}; retry in {delay:.3g} s",
                    {
                        "destination": destination.describe(),
                        "errorType": type(exc).__name__,
                        "errorMessage": str(exc),
                        "attempt": attempt,
                        "next": f"retry in {delay:.3g} s",
                    },
                    traceback.format_tb(exc.__traceback__),
                )
            await self._pause(delay, stop)

    @staticmethod
    async def _pause(delay: float, stop: asyncio.Event) -> None:
        """Sleep before a retry; a stopping partition abandons the batch instead of waiting."""
        if stop.is_set():
            raise Abandoned
        try:
            async with asyncio.timeout(delay):
                await stop.wait()
        except TimeoutError:
            return
        raise Abandoned


class QueueOutcome(_Policy):
    """The queue outcome policy of one event source mapping (SQS)."""

    def __init__(
        self,
        function: Function,
        source: QueueSource,
        config: MappingConfig,
        stats: MappingStats,
        failures: FailureLog,
    ) -> None:
        super().__init__(function, config, stats, failures)
        self.source = source

    async def settle(self, partition: str, records: list[Record], stop: asyncio.Event) -> None:
        """Settle ``records`` under their batch span, the source's delete and release included
        (no span without tracing, as for streams)."""
        if not tracing.enabled:
            return await self._settle(partition, records, stop)
        with tracing.batch(self.source, partition, records):
            await self._settle(partition, records, stop)

    async def _settle(self, partition: str, records: list[Record], stop: asyncio.Event) -> None:
        stats = self.stats.partition(partition)
        result = await self._invoke(partition, records)
        self._count(stats, len(records))
        failure = self._failure(partition, records, result)
        if failure is None:
            await self.source.settle(partition, records, ())
            stats.deleted += len(records)
            return
        stats.failed_invocations += 1
        failed, error = failure
        if len(failed) == len(records):
            done, back = [], records
        else:
            done = [r for r in records if r.offset not in failed]
            back = [r for r in records if r.offset in failed]
        self._report(
            partition,
            records,
            result.request_id,
            error,
            None,
            f"{_records(len(back))} back to the queue",
        )
        await self.source.settle(partition, done, back)
        stats.deleted += len(done)
        stats.returned += len(back)

    async def reject_oversized(self, partition: str, record: Record, stop: asyncio.Event) -> None:
        await self.source.settle(partition, (), [record])
        self.stats.partition(partition).returned += 1
        size = self.source.event_size(record) if self.lambda_format else record.size
        self.failures.report(
            partition,
            "oversized",
            logging.WARNING,
            f"message of {size} bytes is over the payload cap: back to the queue",
            {"condition": PAYLOAD_TOO_LARGE, **self._batch_fields([record])},
        )

    async def _invoke(self, partition: str, batch: list[Record]) -> InvocationResult:
        event: Any = (
            self.source.lambda_event(partition, batch)
            if self.lambda_format
            else Batch(batch, partition, self.source.kind)
        )
        return await self.function.invoke(event)

    def _batch_fields(self, batch: Sequence[Record]) -> dict[str, Any]:
        """Queue messages are named by their ids (SQS messageId), not their receive order."""
        identify = self.source.item_identifier
        return {"firstId": identify(batch[0]), "lastId": identify(batch[-1]), "records": len(batch)}

    def _failure(
        self, partition: str, records: list[Record], result: InvocationResult
    ) -> tuple[set[int], dict[str, Any]] | None:
        """None when every message succeeded; else the offsets of the failed ones (all of them
        when the batch failed as a whole) and the error object the failure line reports."""
        if result.error is not None:
            return {r.offset for r in records}, result.error
        value = result.value
        if not self.report_failures or not is_partial_response(value):
            return None
        try:
            indexes = _failed_indexes(self.source, partition, records, value)
        except _InvalidResponse as exc:
            error = response_error(INVALID_RESPONSE, f"{exc}; the whole batch failed")
            return {r.offset for r in records}, error
        if indexes is None:
            return None
        failed = {records[i].offset for i in indexes}
        message = f"{len(failed)} of {len(records)} messages failed"
        return failed, response_error(ITEM_FAILURES, message)
