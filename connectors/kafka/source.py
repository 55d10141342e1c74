"""Kafka as Lambda's MSK / self-managed Kafka event source, on aiokafka.

The source owns the consumer and its group membership; the engine owns batching, retries and
the order of checkpoints, and commits through :meth:`KafkaSource.commit`. Offsets are committed
by hand (``enable_auto_commit=False``): a record is committed only once it has succeeded or been
handed to the on-failure destination, and only by the member that owns its partition at that
moment. This module also builds Lambda's Kafka event and the filter view of a record.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import ssl
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    IllegalStateError,
    KafkaError,
    TopicAuthorizationFailedError,
)

from streamfn import tracing
from streamfn.config import MappingConfig
from streamfn.destinations import iso_timestamp
from streamfn.errors import ConfigError, SourceError
from streamfn.record import Record, json_text_size
from streamfn.source import AssignmentListener

from .._retrylog import RetryLog
from ._client import (
    MANAGED_OPTIONS,
    REFUSED,
    TOPIC,
    check_group_id,
    check_options,
    check_seconds,
    client_options,
    keep_alive,
    parse_servers,
    partition_id,
    security_of,
    split_partition_id,
    start_client,
)
from .destination import KafkaDestination
from .security import KafkaSecurity

#: Errors a fetch can meet that no retry fixes; any other (a broker away, a leader moving) is
#: transient: aiokafka recovers and the poller backs off meanwhile.
_REFUSED = (
    *REFUSED,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    TopicAuthorizationFailedError,
)

log = logging.getLogger("streamfn.kafka")

TIMESTAMP_TYPES = ("CREATE_TIME", "LOG_APPEND_TIME")

#: StartingPosition -> aiokafka's auto_offset_reset, used only where the group has no commit.
#: AT_TIMESTAMP seeks by time on assignment; if that lookup fails it falls back to the earliest
#: offset, so a failure replays records rather than skipping them.
_OFFSET_RESET = {"TRIM_HORIZON": "earliest", "LATEST": "latest", "AT_TIMESTAMP": "earliest"}


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


_UNREADABLE = object()


def _decoded(data: bytes) -> Any:
    """JSON when the bytes parse as JSON, else the UTF-8 text, else _UNREADABLE."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        try:
            return data.decode()
        except UnicodeDecodeError:
            return _UNREADABLE


class KafkaSource:
    """A Kafka consumer group member feeding one event source mapping.

    ``topic`` is one topic name or several. ``group_id`` is the consumer group (AWS's
    ConsumerGroupId): when it already has committed offsets, those win over the mapping's
    ``starting_position`` (TRIM_HORIZON when unset), as on AWS. ``group_instance_id`` turns on
    static membership, so a restarted worker gets its partitions back without a rebalance.
    ``cluster_arn`` makes events look like Amazon MSK's (``aws:kafka``) instead of self-managed
    Kafka's. ``security`` is how to connect and authenticate (:class:`KafkaSecurity`: TLS,
    SASL/SCRAM or PLAIN, mutual TLS, MSK IAM; aiokafka's ``security_protocol``/``sasl_*``
    keywords say the same for existing callers). ``consumer_options`` passes any other
    AIOKafkaConsumer option through.

    :meth:`gauges` reports AWS's OffsetLag per owned partition: its end offset minus the
    group's committed offset. The committed offset is the one this member last committed (at
    first, the offset it resumed from); the end offset is the high watermark of the last fetch
    or, when the partition is not being fetched (its records wait on the function), the end
    offsets read from the broker every ``lag_interval`` seconds in the background.

    A broker that is down at start-up is retried with backoff for ``connect_timeout`` seconds,
    then :class:`~streamfn.errors.SourceError` is raised. :meth:`commit` for a partition this
    member does not own (any more) does nothing: its new owner resumes from the last commit.
    """

    kind = "kafka"
    default_batch_size = 100
    default_batching_window = 0.5  # AWS's default for Kafka

    def __init__(
        self,
        topic: str | Sequence[str],
        *,
        bootstrap_servers: str | Sequence[str],
        group_id: str,
        group_instance_id: str | None = None,
        security: KafkaSecurity | None = None,
        security_protocol: str = "PLAINTEXT",
        ssl_context: ssl.SSLContext | None = None,
        sasl_mechanism: str | None = None,
        sasl_plain_username: str | None = None,
        sasl_plain_password: str | None = None,
        cluster_arn: str | None = None,
        connect_timeout: float = 60.0,
        commit_timeout: float = 10.0,
        lag_interval: float = 5.0,
        consumer_options: Mapping[str, Any] | None = None,
    ) -> None:
        topics = [topic] if isinstance(topic, str) else list(topic)
        if not topics or not all(isinstance(t, str) and TOPIC.fullmatch(t) for t in topics):
            raise ConfigError.out_of_range(
                "topic", topic, "one or more topic names of 1-249 letters, digits, '.', '_', '-'"
            )
        check_group_id(group_id)
        check_seconds("connect_timeout", connect_timeout)
        check_seconds("commit_timeout", commit_timeout)
        check_seconds("lag_interval", lag_interval)
        servers = parse_servers(bootstrap_servers)
        self.topics = tuple(topics)
        self.bootstrap_servers = ",".join(servers)
        self.group_id = group_id
        self.group_instance_id = group_instance_id
        self.cluster_arn = cluster_arn
        self.connect_timeout = float(connect_timeout)
        self.commit_timeout = float(commit_timeout)
        self.lag_interval = float(lag_interval)
        self.consumer_options = dict(consumer_options or {})
        check_options("consumer_options", self.consumer_options, AIOKafkaConsumer, MANAGED_OPTIONS)
        self.security = security_of(
            security,
            security_protocol,
            ssl_context,
            sasl_mechanism,
            sasl_plain_username,
            sasl_plain_password,
        )
        self._client_options = client_options(servers, self.security)
        self._event_source = "aws:kafka" if cluster_arn else "SelfManagedKafka"
        self._consumer: Any = None
        self._owned: dict[str, TopicPartition] = {}
        #: Per owned partition, for offset_lag: the next offset the group resumes from (what
        #: this member committed last, or where it started) and the end offset last read.
        self._committed: dict[str, int] = {}
        self._ends: dict[str, int] = {}

    def describe(self) -> str:
        return f"kafka://{self.bootstrap_servers}/{','.join(self.topics)}"

    def failure_topic(self, topic: str) -> KafkaDestination:
        """The on-failure destination an AWS DestinationConfig names as ``kafka://<topic>``:
        a topic of this source's cluster, reached with this source's connection settings. As
        on Lambda it may not be a topic the mapping reads (failed records would come back)."""
        if topic in self.topics:
            raise ConfigError(
                f"topic {topic!r} is read by this mapping: it cannot take its failures"
            )
        return KafkaDestination(
            topic, bootstrap_servers=self.bootstrap_servers, security=self.security
        )

    @property
    def partitions(self) -> frozenset[str]:
        """The partitions this member owns right now."""
        return frozenset(self._owned)

    # -- group membership ------------------------------------------------------------------

    async def run(self, config: MappingConfig, listener: AssignmentListener) -> None:
        consumer = await self._connect(config)
        self._consumer = consumer
        try:
            consumer.subscribe(list(self.topics), listener=_Rebalance(self, listener, config))
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._refresh_ends(consumer))
                await keep_alive(consumer, f"Kafka consumer group {self.group_id!r}")
        finally:
            self._owned.clear()
            self._committed.clear()
            self._ends.clear()
            self._consumer = None
            await consumer.stop()

    def _consumer_kwargs(self, config: MappingConfig) -> dict[str, Any]:
        # The broker must wait for a revoked partition's drain and final commit.
        rebalance_ms = int((config.shutdown_timeout + self.commit_timeout) * 1000)
        return {
            "rebalance_timeout_ms": rebalance_ms,
            **self.consumer_options,
            **self._client_options,
            "group_id": self.group_id,
            "group_instance_id": self.group_instance_id,
            "enable_auto_commit": False,
            "auto_offset_reset": _OFFSET_RESET[config.starting_position or "TRIM_HORIZON"],
        }

    async def _connect(self, config: MappingConfig) -> Any:
        kwargs = self._consumer_kwargs(config)
        consumer = await start_client(
            lambda: AIOKafkaConsumer(**kwargs),
            self.bootstrap_servers,
            self.connect_timeout,
            {"source": self.describe()},
            security=self.security,
        )
        log.info("connected to Kafka", extra={"source": self.describe()})
        return consumer

    def _own(self, partitions: Iterable[TopicPartition]) -> list[str]:
        ids = []
        for tp in partitions:
            pid = partition_id(tp.topic, tp.partition)
            self._owned[pid] = tp
            self._committed.pop(pid, None)  # another member may have committed since
            self._ends.pop(pid, None)
            ids.append(pid)
        return ids

    def _disown(self, partitions: Iterable[str]) -> None:
        for pid in partitions:
            self._owned.pop(pid, None)
            self._committed.pop(pid, None)
            self._ends.pop(pid, None)

    async def _seek_to_timestamp(self, partitions: Collection[TopicPartition], at: float) -> None:
        """AT_TIMESTAMP for the partitions the group has no commit for; past the newest record
        it behaves as LATEST."""
        consumer = self._consumer
        fresh = [tp for tp in partitions if await consumer.committed(tp) is None]
        if not fresh:
            return
        found = await consumer.offsets_for_times(dict.fromkeys(fresh, int(at * 1000)))
        ends = await consumer.end_offsets(fresh)
        for tp in fresh:
            hit = found.get(tp)
            consumer.seek(tp, hit.offset if hit is not None else ends[tp])

    # -- the engine's side -----------------------------------------------------------------

    async def fetch(self, partition: str, max_records: int, timeout: float) -> Sequence[Record]:
        tp = self._owned.get(partition)
        if tp is None:  # revoked while the poller was on its way here
            await asyncio.sleep(timeout)
            return ()
        try:
            batches = await self._consumer.getmany(
                tp, timeout_ms=timeout * 1000, max_records=max_records
            )
        except _REFUSED as exc:  # retrying changes nothing: the mapping is disabled
            raise SourceError(f"{self.describe()}: access refused: {exc!r}") from exc
        messages = batches.get(tp)
        if not messages:
            return ()
        if partition not in self._committed:  # the first fetch resumes at the group's commit
            self._committed[partition] = messages[0].offset
        # One Record per message and nothing else: this is the hot path. ``meta`` keeps the
        # timestamp type, the one field the Lambda event needs that Record has no slot for; a
        # null value (tombstone) becomes b"".
        return [
            Record(
                partition,
                m.offset,
                m.value or b"",
                m.key,
                m.timestamp / 1000,
                m.headers,
                m.timestamp_type,
            )
            for m in messages
        ]

    async def commit(self, partition: str, record: Record) -> None:
        tp = self._owned.get(partition)
        consumer = self._consumer
        if tp is None or consumer is None:
            log.debug(
                "not committing a partition this member does not own",
                extra={"partition": partition, "offset": record.offset},
            )
            return
        async with asyncio.timeout(self.commit_timeout):
            await consumer.commit({tp: record.offset + 1})
        if partition in self._owned:
            self._committed[partition] = record.offset + 1

    def item_identifier(self, record: Record) -> Any:
        return {"partition": record.partition, "offset": record.offset}

    def identify(self, partition: str, item_identifier: Any) -> int:
        if not isinstance(item_identifier, Mapping):
            raise ValueError(f"itemIdentifier {item_identifier!r} is not {{partition, offset}}")
        named = item_identifier.get("partition")
        offset = item_identifier.get("offset")
        if named != partition:
            raise ValueError(f"itemIdentifier names partition {named!r}, not {partition!r}")
        if isinstance(offset, bool) or not isinstance(offset, int | str):
            raise ValueError(f"itemIdentifier offset {offset!r} is not an integer")
        return int(offset)

    def event_size(self, record: Record) -> int:
        # Key and value in base64: at most 4/3 of their bytes (``size``) and padding.
        size = _RECORD_SIZE + len(record.partition) + (4 * record.size + 16) // 3
        for name, value in record.headers:
            size += _HEADER_SIZE + json_text_size(name.encode())
            size += 4 * len(value) if value is not None else 4
        return size

    def lambda_event(self, partition: str, records: Sequence[Record]) -> dict[str, Any]:
        event: dict[str, Any] = {"eventSource": self._event_source}
        if self.cluster_arn:
            event["eventSourceArn"] = self.cluster_arn
        event["bootstrapServers"] = self.bootstrap_servers
        topic, number = split_partition_id(partition)
        event["records"] = {partition: [_lambda_record(topic, number, r) for r in records]}
        return event

    def batch_info(self, partition: str, records: Sequence[Record]) -> tuple[str, dict[str, Any]]:
        """The on-failure record's ``KafkaBatchInfo``. Its ``eventSourceArn`` is the event's:
        the MSK cluster's ARN, and for self-managed Kafka, whose events carry none, absent
        rather than null."""
        first, last = records[0], records[-1]
        info: dict[str, Any] = {"batchSize": len(records)}
        if self.cluster_arn:
            info["eventSourceArn"] = self.cluster_arn
        info["bootstrapServers"] = self.bootstrap_servers
        info["payloadSize"] = len(orjson.dumps(self.lambda_event(partition, records)))
        info["recordsInfo"] = {
            partition: {
                "firstRecordOffset": str(first.offset),
                "lastRecordOffset": str(last.offset),
                "firstRecordTimestamp": iso_timestamp(first.timestamp),
                "lastRecordTimestamp": iso_timestamp(last.timestamp),
            }
        }
        return "KafkaBatchInfo", info

    def filter_view(self, record: Record) -> dict[str, Any]:
        topic, number = split_partition_id(record.partition)
        view: dict[str, Any] = {
            "topic": topic,
            "partition": number,
            "offset": record.offset,
            "timestamp": round(record.timestamp * 1000),
        }
        for name, data in (("value", record.value), ("key", record.key)):
            decoded = _UNREADABLE if data is None else _decoded(data)
            if decoded is not _UNREADABLE:
                view[name] = decoded
        return view

    def trace_attributes(self, partition: str) -> Mapping[str, str]:
        """The batch span's messaging attributes (:class:`streamfn.source.TracedSource`)."""
        topic, number = split_partition_id(partition)
        return {
            "messaging.destination.name": topic,
            "messaging.destination.partition.id": str(number),
            "messaging.consumer.group.name": self.group_id,
        }

    def trace_carrier(self, record: Record) -> Mapping[str, str]:
        """A record's upstream trace context is in its headers (``traceparent``, as producers'
        OpenTelemetry instrumentations write it)."""
        return tracing.header_carrier(record)

    # -- offset lag ----------------------------------------------------------------------

    def gauges(self) -> dict[str, dict[str, float]]:
        """``offset_lag`` per owned partition whose committed and end offsets are known;
        computed from what the source keeps, with no broker call."""
        consumer = self._consumer
        assigned = consumer.assignment() if consumer is not None else set()
        lag: dict[str, float] = {}
        for pid, tp in self._owned.items():
            committed = self._committed.get(pid)
            end = self._ends.get(pid)
            if tp in assigned:
                highwater = consumer.highwater(tp)
                if highwater is not None and (end is None or highwater > end):
                    end = highwater
            if committed is not None and end is not None:
                lag[pid] = float(max(0, end - committed))
        return {"offset_lag": lag}

    async def _refresh_ends(self, consumer: Any) -> None:
        """Read the owned partitions' end offsets every ``lag_interval`` seconds (one ListOffsets
        request per broker): a partition whose records wait on the function is not fetched, so
        its high watermark goes stale. A partition nothing was fetched from since its assignment
        takes its committed offset from the consumer's position (where it will resume). One
        round takes at most ``commit_timeout``, the source's bound on a broker round trip."""
        failures = RetryLog(log, "cannot read end offsets for offset_lag", source=self.describe())
        then = f"offset_lag keeps its last values; reading again in {self.lag_interval:g} s"
        while True:
            await asyncio.sleep(self.lag_interval)
            owned = dict(self._owned)
            if not owned:
                continue
            try:
                async with asyncio.timeout(self.commit_timeout):
                    ends = await consumer.end_offsets(list(owned.values()))
                    for pid, tp in owned.items():
                        if pid not in self._committed and pid in self._owned:
                            await self._resume_position(consumer, pid, tp)
            except (KafkaError, TimeoutError) as exc:
                failures.failed(exc, then)
                continue
            failures.succeeded()
            for pid, tp in owned.items():
                if pid in self._owned and tp in ends:
                    self._ends[pid] = ends[tp]

    async def _resume_position(self, consumer: Any, pid: str, tp: TopicPartition) -> None:
        try:
            position = await consumer.position(tp)
        except IllegalStateError:  # revoked meanwhile
            return
        self._committed.setdefault(pid, position)  # unless a fetch got there first


#: A Kafka event record (:func:`_lambda_record`) without its topic, key, value and headers,
#: with room for a key, the longest partition number (10 digits), offset and timestamp (20
#: characters each), and the comma after it. The topic is shorter than the partition id.
_RECORD_SIZE = (
    len(
        orjson.dumps(
            {
                "topic": "",
                "partition": 0,
                "offset": 0,
                "timestamp": 0,
                "timestampType": max(TIMESTAMP_TYPES, key=len),
                "value": "",
                "headers": [],
            }
        )
    )
    + len(b',"key":""')
    + 9
    + 19
    + 19
    + 1
)
#: One header without its name and bytes (each byte is at most three digits and a comma).
_HEADER_SIZE = len(b'{"":[]},')


def _lambda_record(topic: str, number: int, record: Record) -> dict[str, Any]:
    """One record of Lambda's Kafka event."""
    out: dict[str, Any] = {
        "topic": topic,
        "partition": number,
        "offset": record.offset,
        "timestamp": round(record.timestamp * 1000),
        "timestampType": TIMESTAMP_TYPES[record.meta],
    }
    if record.key is not None:
        out["key"] = _b64(record.key)
    out["value"] = _b64(record.value)
    out["headers"] = [
        {name: list(value) if value is not None else None} for name, value in record.headers
    ]
    return out


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Turns aiokafka's rebalance callbacks into the engine's assigned/revoked, so that a
    revoked partition is drained and committed before the group hands it to another member."""

    def __init__(
        self, source: KafkaSource, listener: AssignmentListener, config: MappingConfig
    ) -> None:
        self.source = source
        self.listener = listener
        self.at_timestamp = (
            config.starting_position_timestamp
            if config.starting_position == "AT_TIMESTAMP"
            else None
        )

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        ids = [partition_id(tp.topic, tp.partition) for tp in revoked]
        try:
            await self.listener.revoked(ids)  # drains and commits while they are still owned
        finally:
            self.source._disown(ids)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if self.at_timestamp is not None and assigned:
            try:
                await self.source._seek_to_timestamp(assigned, self.at_timestamp)
            except KafkaError as exc:
                log.warning(
                    "AT_TIMESTAMP lookup failed; reading from the earliest offset",
                    extra={"source": self.source.describe(), "error": repr(exc)},
                )
        await self.listener.assigned(self.source._own(assigned))
