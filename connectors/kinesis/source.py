"""Kinesis Data Streams and DynamoDB Streams as Lambda's stream event sources, on aiobotocore.

A source lists the stream's shards, leases them through the core's LeaseCoordinator (an SQLite
file in ``state_dir`` by default; a :class:`~streamfn.connectors.kinesis.DynamoDBLeaseStore` for
several workers) and reads each shard it holds with GetShardIterator/GetRecords:

- at most ``max_calls_per_second`` GetRecords calls per shard (Kinesis allows 5, shared by every
  consumer of the shard; every source of this process reading a shard shares one pacer), with
  exponential backoff on ProvisionedThroughputExceededException and other throttles;
- one GetRecords response is buffered, so the engine's small fetches cost no extra calls;
- an expired iterator is renewed after the last record read (AFTER_SEQUENCE_NUMBER), and a new
  lease starts after its checkpoint; the mapping's starting_position applies only to a shard
  without one;
- a shard whose GetRecords returns no NextShardIterator is finished once its last record is
  checkpointed: its lease becomes SHARD_END, and only then may its children start.

Sequence numbers are compared as integers (``Record.offset``), never as strings.
"""

from __future__ import annotations

import abc
import asyncio
import binascii
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import orjson
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError

from streamfn.backoff import retry_delay
from streamfn.config import MappingConfig
from streamfn.destinations import iso_timestamp
from streamfn.errors import ConfigError, SourceError
from streamfn.leases import (
    TRIM_HORIZON,
    Lease,
    LeaseCoordinator,
    LeaseStore,
    ShardInfo,
    SQLiteLeaseStore,
)
from streamfn.record import Record
from streamfn.source import AssignmentListener

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
#: GetRecords is paced by the source itself; botocore's own retries would bypass the pacer.
_CLIENT_CONFIG = AioConfig(retries={"total_max_attempts": 1}, max_pool_connections=64)

Position = tuple[str, Any]  # (ShardIteratorType, sequence number or timestamp)


@dataclass(slots=True)
class ShardMetrics:
    """What a shard's reader reports, per shard this worker holds."""

    #: Kinesis's MillisBehindLatest from the last GetRecords (None for DynamoDB Streams).
    millis_behind_latest: int | None = None
    #: Age of the newest record read (Lambda's IteratorAge); 0 once caught up.
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


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _check_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError.out_of_range(name, value, "a number > 0")
    return float(value)


class _ShardReader:
    """Reads one held shard: pacing, backoff, iterator renewal, a one-response buffer, and the
    end of a closed shard."""

    def __init__(self, source: _StreamSource, lease: Lease, metrics: ShardMetrics) -> None:
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
        if code == "ExpiredIteratorException":
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


class _StreamSource(abc.ABC):
    """What Kinesis and DynamoDB Streams share: leases, shard sync, reading and checkpoints."""

    default_batch_size = 100
    default_batching_window = 0.0
    kind: str
    _service: ClassVar[str]
    _batch_info: ClassVar[str]
    _max_records_per_call: ClassVar[int]
    _positions: ClassVar[tuple[str, ...]]
    _idle_interval: ClassVar[float]  # Lambda's polling rate of a caught-up shard

    def __init__(
        self,
        stream: str,
        *,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        session: AioSession | None = None,
        lease_store: LeaseStore | None = None,
        state_dir: str | os.PathLike[str] = "state",
        worker_id: str | None = None,
        lease_duration: float = 10.0,
        shard_sync_interval: float = 60.0,
        max_calls_per_second: float = 5.0,
        idle_interval: float | None = None,
        records_per_call: int | None = None,
    ) -> None:
        if not isinstance(stream, str) or not stream:
            raise ConfigError.out_of_range("stream", stream, "a stream name or ARN")
        self.stream = stream
        self.lease_duration = _check_positive("lease_duration", lease_duration)
        self.shard_sync_interval = _check_positive("shard_sync_interval", shard_sync_interval)
        self.max_calls_per_second = _check_positive("max_calls_per_second", max_calls_per_second)
        self.idle_interval = _check_positive(
            "idle_interval", self._idle_interval if idle_interval is None else idle_interval
        )
        limit = self._max_records_per_call if records_per_call is None else records_per_call
        if (
            not isinstance(limit, int)
            or isinstance(limit, bool)
            or not 1 <= limit <= self._max_records_per_call
        ):
            raise ConfigError.out_of_range(
                "records_per_call", limit, f"an integer from 1 to {self._max_records_per_call}"
            )
        self.records_per_call = limit
        if region_name is None and stream.startswith("arn:"):
            region_name = stream.split(":")[3]
        self._client_args: dict[str, Any] = {
            "region_name": region_name,
            "endpoint_url": endpoint_url,
            "aws_access_key_id": aws_access_key_id,
            "aws_secret_access_key": aws_secret_access_key,
            "aws_session_token": aws_session_token,
        }
        self._session = session or get_session()
        self._lease_store = lease_store
        self.state_dir = Path(state_dir)
        self.worker_id = worker_id
        #: MillisBehindLatest, iterator age and call counts of every shard held right now.
        self.metrics: dict[str, ShardMetrics] = {}
        self.stream_arn = stream if stream.startswith("arn:") else ""
        self.coordinator: LeaseCoordinator | None = None
        self._client: Any = None
        self._listener: AssignmentListener | None = None
        self._readers: dict[str, _ShardReader] = {}
        self._start: Position = (TRIM_HORIZON, None)
        self._resync = asyncio.Event()

    @property
    def owned(self) -> frozenset[str]:
        """The shards this worker reads right now."""
        return frozenset(self._readers)

    @property
    def _region(self) -> str:
        return str(self._client.meta.region_name) if self._client is not None else "?"

    # -- the service ----------------------------------------------------------------------

    @abc.abstractmethod
    async def _resolve(self) -> str:
        """The stream ARN; SourceError when the stream does not exist."""

    @abc.abstractmethod
    async def _list_shards(self) -> list[ShardInfo]: ...

    @abc.abstractmethod
    async def _shard_iterator(self, shard: str, position: Position) -> str: ...

    @abc.abstractmethod
    async def _get_records(self, iterator: str) -> tuple[list[Any], str | None, int | None]:
        """(raw records, next iterator or None at the end of a closed shard, ms behind)."""

    @abc.abstractmethod
    def _records(self, shard: str, raw: list[Any]) -> list[Record]: ...

    @abc.abstractmethod
    def describe(self) -> str: ...

    @abc.abstractmethod
    def lambda_event(self, partition: str, records: Sequence[Record]) -> dict[str, Any]: ...

    @abc.abstractmethod
    def filter_view(self, record: Record) -> dict[str, Any]: ...

    # -- running --------------------------------------------------------------------------

    def _starting_position(self, config: MappingConfig) -> Position:
        position = config.starting_position or TRIM_HORIZON
        if position not in self._positions:
            raise ConfigError.out_of_range(
                "starting_position", position, f"{' or '.join(self._positions)} for {self.kind}"
            )
        return position, config.starting_position_timestamp if position == "AT_TIMESTAMP" else None

    async def run(self, config: MappingConfig, listener: AssignmentListener) -> None:
        self._start = self._starting_position(config)
        async with self._session.create_client(
            self._service, config=_CLIENT_CONFIG, **self._client_args
        ) as client:
            self._client = client
            self.stream_arn = await self._resolve()
            shards = await self._shards()
            store = self._lease_store or SQLiteLeaseStore(self._default_store_path())
            await store.open()
            coordinator = LeaseCoordinator(
                store, self, worker_id=self.worker_id, lease_duration=self.lease_duration
            )
            self._listener, self.coordinator = listener, coordinator
            try:
                await coordinator.sync(shards, skip_closed=self._start[0] == "LATEST")
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(coordinator.run())
                    tg.create_task(self._sync_loop(coordinator))
            finally:
                await coordinator.shutdown()
                await store.close()
                self._listener = self.coordinator = self._client = None

    def _default_store_path(self) -> Path:
        name = self.stream_arn.split(":", 5)[5].split("/")[1]
        return self.state_dir / f"{self.kind}-{name}.leases.sqlite3"

    async def _shards(self) -> list[ShardInfo]:
        try:
            return await self._list_shards()
        except ClientError as exc:
            if exc.response["Error"]["Code"] == _NOT_FOUND:
                raise SourceError(f"{self.describe()}: the stream no longer exists") from exc
            raise

    async def _sync_loop(self, coordinator: LeaseCoordinator) -> None:
        """Re-list the shards periodically, and at once when a shard ends (its children)."""
        while True:
            self._resync.clear()
            try:
                async with asyncio.timeout(self.shard_sync_interval):
                    await self._resync.wait()
            except TimeoutError:
                pass
            try:
                await coordinator.sync(await self._shards())
            except (ClientError, BotoCoreError, OSError) as exc:
                log.warning(
                    "shard sync failed; retrying",
                    extra={"source": self.describe(), "error": repr(exc)},
                )

    # -- the LeaseHolder side -------------------------------------------------------------

    async def started(self, leases: Sequence[Lease]) -> None:
        for lease in leases:
            metrics = self.metrics[lease.key] = ShardMetrics()
            self._readers[lease.key] = _ShardReader(self, lease, metrics)
        assert self._listener is not None
        await self._listener.assigned([lease.key for lease in leases])

    async def stopped(self, keys: Sequence[str]) -> None:
        assert self._listener is not None
        try:
            await self._listener.revoked(keys)
        finally:
            for key in keys:
                self._readers.pop(key, None)
                self.metrics.pop(key, None)

    def _finish(self, shard: str) -> None:
        if self.coordinator is not None:
            self.coordinator.finished(shard)
        self._resync.set()

    # -- the engine's side ----------------------------------------------------------------

    async def fetch(self, partition: str, max_records: int, timeout: float) -> Sequence[Record]:
        reader = self._readers.get(partition)
        if reader is None:  # released while the poller was on its way here
            await asyncio.sleep(timeout)
            return ()
        return await reader.read(max_records, timeout)

    async def commit(self, partition: str, record: Record) -> None:
        coordinator = self.coordinator
        if coordinator is None or not await coordinator.checkpoint(partition, str(record.offset)):
            log.debug(
                "not checkpointing a shard this worker does not hold", extra={"shard": partition}
            )
            return
        reader = self._readers.get(partition)
        if reader is not None:
            reader.committed = record.offset
            if reader.done():
                self._finish(partition)

    def item_identifier(self, record: Record) -> Any:
        return str(record.offset)

    def identify(self, partition: str, item_identifier: Any) -> int:
        if (
            not isinstance(item_identifier, str)
            or not item_identifier.isascii()
            or not item_identifier.isdigit()
        ):
            raise ValueError(f"itemIdentifier {item_identifier!r} is not a sequence number")
        return int(item_identifier)

    def batch_info(self, partition: str, records: Sequence[Record]) -> tuple[str, dict[str, Any]]:
        first, last = records[0], records[-1]
        return (
            self._batch_info,
            {
                "shardId": partition,
                "startSequenceNumber": str(first.offset),
                "endSequenceNumber": str(last.offset),
                "approximateArrivalOfFirstRecord": iso_timestamp(first.timestamp),
                "approximateArrivalOfLastRecord": iso_timestamp(last.timestamp),
                "batchSize": len(records),
                "streamArn": self.stream_arn,
            },
        )

    def _source_error(self, what: str, exc: Exception) -> SourceError:
        code = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else ""
        if code == _NOT_FOUND:
            endpoint = self._client_args["endpoint_url"] or "AWS"
            return SourceError(
                f"{what} {self.stream!r} does not exist (region {self._region}, {endpoint})"
            )
        return SourceError(f"cannot describe {what} {self.stream!r}: {exc!r}")


class KinesisSource(_StreamSource):
    """A Kinesis data stream (by name or ARN) as Lambda's Kinesis event source.

    ``starting_position`` (TRIM_HORIZON when unset, LATEST or AT_TIMESTAMP) applies to shards
    without a checkpoint. ``lease_store`` defaults to an SQLite file in ``state_dir``, enough for
    one worker; pass a DynamoDBLeaseStore to share the stream between workers (one table per
    stream and application). A shard is polled at most ``max_calls_per_second`` times a second
    (AWS allows 5 per shard across all consumers) and every ``idle_interval`` seconds once
    caught up (Lambda: once a second).
    """

    kind = "kinesis"
    _service = "kinesis"
    _batch_info = "KinesisBatchInfo"
    _max_records_per_call = 10_000
    _positions = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")
    _idle_interval = 1.0
    #: ListShards page size.
    list_page_size = 1000

    def __init__(
        self,
        stream: str,
        *,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        session: AioSession | None = None,
        lease_store: LeaseStore | None = None,
        state_dir: str | os.PathLike[str] = "state",
        worker_id: str | None = None,
        lease_duration: float = 10.0,
        shard_sync_interval: float = 60.0,
        max_calls_per_second: float = 5.0,
        idle_interval: float | None = None,
        records_per_call: int | None = None,
        invoke_identity_arn: str | None = None,
    ) -> None:
        super().__init__(
            stream,
            region_name=region_name,
            endpoint_url=endpoint_url,
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
            aws_session_token=aws_session_token,
            session=session,
            lease_store=lease_store,
            state_dir=state_dir,
            worker_id=worker_id,
            lease_duration=lease_duration,
            shard_sync_interval=shard_sync_interval,
            max_calls_per_second=max_calls_per_second,
            idle_interval=idle_interval,
            records_per_call=records_per_call,
        )
        self.invoke_identity_arn = invoke_identity_arn

    def describe(self) -> str:
        return f"kinesis://{self.stream}"

    def _stream_ref(self) -> dict[str, str]:
        if self.stream_arn:
            return {"StreamARN": self.stream_arn}
        return {"StreamName": self.stream}

    async def _resolve(self) -> str:
        try:
            summary = await self._client.describe_stream_summary(**self._stream_ref())
        except (ClientError, BotoCoreError) as exc:
            raise self._source_error("Kinesis stream", exc) from exc
        arn: str = summary["StreamDescriptionSummary"]["StreamARN"]
        if self.invoke_identity_arn is None:
            self.invoke_identity_arn = f"arn:aws:iam::{arn.split(':')[4]}:role/streamfn"
        return arn

    async def _list_shards(self) -> list[ShardInfo]:
        shards: list[ShardInfo] = []
        kwargs: dict[str, Any] = {"StreamARN": self.stream_arn, "MaxResults": self.list_page_size}
        while True:
            page = await self._client.list_shards(**kwargs)
            for shard in page["Shards"]:
                parents = (shard.get("ParentShardId"), shard.get("AdjacentParentShardId"))
                shards.append(
                    ShardInfo(
                        shard["ShardId"],
                        tuple(p for p in parents if p),
                        "EndingSequenceNumber" in shard["SequenceNumberRange"],
                    )
                )
            token = page.get("NextToken")
            if not token:
                return shards
            kwargs["NextToken"] = token  # with the ARN: AWS refuses only a StreamName here

    async def _shard_iterator(self, shard: str, position: Position) -> str:
        kind, value = position
        kwargs: dict[str, Any] = {
            "StreamARN": self.stream_arn,
            "ShardId": shard,
            "ShardIteratorType": kind,
        }
        if kind == "AFTER_SEQUENCE_NUMBER":
            kwargs["StartingSequenceNumber"] = value
        elif kind == "AT_TIMESTAMP":
            kwargs["Timestamp"] = value
        response = await self._client.get_shard_iterator(**kwargs)
        iterator: str = response["ShardIterator"]
        return iterator

    async def _get_records(self, iterator: str) -> tuple[list[Any], str | None, int | None]:
        response = await self._client.get_records(
            ShardIterator=iterator, Limit=self.records_per_call, StreamARN=self.stream_arn
        )
        return (
            response["Records"],
            response.get("NextShardIterator"),
            response.get("MillisBehindLatest"),
        )

    def _records(self, shard: str, raw: list[Any]) -> list[Record]:
        return [
            Record(
                shard,
                int(r["SequenceNumber"]),
                r["Data"],
                r["PartitionKey"].encode(),
                r["ApproximateArrivalTimestamp"].timestamp(),
                (),
                r,
            )
            for r in raw
        ]

    def lambda_event(self, partition: str, records: Sequence[Record]) -> dict[str, Any]:
        arn = self.stream_arn
        region = arn.split(":")[3]
        identity = self.invoke_identity_arn
        return {
            "Records": [
                {
                    "kinesis": {
                        "kinesisSchemaVersion": "1.0",
                        "partitionKey": r.meta["PartitionKey"],
                        "sequenceNumber": r.meta["SequenceNumber"],
                        "data": _b64(r.value),
                        "approximateArrivalTimestamp": round(r.timestamp, 3),
                    },
                    "eventSource": "aws:kinesis",
                    "eventVersion": "1.0",
                    "eventID": f"{partition}:{r.meta['SequenceNumber']}",
                    "eventName": "aws:kinesis:record",
                    "invokeIdentityArn": identity,
                    "awsRegion": region,
                    "eventSourceARN": arn,
                }
                for r in records
            ]
        }

    def filter_view(self, record: Record) -> dict[str, Any]:
        try:
            data: Any = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            data = record.value.decode(errors="replace")
        return {"data": data, "partitionKey": record.meta["PartitionKey"]}


def _ddb_json(value: Any) -> Any:
    """orjson's fallback for DynamoDB JSON: binary attributes travel base64-encoded."""
    if isinstance(value, bytes | bytearray):
        return _b64(bytes(value))
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class DynamoDBStreamSource(_StreamSource):
    """A DynamoDB table's stream (its stream ARN, or the table name to use the table's latest
    stream) as Lambda's DynamoDB Streams event source. ``starting_position`` is TRIM_HORIZON
    (when unset) or LATEST; other settings as for :class:`KinesisSource`. Lambda polls
    DynamoDB Streams 4 times a second, hence the shorter default ``idle_interval``.
    """

    kind = "dynamodb"
    _service = "dynamodbstreams"
    _batch_info = "DDBStreamBatchInfo"
    _max_records_per_call = 1000
    _positions = ("TRIM_HORIZON", "LATEST")
    _idle_interval = 0.25

    def describe(self) -> str:
        return f"dynamodb://{self.stream}"

    async def _resolve(self) -> str:
        arn = self.stream_arn or await self._latest_stream_arn()
        try:
            await self._client.describe_stream(StreamArn=arn, Limit=1)
        except (ClientError, BotoCoreError) as exc:
            raise self._source_error("DynamoDB stream", exc) from exc
        return arn

    async def _latest_stream_arn(self) -> str:
        async with self._session.create_client("dynamodb", **self._client_args) as dynamodb:
            try:
                table = (await dynamodb.describe_table(TableName=self.stream))["Table"]
            except (ClientError, BotoCoreError) as exc:
                raise self._source_error("DynamoDB table", exc) from exc
        arn = table.get("LatestStreamArn")
        if not arn or not table.get("StreamSpecification", {}).get("StreamEnabled"):
            raise SourceError(f"DynamoDB table {self.stream!r} has no stream enabled")
        return str(arn)

    async def _list_shards(self) -> list[ShardInfo]:
        shards: list[ShardInfo] = []
        kwargs: dict[str, Any] = {"StreamArn": self.stream_arn}
        while True:
            description = (await self._client.describe_stream(**kwargs))["StreamDescription"]
            for shard in description.get("Shards", ()):
                parent = shard.get("ParentShardId")
                shards.append(
                    ShardInfo(
                        shard["ShardId"],
                        (parent,) if parent else (),
                        "EndingSequenceNumber" in shard["SequenceNumberRange"],
                    )
                )
            last = description.get("LastEvaluatedShardId")
            if not last:
                return shards
            kwargs["ExclusiveStartShardId"] = last

    async def _shard_iterator(self, shard: str, position: Position) -> str:
        kind, value = position
        kwargs: dict[str, Any] = {
            "StreamArn": self.stream_arn,
            "ShardId": shard,
            "ShardIteratorType": kind,
        }
        if kind == "AFTER_SEQUENCE_NUMBER":
            kwargs["SequenceNumber"] = value
        response = await self._client.get_shard_iterator(**kwargs)
        iterator: str = response["ShardIterator"]
        return iterator

    async def _get_records(self, iterator: str) -> tuple[list[Any], str | None, int | None]:
        response = await self._client.get_records(
            ShardIterator=iterator, Limit=self.records_per_call
        )
        return response["Records"], response.get("NextShardIterator"), None

    def _records(self, shard: str, raw: list[Any]) -> list[Record]:
        records = []
        for r in raw:
            change = r["dynamodb"]
            created = change.get("ApproximateCreationDateTime")
            timestamp = created.timestamp() if created is not None else time.time()
            change["ApproximateCreationDateTime"] = int(timestamp)
            records.append(
                Record(
                    shard,
                    int(change["SequenceNumber"]),
                    orjson.dumps(change, default=_ddb_json),
                    orjson.dumps(change.get("Keys"), default=_ddb_json),
                    timestamp,
                    (),
                    r,
                )
            )
        return records

    def _event_record(self, record: Record) -> dict[str, Any]:
        raw = record.meta
        event = {
            "eventID": raw["eventID"],
            "eventName": raw["eventName"],
            "eventVersion": raw.get("eventVersion", "1.1"),
            "eventSource": "aws:dynamodb",
            "awsRegion": raw.get("awsRegion") or self.stream_arn.split(":")[3],
            "dynamodb": orjson.loads(record.value),
            "eventSourceARN": self.stream_arn,
        }
        if "userIdentity" in raw:
            event["userIdentity"] = raw["userIdentity"]
        return event

    def lambda_event(self, partition: str, records: Sequence[Record]) -> dict[str, Any]:
        return {"Records": [self._event_record(r) for r in records]}

    def filter_view(self, record: Record) -> dict[str, Any]:
        view = self._event_record(record)
        del view["eventSourceARN"]
        return view
