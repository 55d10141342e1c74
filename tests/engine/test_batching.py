"""Batcher rules: batch_size, batching window, payload cap, backpressure."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from streamfn import App, Batch
from streamfn.config import DEFAULT_PAYLOAD_LIMIT
from streamfn.testing import MemoryDestination, MemorySource, wait_until

from .helpers import FAST_RETRY


async def test_batch_released_when_batch_size_is_reached() -> None:
    source = MemorySource()
    source.extend("p0", [b"x"] * 25)
    sizes: list[int] = []
    app = App()

    @app.consume(source, batch_size=10, maximum_batching_window=60)
    async def handler(batch: Batch, context: Any) -> None:
        sizes.append(len(batch))

    async with app.running():
        await wait_until(lambda: sum(sizes) >= 20)
    assert sizes[:2] == [10, 10]


async def test_batch_released_when_window_elapses() -> None:
    source = MemorySource()
    got: list[tuple[int, float]] = []
    app = App()

    @app.consume(source, batch_size=1000, maximum_batching_window=0.2)
    async def handler(batch: Batch, context: Any) -> None:
        got.append((len(batch), time.monotonic()))

    async with app.running():
        await source.started()
        start = time.monotonic()
        for i in range(3):
            source.append("p0", b"%d" % i)
        await wait_until(lambda: bool(got))
    assert got[0][0] == 3
    assert got[0][1] - start >= 0.19  # held for the window, not released per record


async def test_window_zero_releases_what_is_available() -> None:
    source = MemorySource()
    source.extend("p0", [b"x"] * 5)
    sizes: list[int] = []
    app = App()

    @app.consume(source, batch_size=100, maximum_batching_window=0)
    async def handler(batch: Batch, context: Any) -> None:
        sizes.append(len(batch))

    async with app.running():
        await wait_until(lambda: sum(sizes) == 5)
    assert sizes == [5]


async def test_payload_cap_cuts_batches_before_the_limit() -> None:
    source = MemorySource()
    source.extend("p0", [b"a" * 400] * 10)
    sizes: list[int] = []
    app = App()

    @app.consume(source, batch_size=100, maximum_batching_window=0, payload_limit=1000)
    async def handler(batch: Batch, context: Any) -> None:
        assert sum(r.size for r in batch) <= 1000
        sizes.append(len(batch))

    async with app.running():
        await wait_until(lambda: sum(sizes) == 10)
    assert max(sizes) == 2


async def test_record_over_payload_cap_goes_to_on_failure_without_invocation() -> None:
    source = MemorySource()
    source.append("p0", b"ok")
    source.append("p0", b"x" * 2000)
    source.append("p0", b"ok")
    dest = MemoryDestination()
    seen: list[bytes] = []
    app = App()

    @app.consume(source, on_failure=dest, maximum_batching_window=0, payload_limit=1000)
    async def handler(batch: Batch, context: Any) -> None:
        seen.extend(r.value for r in batch)

    async with app.running():
        records = await dest.wait_for(1)
        await wait_until(lambda: source.committed.get("p0") == 3)
    assert seen == [b"ok", b"ok"]
    failure = records[0]
    assert failure["requestContext"]["condition"] == "MaximumPayloadSizeExceeded"
    assert failure["responseContext"] is None
    assert failure["MemoryBatchInfo"]["startSequenceNumber"] == "1"


async def test_lambda_events_are_cut_at_the_payload_cap_as_the_handler_receives_them() -> None:
    """8 records of 700,000 bytes are 5.6 MB, under the 6 MB cap; base64 in a JSON event they
    are 7.5 MB. The cap is on the event: 6 fit (5.6 MB), a 7th would not (6.5 MB)."""
    source = MemorySource()
    source.extend("p0", [bytes([i]) * 700_000 for i in range(8)])
    sizes: list[int] = []
    counts: list[int] = []
    app = App()

    @app.consume(source, event_format="lambda", batch_size=100, maximum_batching_window=0)
    async def handler(event: dict[str, Any], context: Any) -> None:
        sizes.append(len(orjson.dumps(event)))
        counts.append(len(event["Records"]))

    async with app.running():
        await wait_until(lambda: sum(counts) == 8)
    assert counts == [6, 2]
    assert max(sizes) <= DEFAULT_PAYLOAD_LIMIT


async def test_record_over_the_cap_only_as_an_event_goes_to_on_failure() -> None:
    source = MemorySource()
    source.append("p0", b"ok")
    source.append("p0", b"x" * 800)  # 800 bytes, but about 1,160 in the event
    source.append("p0", b"ok")
    dest = MemoryDestination()
    seen: list[list[str]] = []
    app = App()

    @app.consume(
        source,
        event_format="lambda",
        on_failure=dest,
        maximum_batching_window=0,
        payload_limit=1000,
    )
    async def handler(event: dict[str, Any], context: Any) -> None:
        assert len(orjson.dumps(event)) <= 1000
        seen.append([r["offset"] for r in event["Records"]])

    async with app.running():
        [failure] = await dest.wait_for(1)
        await wait_until(lambda: source.committed.get("p0") == 3)
    assert [offset for batch in seen for offset in batch] == ["0", "2"]
    assert failure["requestContext"]["condition"] == "MaximumPayloadSizeExceeded"
    assert failure["MemoryBatchInfo"]["startSequenceNumber"] == "1"


async def test_slow_handler_bounds_records_held_in_memory() -> None:
    source = MemorySource()
    source.extend("p0", [b"x"] * 10_000)
    release = asyncio.Event()
    calls = 0
    app = App()

    @app.consume(source, batch_size=10, maximum_batching_window=0, timeout=30, **FAST_RETRY)
    async def handler(batch: Batch, context: Any) -> None:
        nonlocal calls
        calls += 1
        await release.wait()

    async with app.running():
        await wait_until(lambda: calls == 1)
        for _ in range(20):  # give the poller every chance to run ahead
            await asyncio.sleep(0)
        fetched_ahead = source.positions["p0"] - source.committed.get("p0", 0)
        release.set()
    assert fetched_ahead <= 20  # batch_size * (parallelization_factor + 1)
