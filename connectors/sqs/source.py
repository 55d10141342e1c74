"""Amazon SQS as Lambda's SQS event source, on aiobotocore.

The engine owns batching, invocation and the outcome; this module owns what Lambda's SQS
pollers do around it and the engine does not: long polling from a number of pollers that grows
while messages keep coming and shrinks when the queue runs dry, extending the visibility of
every message still being handled (so a slow handler never causes a duplicate; the heartbeat is
:mod:`.visibility`'s), deleting what succeeded, releasing what failed (optionally after a
backoff delay), FIFO rules per ``MessageGroupId``, and an optional dead letter after N receives
for queues without a redrive policy. It also keeps the queue's gauges (depth, age of the oldest
message received) for ``/metrics``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from botocore.exceptions import ClientError

from streamfn.config import MappingConfig
from streamfn.destinations import Destination, check_destination
from streamfn.errors import ConfigError, SourceError
from streamfn.record import Record, json_text_size
from streamfn.source import AssignmentListener

from .._retrylog import RetryLog
from ._client import (
    MAX_RECEIVE,
    MAX_VISIBILITY,
    MAX_WAIT,
    Connection,
    QueueRef,
    call_by_ten,
    fatal_error,
    resolve_url,
    summary,
)
from .depth import ATTRIBUTES as DEPTH_ATTRIBUTES
from .depth import QueueDepth
from .visibility import VisibilityHeartbeat, release_now_entry

log = logging.getLogger("streamfn.sqs")

FIFO_MAX_BATCH = 10  # Lambda's BatchSize cap for FIFO queues
SCALE_INTERVAL = 1.0  # seconds between two scaling decisions
ABANDON_TIMEOUT = MAX_WAIT + 5.0  # seconds to release unsettled messages when stopping
LOGGED_IDS = 20  # message ids a dead-letter line names at most (it always gives the count)

#: Bytes a Lambda SQS event record takes around its variable fields (keys, quotes, constants),
#: so the 6 MB cap counts metadata as Lambda does.
_RECORD_OVERHEAD = len(
    orjson.dumps(
        {
            "messageId": "",
            "receiptHandle": "",
            "body": "",
            "attributes": {},
            "messageAttributes": {},
            "md5OfBody": "",
            "eventSource": "aws:sqs",
            "eventSourceARN": "",
            "awsRegion": "",
        }
    )
)
_ENTRY_OVERHEAD = len(b'"":"",')
_MD5_OF_ATTRIBUTES = len(b',"md5OfMessageAttributes":""')
#: A message attribute around its name, type and value (``stringValue`` or, as long,
#: ``binaryValue``).
_ATTRIBUTE_OVERHEAD = len(
    b'"":{"stringValue":"","stringListValues":[],"binaryListValues":[],"dataType":""},'
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _lambda_attributes(raw: Mapping[str, Any]) -> dict[str, Any]:
    """SQS message attributes as Lambda's event spells them (camelCase, binary in base64)."""
    out: dict[str, Any] = {}
    for name, attr in raw.items():
        item: dict[str, Any] = {}
        if "StringValue" in attr:
            item["stringValue"] = attr["StringValue"]
        if "BinaryValue" in attr:
            item["binaryValue"] = _b64(attr["BinaryValue"])
        item["stringListValues"] = list(attr.get("StringListValues", ()))
        item["binaryListValues"] = [_b64(v) for v in attr.get("BinaryListValues", ())]
        item["dataType"] = attr["DataType"]
        out[name] = item
    return out


def _metadata_size(message: Mapping[str, Any]) -> int:
    """Bytes the message's metadata adds to its Lambda event record (approximately)."""
    size = len(message["MessageId"]) + len(message["ReceiptHandle"]) + len(message["MD5OfBody"])
    for name, value in message["Attributes"].items():
        size += len(name) + len(value) + _ENTRY_OVERHEAD
    attributes = message.get("MessageAttributes")
    if attributes:
        size += _MD5_OF_ATTRIBUTES + len(message.get("MD5OfMessageAttributes", ""))
        for name, attr in attributes.items():
            size += len(name) + len(attr["DataType"]) + _ATTRIBUTE_OVERHEAD
            size += len(attr.get("StringValue", ""))
            size += (len(attr.get("BinaryValue", b"")) + 2) // 3 * 4
    return size


@dataclass(slots=True, eq=False)
class _Poller:
    """One poller's messages received and not yet settled, and its FIFO bookkeeping."""

    held: dict[int, Record] = field(default_factory=dict)  # offset -> record
    ids: dict[str, int] = field(default_factory=dict)  # messageId -> offset
    gate: asyncio.Event = field(default_factory=asyncio.Event)  # set while it may receive
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # FIFO: set once held empties
    groups: set[bytes | None] = field(default_factory=set)  # FIFO: groups it holds
    failed_at: dict[bytes | None, int] = field(default_factory=dict)  # FIFO: first failure

    def hold_back(
        self, succeeded: Sequence[Record], failed: Sequence[Record]
    ) -> tuple[list[Record], list[Record]]:
        """FIFO: a failed message fails every later message of its group received with it, so
        the group is retried in order (Lambda: "return all failed and unprocessed messages")."""
        first = self.failed_at
        for rec in failed:
            if rec.offset < first.get(rec.key, rec.offset + 1):
                first[rec.key] = rec.offset
        ok: list[Record] = []
        held_back = list(failed)
        for rec in succeeded:
            (held_back if rec.offset > first.get(rec.key, rec.offset) else ok).append(rec)
        return ok, held_back

    def forget(self, records: Sequence[Record]) -> None:
        held, ids = self.held, self.ids
        for rec in records:
            held.pop(rec.offset, None)
            message_id = rec.meta["MessageId"]
            if ids.get(message_id) == rec.offset:
                del ids[message_id]


T = TypeVar("T")


def _delete_entry(entry_id: str, rec: Record) -> dict[str, Any]:
    return {"Id": entry_id, "ReceiptHandle": rec.meta["ReceiptHandle"]}


class SQSSource:
    """An SQS queue (standard or FIFO) feeding one event source mapping, as Lambda polls it.

    ``queue`` is a queue URL, an ARN or a name. ``region_name``, ``endpoint_url``, the keys and
    ``profile_name`` default to the usual AWS chain (environment, config files, instance role).

    Pollers: ``min_pollers`` receive from the start; one more joins every second in which
    receives kept coming back full and none empty, up to the mapping's
    ``maximum_concurrency`` (or ``max_pollers`` when it sets none; AWS starts with five), and
    one stops receiving every second in which receives came back empty and none full. Each
    poller runs one invocation at a time, so pollers are the mapping's concurrency. FIFO
    queues keep order per ``MessageGroupId`` across pollers because SQS returns no message of
    a group while another of that group is in flight, and a FIFO poller receives again only
    once its previous messages are settled.

    Lambda refuses a queue whose visibility timeout is shorter than the function's timeout.
    This source warns when the mapped function's timeout is longer (it extends visibility
    while a handler runs, so no duplicate follows), and refuses with a
    :class:`~streamfn.errors.ConfigError` when ``function_timeout`` is given explicitly.
    Visibility is extended every third of the queue's visibility timeout for each message
    still in flight.

    Failed messages come back after the visibility timeout, as on Lambda, unless
    ``retry_delay`` is set: then they come back after ``retry_delay * 2 ** (receives - 1)``
    seconds (at most ``retry_max_delay``), set with ChangeMessageVisibility. For queues without
    a redrive policy, ``dead_letter`` with ``max_receives`` sends a message that failed on its
    ``max_receives``-th receive to that destination (as its Lambda event record) and deletes it;
    the destination is checked when the source starts, not first tried when a message needs it.

    :meth:`gauges` reports two queue-level gauges under one partition label, the queue's name
    (the source's "partitions" are its pollers, which come and go as it scales):
    ``approximate_queue_depth``, the queue's ApproximateNumberOfMessages read every
    ``depth_interval`` seconds in the background; and
    ``approximate_oldest_message_age_seconds``, how old the oldest message of the last receive
    was when it arrived (from its SentTimestamp), 0 once a receive comes back empty.
    """

    kind = "sqs"
    default_batch_size = 10
    default_batching_window = 0.0

    def __init__(
        self,
        queue: str,
        *,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        profile_name: str | None = None,
        function_timeout: float | None = None,
        min_pollers: int = 1,
        max_pollers: int = 5,
        retry_delay: float | None = None,
        retry_max_delay: float = 900.0,
        dead_letter: Destination | None = None,
        max_receives: int | None = None,
        depth_interval: float = 15.0,
    ) -> None:
        self.ref = QueueRef.parse(queue)
        _check_pollers(min_pollers, max_pollers)
        if function_timeout is not None:
            _check_seconds("function_timeout", function_timeout, 900)
        if retry_delay is not None:
            _check_seconds("retry_delay", retry_delay, MAX_VISIBILITY)
        _check_seconds("retry_max_delay", retry_max_delay, MAX_VISIBILITY)
        if (dead_letter is None) != (max_receives is None):
            raise ConfigError("dead_letter and max_receives go together: set both or neither")
        if max_receives is not None and (
            isinstance(max_receives, bool)
            or not isinstance(max_receives, int)
            or not 1 <= max_receives <= 1000
        ):
            raise ConfigError.out_of_range("max_receives", max_receives, "an integer 1-1000")
        if (
            isinstance(depth_interval, bool)
            or not isinstance(depth_interval, int | float)
            or depth_interval <= 0
        ):
            raise ConfigError.out_of_range("depth_interval", depth_interval, "seconds > 0")
        self.queue = queue
        self.fifo = self.ref.fifo
        self.function_timeout = function_timeout
        self._mapped_timeout: float | None = None
        self.min_pollers = min_pollers
        self.max_pollers = max_pollers
        self.retry_delay = retry_delay
        self.retry_max_delay = retry_max_delay
        self.dead_letter = dead_letter
        self.max_receives = max_receives
        self.depth_interval = float(depth_interval)
        self._connection = Connection(
            region_name or self.ref.region,
            endpoint_url,
            aws_access_key_id,
            aws_secret_access_key,
            aws_session_token,
            profile_name,
        )
        #: Counters for benchmarks and tests: messages received, deleted, released after a
        #: failure, sent to dead_letter; pollers currently receiving.
        self.received = 0
        self.deleted = 0
        self.released = 0
        self.dead_lettered = 0
        self.active_pollers = 0
        self._client: Any = None
        self._url = ""
        self._arn = ""
        self._region = ""
        self._visibility = 0
        self._receive_max = MAX_RECEIVE
        self._overhead = _RECORD_OVERHEAD
        self._next_offset = 0
        self._pollers: dict[str, _Poller] = {}
        self._group_owners: dict[bytes | None, _Poller] = {}  # FIFO
        self._orphans: set[asyncio.Future[Any]] = set()  # receives whose fetch was cancelled
        self._heartbeat: VisibilityHeartbeat | None = None  # while running
        self._full = 0  # receives that came back full since the last scaling decision
        self._empty = 0  # receives that came back empty since then
        self._depth: QueueDepth | None = None  # while running
        self._oldest_age = 0.0  # seconds: the oldest message of the last receive, when received
        self._dead_letter_failures = RetryLog(
            log, "dead_letter destination failed", level=logging.ERROR, queue=self.ref.name
        )

    def describe(self) -> str:
        return f"sqs://{self.ref.name}"

    async def run(self, config: MappingConfig, listener: AssignmentListener) -> None:
        self._receive_max = self._check_batching(config)
        self._mapped_timeout = config.function_timeout
        high = config.maximum_concurrency or self.max_pollers
        low = min(self.min_pollers, high)
        self._pollers, self._group_owners, self._orphans = {}, {}, set()
        async with self._connection.client(2 * high + 10) as client:
            await self._open(client)
            if self.dead_letter is not None:  # a missing dead-letter queue stops it now
                await check_destination(self.dead_letter, f"dead_letter of {self.describe()}")
            self._client = client
            # Every message received and not yet settled stays invisible, so a handler slower
            # than the visibility timeout causes no duplicate.
            self._heartbeat = heartbeat = VisibilityHeartbeat(
                client,
                self._url,
                self._visibility,
                lambda: _handles(self._all_held()),
                queue=self.ref.name,
                log=log,
                lost="could not extend visibility; messages may be delivered twice",
            )
            try:
                async with asyncio.TaskGroup() as tg:
                    if self._visibility > 0:
                        tg.create_task(heartbeat.run())
                    if self._depth is not None:
                        tg.create_task(self._depth.run())
                    await self._scale(listener, low, high)
            finally:
                await self._abandon_all()
                self._client = self._heartbeat = self._depth = None

    def _check_batching(self, config: MappingConfig) -> int:
        """Lambda's batching rules for SQS, checked before connecting; returns how many
        messages one receive asks for (never more than a batch, so a FIFO batch is exactly
        one receive)."""
        batch = config.batch_size or self.default_batch_size
        window = config.maximum_batching_window or 0.0
        if self.fifo and batch > FIFO_MAX_BATCH:
            raise ConfigError.out_of_range(
                "batch_size", batch, f"1-{FIFO_MAX_BATCH} for FIFO queue {self.ref.name!r}"
            )
        if self.fifo and window > 0:
            raise ConfigError(
                f"maximum_batching_window={window!r} is invalid: FIFO queue {self.ref.name!r} "
                "takes no batching window"
            )
        if batch > MAX_RECEIVE and window < 1:
            raise ConfigError(
                f"batch_size={batch} needs maximum_batching_window >= 1 second "
                f"(Lambda's rule for SQS batches above {MAX_RECEIVE}), not {window!r}"
            )
        return min(MAX_RECEIVE, batch)

    async def _open(self, client: Any) -> None:
        """Resolve the queue and read the attributes the source depends on."""
        try:
            self._url = await resolve_url(client, self.ref)
            response = await client.get_queue_attributes(
                QueueUrl=self._url,
                AttributeNames=[
                    "QueueArn",
                    "VisibilityTimeout",
                    "RedrivePolicy",
                    *DEPTH_ATTRIBUTES,
                ],
            )
        except Exception as exc:
            error = fatal_error(exc, self.queue, self._connection.endpoint)
            if error is not None:
                raise error from exc
            raise SourceError(f"cannot open SQS queue {self.queue!r}: {exc}") from exc
        attributes = response["Attributes"]
        self._depth = QueueDepth(
            client, self._url, self.depth_interval, queue=self.ref.name, log=log
        )
        self._depth.update(attributes)
        self._oldest_age = 0.0
        self._arn = attributes["QueueArn"]
        self._region = client.meta.region_name
        self._visibility = int(attributes["VisibilityTimeout"])
        self._overhead = _RECORD_OVERHEAD + len(self._arn) + len(self._region)
        if self.function_timeout is not None and self._visibility < self.function_timeout:
            raise ConfigError(
                f"SQS queue {self.ref.name!r} has a visibility timeout of {self._visibility} s, "
                f"shorter than the function timeout of {self.function_timeout:g} s; Lambda "
                "refuses this mapping: raise the queue's VisibilityTimeout"
            )
        mapped = self._mapped_timeout
        if self.function_timeout is None and mapped is not None and self._visibility < mapped:
            log.warning(
                "queue visibility timeout is shorter than the function timeout; Lambda would "
                "refuse this mapping, streamfn extends visibility while the handler runs",
                extra={"queue": self.ref.name, "visibility": self._visibility, "timeout": mapped},
            )
        if self.max_receives is not None and "RedrivePolicy" in attributes:
            log.warning(
                "queue has a redrive policy; its dead-letter queue may take messages first",
                extra={"queue": self.ref.name, "redrive_policy": attributes["RedrivePolicy"]},
            )
        log.info(
            "sqs queue opened",
            extra={
                "queue": self._url,
                "fifo": self.fifo,
                "visibility_timeout": self._visibility,
            },
        )

    async def _scale(self, listener: AssignmentListener, low: int, high: int) -> None:
        """Start ``low`` pollers, then add or pause one per interval as receives say."""
        await self._set_pollers(listener, low)
        while True:
            await asyncio.sleep(SCALE_INTERVAL)
            full, empty = self._full, self._empty
            self._full = self._empty = 0
            if full and not empty and self.active_pollers < high:
                await self._set_pollers(listener, self.active_pollers + 1)
            elif empty and not full and self.active_pollers > low:
                await self._set_pollers(listener, self.active_pollers - 1)

    async def _set_pollers(self, listener: AssignmentListener, count: int) -> None:
        """Let the first ``count`` pollers receive and pause the others. A paused poller keeps
        its partition (its last batch finishes normally) and simply stops receiving."""
        new = [f"poller-{i}" for i in range(len(self._pollers), count)]
        for name in new:
            self._pollers[name] = _Poller()
        for i, poller in enumerate(self._pollers.values()):
            if i < count:
                poller.gate.set()
            else:
                poller.gate.clear()
        self.active_pollers = count
        if new:
            await listener.assigned(new)

    async def fetch(self, partition: str, max_records: int, timeout: float) -> Sequence[Record]:
        if not await self._may_receive(partition, timeout):
            return ()
        count = min(self._receive_max, max_records)
        # Whole seconds, at least one: a zero wait is short polling, which spins on an idle queue.
        wait = min(MAX_WAIT, max(1, math.ceil(timeout)))
        receive = asyncio.ensure_future(
            self._client.receive_message(
                QueueUrl=self._url,
                MaxNumberOfMessages=count,
                WaitTimeSeconds=wait,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
        )
        try:
            response = await asyncio.shield(receive)
        except asyncio.CancelledError:
            # SQS completes the receive anyway; run() releases what it returns on exit, or
            # those messages would stay invisible for a whole visibility timeout.
            self._orphans.add(receive)
            raise
        except ClientError as exc:  # anything else is transient: the poller backs off
            error = fatal_error(exc, self.queue, self._connection.endpoint)
            if error is not None:
                raise error from exc
            raise
        messages = response.get("Messages")
        if not messages:
            self._empty += 1
            self._oldest_age = 0.0
            return ()
        if len(messages) == count:
            self._full += 1
        records = self._records(partition, messages)
        return await self._claim_groups(partition, records) if self.fifo else records

    async def _may_receive(self, partition: str, timeout: float) -> bool:
        """Wait (at most ``timeout``) until this poller is active and, for FIFO, holds nothing
        unsettled: a FIFO batch never spans two receives, so a failure can release the rest
        of its group before any later message of that group is received."""
        poller = self._pollers[partition]
        gate = poller.gate
        if gate.is_set() and not (self.fifo and poller.held):
            return True
        try:
            async with asyncio.timeout(timeout):
                if not gate.is_set():
                    await gate.wait()
                if self.fifo and poller.held:
                    poller.settled.clear()
                    await poller.settled.wait()
        except TimeoutError:
            return False
        return True

    def _records(self, partition: str, messages: list[dict[str, Any]]) -> list[Record]:
        poller = self._pollers[partition]
        held, ids = poller.held, poller.ids
        overhead = self._overhead
        offset = self._next_offset
        records = []
        oldest = math.inf
        for message in messages:
            attributes = message["Attributes"]
            group = attributes.get("MessageGroupId")
            sent = int(attributes["SentTimestamp"]) / 1000
            if sent < oldest:
                oldest = sent
            rec = Record(
                partition,
                offset,
                message.pop("Body").encode(),
                group.encode() if group is not None else None,
                sent,
                meta=message,
            )
            rec.size += overhead + _metadata_size(message)
            held[offset] = rec
            ids[message["MessageId"]] = offset
            records.append(rec)
            offset += 1
        self._next_offset = offset
        self.received += len(records)
        self._oldest_age = max(0.0, time.time() - oldest)
        return records

    async def settle(
        self, partition: str, succeeded: Sequence[Record], failed: Sequence[Record]
    ) -> None:
        """Delete ``succeeded`` and release ``failed``; never raises for an SQS failure (the
        message then simply comes back: at-least-once)."""
        poller = self._pollers[partition]
        if self.fifo and (failed or poller.failed_at):
            succeeded, failed = poller.hold_back(succeeded, failed)
        poller.forget(succeeded)
        poller.forget(failed)
        if self.max_receives is not None and failed:
            delivered, failed = await self._dead_letter(failed)
            succeeded = [*succeeded, *delivered]
        await asyncio.gather(self._delete(succeeded), self._release(failed))
        if self.fifo and not poller.held:
            self._disown_groups(poller)
            poller.settled.set()

    async def _claim_groups(self, partition: str, records: list[Record]) -> list[Record]:
        """FIFO: a group belongs to one poller until it settles all it received. SQS already
        returns no message of a group with one in flight; this also holds when it does
        (moto's concurrent receives, a visibility that ran out): such messages go back."""
        poller = self._pollers[partition]
        owners = self._group_owners
        mine: list[Record] = []
        taken: list[Record] = []
        for rec in records:
            if owners.setdefault(rec.key, poller) is poller:
                poller.groups.add(rec.key)
                mine.append(rec)
            else:
                taken.append(rec)
        if taken:
            poller.forget(taken)
            await self._change_visibility(_handles(taken), release_now_entry, "release")
        return mine

    def _disown_groups(self, poller: _Poller) -> None:
        for group in poller.groups:
            if self._group_owners.get(group) is poller:
                del self._group_owners[group]
        poller.groups.clear()
        poller.failed_at.clear()

    async def _delete(self, records: Sequence[Record]) -> None:
        if not records:
            return
        failures = await call_by_ten(
            self._client.delete_message_batch, self._url, records, _delete_entry
        )
        self.deleted += len(records) - len(failures)
        if failures:
            log.warning(
                "could not delete messages; they will be delivered again",
                extra={"queue": self.ref.name, "errors": summary(failures)},
            )

    async def _release(self, records: Sequence[Record]) -> None:
        """Failed messages come back after the visibility timeout, or after the retry delay."""
        if not records:
            return
        self.released += len(records)
        if self.retry_delay is not None:
            await self._change_visibility(records, self._delay_entry, "retry delay")

    def _delay_entry(self, entry_id: str, rec: Record) -> dict[str, Any]:
        assert self.retry_delay is not None
        receives = int(rec.meta["Attributes"]["ApproximateReceiveCount"])
        delay = min(self.retry_max_delay, self.retry_delay * 2.0 ** max(0, receives - 1))
        return {
            "Id": entry_id,
            "ReceiptHandle": rec.meta["ReceiptHandle"],
            "VisibilityTimeout": min(MAX_VISIBILITY, math.ceil(delay)),
        }

    async def _dead_letter(self, failed: Sequence[Record]) -> tuple[list[Record], list[Record]]:
        """Send messages that failed on their ``max_receives``-th receive to ``dead_letter``;
        returns (delivered, still failed). One that cannot be sent stays failed."""
        assert self.dead_letter is not None and self.max_receives is not None
        limit = self.max_receives
        doomed = [
            r for r in failed if int(r.meta["Attributes"]["ApproximateReceiveCount"]) >= limit
        ]
        if not doomed:
            return [], list(failed)
        destination = self.dead_letter
        results = await asyncio.gather(
            *(destination.send(self._event_record(r), key=r.key) for r in doomed),
            return_exceptions=True,
        )
        delivered = [r for r, res in zip(doomed, results, strict=True) if res is None]
        errors = [res for res in results if res is not None]
        if errors:
            self._dead_letter_failures.failed(
                errors[0],
                f"{len(errors)} of {len(doomed)} messages stay in the queue and will be received "
                f"again (destination {destination.describe()})",
            )
        else:
            self._dead_letter_failures.succeeded()
        if delivered:
            log.warning(
                "messages failed on their last allowed receive (max_receives); sent to the "
                "dead_letter destination and deleted from the queue",
                extra={
                    "queue": self.ref.name,
                    "count": len(delivered),
                    "messageIds": [r.meta["MessageId"] for r in delivered[:LOGGED_IDS]],
                    "destination": destination.describe(),
                    "maxReceives": limit,
                },
            )
        self.dead_lettered += len(delivered)
        sent = {r.offset for r in delivered}
        return delivered, [r for r in failed if r.offset not in sent]

    async def _change_visibility(
        self, items: Sequence[T], entry: Callable[[str, T], dict[str, Any]], purpose: str
    ) -> None:
        """ChangeMessageVisibility after any running heartbeat call, so that an extension
        never lands after (and undoes) a release."""
        assert self._heartbeat is not None, "the source is not running"
        failures = await self._heartbeat.change(items, entry)
        if failures:
            log.warning(
                f"could not set the {purpose}; messages come back after the visibility timeout",
                extra={"queue": self.ref.name, "errors": summary(failures)},
            )

    async def _abandon_all(self) -> None:
        """Messages received but never settled (a stopped batch, a poller's buffer, a receive
        whose fetch was cancelled) become visible at once, so another worker or the next
        start takes them without waiting for the visibility timeout."""
        handles = _handles(self._all_held())
        for poller in self._pollers.values():
            poller.forget(list(poller.held.values()))
        try:
            async with asyncio.timeout(ABANDON_TIMEOUT):
                if self._orphans:
                    await asyncio.wait(self._orphans)
                    handles += [m["ReceiptHandle"] for m in _orphaned_messages(self._orphans)]
                if handles:
                    await self._change_visibility(handles, release_now_entry, "release")
        except TimeoutError:
            log.warning(
                f"could not release unsettled messages within {ABANDON_TIMEOUT:g} s while "
                "stopping; they come back after the visibility timeout",
                extra={"queue": self.ref.name, "count": len(handles)},
            )
        for receive in self._orphans:
            receive.cancel()

    def _all_held(self) -> list[Record]:
        return [rec for poller in self._pollers.values() for rec in poller.held.values()]

    def gauges(self) -> dict[str, dict[str, float]]:
        """The queue's depth and oldest message age (see the class docstring) while running,
        from what the source keeps: a scrape makes no SQS call."""
        if self._depth is None:
            return {}
        name = self.ref.name
        return {
            "approximate_queue_depth": {name: float(self._depth.visible)},
            "approximate_oldest_message_age_seconds": {name: self._oldest_age},
        }

    def item_identifier(self, record: Record) -> Any:
        return record.meta["MessageId"]

    def identify(self, partition: str, item_identifier: Any) -> int:
        if not isinstance(item_identifier, str):
            raise ValueError(f"invalid itemIdentifier {item_identifier!r}: not a messageId")
        try:
            return self._pollers[partition].ids[item_identifier]
        except KeyError:
            raise ValueError(
                f"itemIdentifier {item_identifier!r} names no message of this batch"
            ) from None

    def event_size(self, record: Record) -> int:
        """The message's ``size`` (metadata included), with its body escaped as a JSON string
        and the comma after the record."""
        value = record.value
        return record.size + json_text_size(value) - len(value) + 1

    def lambda_event(self, partition: str, records: Sequence[Record]) -> dict[str, Any]:
        return {"Records": [self._event_record(rec) for rec in records]}

    def _event_record(self, rec: Record) -> dict[str, Any]:
        """One record of Lambda's SQS event (``aws:sqs``)."""
        message = rec.meta
        out: dict[str, Any] = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": rec.value.decode(),
            "attributes": dict(message["Attributes"]),
            "messageAttributes": _lambda_attributes(message.get("MessageAttributes", {})),
            "md5OfBody": message["MD5OfBody"],
        }
        if "MD5OfMessageAttributes" in message:
            out["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        out["eventSource"] = "aws:sqs"
        out["eventSourceARN"] = self._arn
        out["awsRegion"] = self._region
        return out

    def filter_view(self, record: Record) -> dict[str, Any]:
        try:
            body: Any = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            body = record.value.decode()
        message = record.meta
        return {
            "body": body,
            "attributes": message["Attributes"],
            "messageAttributes": _lambda_attributes(message.get("MessageAttributes", {})),
        }

    def trace_attributes(self, partition: str) -> Mapping[str, str]:
        """The batch span's messaging attributes (:class:`streamfn.source.TracedSource`); a
        poller is no partition of the queue, so only the queue's name."""
        return {"messaging.destination.name": self.ref.name}

    def trace_carrier(self, record: Record) -> Mapping[str, str]:
        """A message's upstream trace context: its ``AWSTraceHeader`` system attribute (X-Ray's
        format, which SQS sets from the sender's trace header) and its string message
        attributes (``traceparent``, as OpenTelemetry's botocore instrumentation writes it)."""
        message = record.meta
        carrier = {
            name.lower(): attribute["StringValue"]
            for name, attribute in message.get("MessageAttributes", {}).items()
            if "StringValue" in attribute
        }
        header = message["Attributes"].get("AWSTraceHeader")
        if header is not None:
            carrier["x-amzn-trace-id"] = header
        return carrier


def _handles(records: Iterable[Record]) -> list[str]:
    return [rec.meta["ReceiptHandle"] for rec in records]


def _orphaned_messages(receives: Iterable[asyncio.Future[Any]]) -> list[dict[str, Any]]:
    """The messages the finished receives brought back (a failed one brought none)."""
    messages: list[dict[str, Any]] = []
    for receive in receives:
        if receive.done() and not receive.cancelled() and receive.exception() is None:
            messages.extend(receive.result().get("Messages", ()))
    return messages


def _check_pollers(low: object, high: object) -> None:
    for name, value in (("min_pollers", low), ("max_pollers", high)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
            raise ConfigError.out_of_range(name, value, "an integer 1-1000")
    assert isinstance(low, int) and isinstance(high, int)
    if low > high:
        raise ConfigError(f"min_pollers={low} is invalid: must be <= max_pollers={high}")


def _check_seconds(name: str, value: object, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= high:
        raise ConfigError.out_of_range(name, value, f"a number of seconds from 0 to {high:g}")
