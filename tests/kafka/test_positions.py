"""Where a new consumer group starts: TRIM_HORIZON, LATEST, AT_TIMESTAMP, and committed
offsets winning over all three (AWS ignores StartingPosition for a group that has commits)."""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

import pytest

from streamfn import App

from .conftest import Kafka, Seen, eventually


async def consume_until(kafka: Kafka, topic: str, group: str, count: int, **mapping: Any) -> Seen:
    """Run one mapping until ``count`` distinct records arrived, then stop it gracefully."""
    seen = Seen()
    app = App("positions")
    app.consume(kafka.source(topic, group), batch_size=10, **mapping)(seen.handler)
    async with app.running():
        await seen.wait_for(lambda: len(seen.distinct()) >= count)
    return seen


async def test_trim_horizon_starts_at_the_oldest_record(kafka: Kafka) -> None:
    topic = await kafka.create_topic()
    await kafka.produce(topic, [b"%d" % i for i in range(5)])

    seen = await consume_until(kafka, topic, "g-trim", 5, starting_position="TRIM_HORIZON")

    assert seen.offsets(f"{topic}-0") == [0, 1, 2, 3, 4]


async def test_latest_skips_records_written_before_the_group_started(kafka: Kafka) -> None:
    topic = await kafka.create_topic()
    for _ in range(5):  # one record per batch: tansu reports a batch's end as its first offset + 1
        await kafka.produce(topic, [b"old"])
    source = kafka.source(topic)
    seen = Seen()
    app = App("latest")
    app.consume(source, batch_size=10, starting_position="LATEST")(seen.handler)

    produced = 5
    async with app.running():
        await eventually(lambda: bool(source.partitions))
        # The position is resolved to the log end asynchronously after the assignment: probe
        # until the first new record arrives, then check that nothing older ever came.
        while not seen.records:
            assert produced < 60, "no new record arrived"
            await kafka.produce(topic, [b"new"])
            produced += 1
            with contextlib.suppress(TimeoutError):
                await seen.wait_for(lambda: bool(seen.records), timeout=0.5)
        await kafka.produce(topic, [b"new"] * 3)
        produced += 3
        await seen.wait_for(lambda: seen.records[-1][1] == produced - 1)

    values = {value for _, _, _, value in seen.records}
    assert values == {b"new"}
    offsets = seen.offsets(f"{topic}-0")
    assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))
    assert offsets[0] >= 5


async def test_at_timestamp_starts_at_the_first_record_at_or_after_the_timestamp(
    kafka: Kafka,
) -> None:
    topic = await kafka.create_topic()
    # tansu indexes time by the broker's append time (not the producer's), so the boundary is
    # a moment between two appends.
    await kafka.produce(topic, [b"before"] * 3)
    boundary_ms = int(time.time() * 1000) + 1
    await eventually(lambda: time.time() * 1000 > boundary_ms)
    for _ in range(3):
        await kafka.produce(topic, [b"after"])

    seen = await consume_until(
        kafka,
        topic,
        f"g-{uuid.uuid4().hex[:8]}",
        3,
        starting_position="AT_TIMESTAMP",
        starting_position_timestamp=boundary_ms / 1000,
    )

    assert seen.offsets(f"{topic}-0") == [3, 4, 5]


@pytest.mark.parametrize(
    "position",
    [
        {"starting_position": "LATEST"},
        {"starting_position": "AT_TIMESTAMP", "starting_position_timestamp": 0.0},
    ],
    ids=["LATEST", "AT_TIMESTAMP"],
)
async def test_committed_offsets_win_over_the_starting_position(
    kafka: Kafka, position: dict[str, Any]
) -> None:
    topic = await kafka.create_topic()
    group = f"g-{uuid.uuid4().hex[:8]}"
    await kafka.produce(topic, [b"%d" % i for i in range(10)])
    await kafka.commit(group, topic, 5)

    seen = await consume_until(kafka, topic, group, 5, **position)

    assert seen.offsets(f"{topic}-0") == [5, 6, 7, 8, 9]
