"""Two workers in one consumer group: partitions move between them with no record lost, and
no commit is ever sent for a partition its member does not own."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Collection
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from streamfn import App, Batch, MappingConfig, Record
from streamfn.connectors.kafka import KafkaSource
from streamfn.connectors.kafka._client import partition_id
from streamfn.source import AssignmentListener

from .conftest import FAST_GROUP, Kafka, Seen, eventually

_committing: contextvars.ContextVar[TrackedSource] = contextvars.ContextVar("committing")


class TrackedSource(KafkaSource):
    """A KafkaSource that knows which partitions the engine holds: from the start of
    ``assigned`` to the end of ``revoked`` (the drain and its final commit included)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held: set[str] = set()

    async def run(self, config: MappingConfig, listener: AssignmentListener) -> None:
        await super().run(config, _Holding(self.held, listener))

    async def commit(self, partition: str, record: Record) -> None:
        token = _committing.set(self)
        try:
            await super().commit(partition, record)
        finally:
            _committing.reset(token)


class _Holding:
    def __init__(self, held: set[str], inner: AssignmentListener) -> None:
        self.held = held
        self.inner = inner

    async def assigned(self, partitions: Collection[str]) -> None:
        self.held.update(partitions)
        await self.inner.assigned(partitions)

    async def revoked(self, partitions: Collection[str]) -> None:
        await self.inner.revoked(partitions)
        self.held.difference_update(partitions)


@pytest.fixture
def wire_commits(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, bool]]:
    """Every offset commit that reached the broker: (partition, offset, held when sent)."""
    commits: list[tuple[str, int, bool]] = []
    original = AIOKafkaConsumer.commit

    async def commit(self: AIOKafkaConsumer, offsets: Any = None) -> None:
        source = _committing.get()
        held = {partition_id(tp.topic, tp.partition) in source.held for tp in offsets}
        await original(self, offsets)
        for tp, offset in offsets.items():
            commits.append((partition_id(tp.topic, tp.partition), offset, held == {True}))

    monkeypatch.setattr(AIOKafkaConsumer, "commit", commit)
    return commits


async def serve(app: App, stop: asyncio.Event) -> None:
    async with app.running():
        await stop.wait()


def worker(kafka: Kafka, topic: str, group: str, seen: Seen) -> tuple[App, TrackedSource]:
    source = TrackedSource(
        topic, bootstrap_servers=kafka.address, group_id=group, consumer_options=FAST_GROUP
    )
    app = App("worker")

    @app.consume(source, batch_size=10)
    async def handler(batch: Batch, context: Any) -> None:
        await asyncio.sleep(0.01)  # work in flight when a rebalance comes
        seen.add(batch)

    return app, source


@pytest.mark.slow
async def test_partitions_move_between_two_workers_without_loss_or_foreign_commits(
    kafka: Kafka, wire_commits: list[tuple[str, int, bool]]
) -> None:
    topic = await kafka.create_topic(partitions=4)
    group = "g-rebalance-" + topic
    everything = {f"{topic}-{n}" for n in range(4)}
    await kafka.produce(topic, [b"%d" % i for i in range(400)], key=lambda i: b"k%d" % i)
    seen_a, seen_b = Seen(), Seen()
    app_a, source_a = worker(kafka, topic, group, seen_a)
    app_b, source_b = worker(kafka, topic, group, seen_b)
    stop_a, stop_b = asyncio.Event(), asyncio.Event()

    def received() -> set[tuple[str, int]]:
        return seen_a.distinct() | seen_b.distinct()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(serve(app_a, stop_a))
        await seen_a.wait_for(lambda: len(seen_a.records) >= 40)
        tg.create_task(serve(app_b, stop_b))
        await seen_b.wait_for(lambda: bool(seen_b.records), timeout=60)
        assert source_a.partitions and source_b.partitions
        assert not source_a.partitions & source_b.partitions
        await kafka.produce(topic, [b"%d" % i for i in range(200)], key=lambda i: b"k%d" % i)
        await eventually(lambda: len(received()) == 600, timeout=60)

        stop_a.set()  # the survivor takes over every partition
        await eventually(lambda: source_b.partitions == everything, timeout=60)
        await kafka.produce(topic, [b"%d" % i for i in range(100)], key=lambda i: b"k%d" % i)
        await eventually(lambda: len(received()) == 700, timeout=60)
        await source_b.commit(f"not-{topic}-0", Record(f"not-{topic}-0", 41, b""))
        stop_b.set()

    assert wire_commits
    assert all(held for _, _, held in wire_commits)
    assert f"not-{topic}-0" not in {p for p, _, _ in wire_commits}
    last: dict[str, int] = {}
    for partition, offset, _ in wire_commits:
        assert offset >= last.get(partition, 0), "a stale commit moved a partition back"
        last[partition] = offset
    assert sum(c or 0 for c in await kafka.committed(group, topic, 4)) == 700


@pytest.mark.slow
async def test_a_static_member_restarted_with_its_group_instance_id_resumes_from_its_commits(
    kafka: Kafka,
) -> None:
    topic = await kafka.create_topic()
    group = "g-static-" + topic
    seen = Seen()
    for total in (5, 10):  # the second run must start at the first one's commit
        await kafka.produce(topic, [b"%d" % total] * 5)
        app = App("static")
        source = kafka.source(topic, group, group_instance_id="worker-1")
        app.consume(source, batch_size=10)(seen.handler)
        async with app.running():
            await seen.wait_for(lambda total=total: len(seen.distinct()) == total)

    assert seen.offsets(f"{topic}-0") == list(range(10))
