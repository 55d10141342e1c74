"""KafkaSource.gauges(): AWS's OffsetLag per owned partition, checked against what the broker
itself says (a separate consumer's ``end_offsets()`` and the group's ``committed()``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import TopicPartition

from streamfn import App, Batch

from .conftest import Kafka, eventually


class Broker:
    """The broker's own view of one partition: its end offset and the group's commit."""

    def __init__(self, consumer: Any, topic: str, partition: int = 0) -> None:
        self.consumer = consumer
        self.tp = TopicPartition(topic, partition)

    async def offsets(self) -> tuple[int, int | None]:
        """(end offset, committed offset or None)."""
        ends = await self.consumer.end_offsets([self.tp])
        return ends[self.tp], await self.consumer.committed(self.tp)

    async def wait_committed(self, offset: int, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while (await self.offsets())[1] != offset:
                await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def broker_view(kafka: Kafka, group: str, topic: str) -> AsyncIterator[Broker]:
    """A consumer of ``group`` that joins nothing (no subscription): it only reads offsets."""
    async with kafka.consumer(group) as consumer:
        yield Broker(consumer, topic)


async def produce_one_by_one(kafka: Kafka, topic: str, count: int, start: int = 0) -> None:
    """One record per produce call: tansu's end offset of a multi-record batch is its first
    offset + 1, so each record goes in a batch of its own."""
    for i in range(start, start + count):
        await kafka.produce(topic, [b"%d" % i], partition=0)


async def test_offset_lag_is_the_end_offset_minus_the_committed_offset_and_drains_to_zero(
    kafka: Kafka,
) -> None:
    topic = await kafka.create_topic()
    await produce_one_by_one(kafka, topic, 10)
    source = kafka.source(topic, lag_interval=0.1)
    partition = f"{topic}-0"
    release = asyncio.Event()
    blocked_at: list[int] = []
    app = App("lag")

    @app.consume(source, batch_size=2)
    async def handler(batch: Batch, context: Any) -> None:
        if batch[0].offset >= 4 and not release.is_set():
            blocked_at.append(batch[0].offset)
            await release.wait()

    def lag() -> float | None:
        return source.gauges()["offset_lag"].get(partition)

    async with app.running(), broker_view(kafka, source.group_id, topic) as broker:
        await eventually(lambda: bool(blocked_at))
        # Everything before the blocked batch succeeded, so the engine commits up to it.
        await broker.wait_committed(blocked_at[0])
        end, committed = await broker.offsets()
        assert committed is not None and (end, committed) == (10, blocked_at[0])
        expected = end - committed
        await eventually(lambda: lag() == expected)

        # New records while the handler holds the commit: the background read of the end
        # offsets sees them although the blocked partition is not being fetched.
        await produce_one_by_one(kafka, topic, 3, start=10)
        end, committed = await broker.offsets()
        assert committed is not None and (end, committed) == (13, blocked_at[0])
        expected = end - committed
        await eventually(lambda: lag() == expected)

        release.set()
        await broker.wait_committed(13)
        await eventually(lambda: lag() == 0)

    assert source.gauges() == {"offset_lag": {}}  # nothing is owned once stopped


async def test_a_group_without_commits_lags_from_where_it_started_and_idle_partitions_are_zero(
    kafka: Kafka,
) -> None:
    topic = await kafka.create_topic(partitions=2)
    await produce_one_by_one(kafka, topic, 3)  # partition 0 only; partition 1 stays empty
    source = kafka.source(topic, lag_interval=0.1)
    release = asyncio.Event()
    app = App("lag-fresh")

    @app.consume(source, batch_size=10)
    async def handler(batch: Batch, context: Any) -> None:
        await release.wait()  # the very first batch never finishes: nothing is committed

    async with app.running(), broker_view(kafka, source.group_id, topic) as broker:
        await eventually(
            lambda: source.gauges()["offset_lag"] == {f"{topic}-0": 3, f"{topic}-1": 0}
        )
        assert await broker.offsets() == (3, None)
        release.set()
