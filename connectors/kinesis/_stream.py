"""What Kinesis and DynamoDB Streams share as Lambda's stream event sources: the abstract
:class:`_StreamSource` that :mod:`.kinesis` and :mod:`.dynamodb_streams` fill in with their
service's calls and event format.

A source lists the stream's shards, leases them through the core's LeaseCoordinator (an SQLite
file in ``state_dir`` by default; a :class:`~streamfn.connectors.kinesis.DynamoDBLeaseStore` for
several workers) and reads each shard it holds with a reader of :mod:`._shards`. It re-lists the
shards every ``shard_sync_interval`` seconds, and at once when a shard it holds is finished: that
shard's lease becomes SHARD_END, and only then may its children start.

Tumbling windows are kept with the checkpoint (:class:`~streamfn.source.KeepsWindowState`): the
window the engine commits goes into the lease in the same conditional write, and a shard's
lease hands it back when this or another worker starts the shard again.

Sequence numbers are compared as integers (``Record.offset``), never as strings.
"""

from __future__ import annotations

import abc
import asyncio
import binascii
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
)

from streamfn.config import MappingConfig
from streamfn.destinations import iso_timestamp
from streamfn.errors import ConfigError, SourceError, SourceUnreachable
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

from .._aws import refusal
from ._shards import _NOT_FOUND, Position, ShardMetrics, _ShardReader

log = logging.getLogger("streamfn.kinesis")

#: GetRecords is paced by the source itself; botocore's own retries would bypass the pacer.
_CLIENT_CONFIG = AioConfig(retries={"total_max_attempts": 1}, max_pool_connections=64)


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _check_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError.out_of_range(name, value, "a number > 0")
    return float(value)


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
        #: The window stored with each held shard's checkpoint (absent: none).
        self._windows: dict[str, bytes] = {}
        self._start: Position = (TRIM_HORIZON, None)
        self._resync = asyncio.Event()

    @property
    def owned(self) -> frozenset[str]:
        """The shards this worker reads right now."""
        return frozenset(self._readers)

    @property
    def window_limit(self) -> int:
        """The largest window the lease store keeps with a checkpoint."""
        store = self._lease_store
        return store.window_limit if store is not None else SQLiteLeaseStore.window_limit

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
    def event_size(self, record: Record) -> int: ...

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
            if lease.window is not None:
                self._windows[lease.key] = lease.window
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
                self._windows.pop(key, None)

    def _finish(self, shard: str) -> None:
        if self.coordinator is not None:
            self.coordinator.finished(shard)
        self._resync.set()

    def gauges(self) -> dict[str, dict[str, float]]:
        """Lambda's IteratorAge per shard held, in seconds: what each shard's reader computed
        when its last GetRecords returned (see :class:`ShardMetrics`), so no call is made."""
        return {
            "iterator_age_seconds": {
                shard: metrics.iterator_age_ms / 1000 for shard, metrics in self.metrics.items()
            }
        }

    # -- the engine's side ----------------------------------------------------------------

    async def fetch(self, partition: str, max_records: int, timeout: float) -> Sequence[Record]:
        reader = self._readers.get(partition)
        if reader is None:  # released while the poller was on its way here
            await asyncio.sleep(timeout)
            return ()
        return await reader.read(max_records, timeout)

    async def commit(self, partition: str, record: Record) -> None:
        await self.commit_window(partition, record, None)

    async def commit_window(
        self, partition: str, record: Record | None, window: bytes | None
    ) -> None:
        coordinator = self.coordinator
        checkpoint: str | None = None
        if coordinator is not None:
            checkpoint = (
                str(record.offset) if record is not None else coordinator.checkpoint_of(partition)
            )
        if checkpoint is None and window is None and coordinator is not None:
            self._windows.pop(partition, None)  # no checkpoint has a window to remove
            return
        if (
            coordinator is None
            or checkpoint is None
            or not await coordinator.checkpoint(partition, checkpoint, window)
        ):
            log.debug(
                "not checkpointing a shard this worker does not hold", extra={"shard": partition}
            )
            return
        if window is None:
            self._windows.pop(partition, None)
        elif partition in self._readers:
            self._windows[partition] = window
        reader = self._readers.get(partition)
        if reader is not None and record is not None:
            reader.committed = record.offset
            if reader.done():
                self._finish(partition)

    def window_state(self, partition: str) -> bytes | None:
        return self._windows.get(partition)

    def finished(self, partition: str) -> bool:
        reader = self._readers.get(partition)
        return reader is not None and reader.done()

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
        """What a failed describe call at start-up means: the stream is missing or access is
        refused (the mapping is disabled), or the service cannot be reached (it reconnects)."""
        code = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else ""
        endpoint = self._client_args["endpoint_url"] or "AWS"
        if code == _NOT_FOUND:
            return SourceError(
                f"{what} {self.stream!r} does not exist (region {self._region}, {endpoint})"
            )
        refused = refusal(exc)
        if refused is not None:
            return SourceError(f"AWS refused access to {what} {self.stream!r} ({refused})")
        if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
            return SourceUnreachable(f"cannot reach {what} {self.stream!r} at {endpoint}: {exc}")
        return SourceError(f"cannot describe {what} {self.stream!r}: {exc!r}")
