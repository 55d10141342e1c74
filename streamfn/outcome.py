"""What happens after a batch is invoked.

Streams (:class:`StreamOutcome`): success, retry with backoff, bisect, partial batch response
(rewind to the lowest failed record), record age, and the on-failure destination. ``settle``
returns only when every record of the batch has succeeded, been delivered to on_failure, or been
discarded as AWS does without a destination; it raises :class:`Abandoned` when the partition is
stopping, and then nothing of the batch may be committed.

Queues (:class:`QueueOutcome`): one invocation, then the source deletes what succeeded and
releases what failed; retrying is the queue's redelivery, as with Lambda's SQS mappings.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

from .backoff import retry_delay
from .config import MappingConfig
from .destinations import Destination, failure_record
from .dispatch import Function, InvocationResult
from .record import Batch, BatchResult, Record, is_partial_response
from .source import QueueSource, Source

log = logging.getLogger("streamfn.outcome")

RETRIES_EXHAUSTED = "RetryAttemptsExhausted"
RECORD_AGE_EXCEEDED = "RecordAgeExceeded"
PAYLOAD_TOO_LARGE = "MaximumPayloadSizeExceeded"


def _offset(source: Source | QueueSource, partition: str, failure: Any) -> int:
    """The offset a batchItemFailures entry (or a Record in a BatchResult) names."""
    if isinstance(failure, Record):
        return failure.offset
    if isinstance(failure, dict):
        failure = failure["itemIdentifier"]
    if failure is None or failure == "":
        raise ValueError("empty itemIdentifier")
    return source.identify(partition, failure)


class Abandoned(Exception):
    """The partition stopped while this batch was still unsettled."""


class StreamOutcome:
    """The stream outcome policy of one event source mapping."""

    def __init__(
        self,
        function: Function,
        source: Source,
        config: MappingConfig,
        on_failure: Destination | None,
        max_retries: int,
    ) -> None:
        self.function = function
        self.source = source
        self.config = config
        self.on_failure = on_failure
        self.max_retries = max_retries
        self.lambda_format = config.event_format == "lambda"
        self.report_failures = config.report_batch_item_failures
        self.bisect = config.bisect_batch_on_function_error
        self.max_age = config.maximum_record_age
        self.invocations = 0
        self.errors = 0

    async def settle(self, partition: str, records: list[Record], stop: asyncio.Event) -> None:
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
            failed_at = self._failed_index(partition, batch, result)
            if failed_at is None:
                continue
            self.errors += 1
            if failed_at >= 0:  # a partial response: the records before the lowest failure are done
                batch = batch[failed_at:]
            elif self.bisect and len(batch) > 1:  # splitting does not consume the retry quota
                mid = len(batch) // 2
                pending.append((batch[mid:], retries, invokes))
                pending.append((batch[:mid], retries, invokes))
                continue
            if self.max_retries != -1 and retries >= self.max_retries:
                await self._give_up(partition, batch, RETRIES_EXHAUSTED, invokes, result, stop)
                continue
            delay = retry_delay(retries, self.config.retry_base_delay, self.config.retry_max_delay)
            await self._pause(delay, stop)
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
        self.invocations += 1
        return await self.function.invoke(event)

    def _failed_index(
        self, partition: str, batch: list[Record], result: InvocationResult
    ) -> int | None:
        """None when the batch succeeded, -1 when it failed as a whole, else the index of the
        lowest failed record of a partial batch response."""
        if result.error is not None:
            return -1
        value = result.value
        if not self.report_failures or not is_partial_response(value):
            return None
        if isinstance(value, BatchResult):
            failures: Sequence[Any] = value.failures
        else:
            failures = value.get("batchItemFailures")
            if failures is None:
                return None
            if not isinstance(failures, list):
                return -1
        if not failures:
            return None
        try:
            lowest = min(_offset(self.source, partition, f) for f in failures)
        except (ValueError, TypeError, KeyError):
            return -1  # an invalid identifier fails the whole batch, as on AWS
        for i, rec in enumerate(batch):
            if rec.offset == lowest:
                return i
        return -1  # names a record that was not in the batch

    async def _drop_expired(
        self, partition: str, batch: list[Record], invokes: int, stop: asyncio.Event
    ) -> list[Record]:
        oldest_allowed = time.time() - self.max_age
        if batch[0].timestamp >= oldest_allowed:
            return batch
        expired = [r for r in batch if r.timestamp < oldest_allowed]
        if len(expired) == len(batch):
            await self._give_up(partition, batch, RECORD_AGE_EXCEEDED, invokes, None, stop)
            return []
        await self._give_up(partition, expired, RECORD_AGE_EXCEEDED, invokes, None, stop)
        return [r for r in batch if r.timestamp >= oldest_allowed]

    async def _give_up(
        self,
        partition: str,
        batch: list[Record],
        condition: str,
        invokes: int,
        result: InvocationResult | None,
        stop: asyncio.Event,
    ) -> None:
        destination = self.on_failure
        if destination is None:
            log.warning(
                "discarding records: no on_failure destination",
                extra={
                    "function": self.function.name,
                    "condition": condition,
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
            await self._deliver(destination, record, records[0].key, stop)

    async def _deliver(
        self,
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
                log.error(
                    "on_failure destination failed; retrying",
                    extra={"destination": destination.describe(), "error": repr(exc)},
                )
            await self._pause(
                retry_delay(attempt, self.config.retry_base_delay, self.config.retry_max_delay),
                stop,
            )
            attempt += 1

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


class QueueOutcome:
    """The queue outcome policy of one event source mapping (SQS)."""

    def __init__(self, function: Function, source: QueueSource, config: MappingConfig) -> None:
        self.function = function
        self.source = source
        self.lambda_format = config.event_format == "lambda"
        self.report_failures = config.report_batch_item_failures
        self.invocations = 0
        self.errors = 0

    async def settle(self, partition: str, records: list[Record], stop: asyncio.Event) -> None:
        event: Any = (
            self.source.lambda_event(partition, records)
            if self.lambda_format
            else Batch(records, partition, self.source.kind)
        )
        self.invocations += 1
        result = await self.function.invoke(event)
        failed = self._failed(partition, records, result)
        if not failed:
            await self.source.settle(partition, records, ())
            return
        self.errors += 1
        if len(failed) == len(records):
            await self.source.settle(partition, (), records)
            return
        await self.source.settle(
            partition,
            [r for r in records if r.offset not in failed],
            [r for r in records if r.offset in failed],
        )

    async def reject_oversized(self, partition: str, record: Record, stop: asyncio.Event) -> None:
        await self.source.settle(partition, (), [record])

    def _failed(self, partition: str, records: list[Record], result: InvocationResult) -> set[int]:
        """Offsets of the failed records; every offset when the batch failed as a whole."""
        everything = {r.offset for r in records}
        if result.error is not None:
            return everything
        value = result.value
        if not self.report_failures or not is_partial_response(value):
            return set()
        failures = value.failures if isinstance(value, BatchResult) else value["batchItemFailures"]
        if failures is None:
            return set()
        if not isinstance(failures, list):
            return everything
        try:
            failed = {_offset(self.source, partition, f) for f in failures}
        except (ValueError, TypeError, KeyError):
            return everything  # an invalid identifier fails the whole batch, as on AWS
        return failed if failed <= everything else everything
