"""Parallelization inside a partition, filter_criteria, and what the checkpoint may pass."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import orjson

from streamfn import App, Batch, Context
from streamfn.testing import MemorySource, wait_until

from .helpers import FAST_RETRY


async def test_parallelization_runs_batches_concurrently_and_keeps_order_per_key() -> None:
    source = MemorySource()
    for i in range(400):
        source.append("p0", b"%d" % i, key=b"k%d" % (i % 7))
    seen: dict[bytes, list[int]] = defaultdict(list)
    running = peak = 0
    app = App()

    @app.consume(source, batch_size=10, parallelization_factor=4, maximum_batching_window=0)
    async def handler(batch: Batch, context: Context) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        for rec in batch:
            assert rec.key is not None
            seen[rec.key].append(rec.offset)
        await asyncio.sleep(0.001)
        running -= 1

    async with app.running():
        await wait_until(lambda: source.committed.get("p0") == 400)
    assert peak > 1
    for offsets in seen.values():
        assert offsets == sorted(offsets)
    assert sum(len(v) for v in seen.values()) == 400


async def test_checkpoint_is_lowest_contiguous_completed_record() -> None:
    source = MemorySource()
    source.append("p0", b"slow", key=b"a")
    for i in range(1, 50):
        source.append("p0", b"%d" % i, key=b"b%d" % i)
    release = asyncio.Event()
    done: set[int] = set()
    app = App()

    @app.consume(source, batch_size=1, parallelization_factor=5, timeout=30)
    async def handler(batch: Batch, context: Context) -> None:
        if batch[0].value == b"slow":
            await release.wait()
        done.add(batch[0].offset)

    async with app.running():
        await wait_until(lambda: len(done) >= 5)
        assert source.committed.get("p0", 0) == 0  # offset 0 is still running
        release.set()
        await wait_until(lambda: source.committed.get("p0") == 50)


async def test_filtered_out_records_are_skipped_and_still_checkpointed() -> None:
    source = MemorySource()
    for i in range(10):
        source.append("p0", orjson.dumps({"kind": "order" if i % 2 else "ping", "n": i}))
    seen: list[int] = []
    app = App()

    @app.consume(
        source,
        filter_criteria={"Filters": [{"Pattern": '{"data": {"kind": ["order"]}}'}]},
        maximum_batching_window=0,
    )
    async def handler(batch: Batch, context: Context) -> None:
        seen.extend(r.json()["n"] for r in batch)

    async with app.running():
        await wait_until(lambda: source.committed.get("p0") == 10)
    assert seen == [1, 3, 5, 7, 9]


async def test_all_records_filtered_out_still_advance_the_checkpoint() -> None:
    source = MemorySource()
    source.extend("p0", [b"{}"] * 5)
    calls = 0
    app = App()

    @app.consume(source, filter_criteria=[{"data": {"kind": ["never"]}}])
    async def handler(batch: Batch, context: Context) -> None:
        nonlocal calls
        calls += 1

    async with app.running():
        await wait_until(lambda: source.committed.get("p0") == 5)
    assert calls == 0


async def test_revoke_finishes_in_flight_batch_within_deadline_and_commits() -> None:
    source = MemorySource()
    source.extend("p0", [b"a", b"b"])
    started = asyncio.Event()
    finished = 0
    app = App()

    @app.consume(source, batch_size=1, timeout=10, shutdown_timeout=5)
    async def handler(batch: Batch, context: Context) -> None:
        nonlocal finished
        started.set()
        await asyncio.sleep(0.05)
        finished += 1

    async with app.running():
        await started.wait()
        await source.revoke(["p0"])
        assert finished == 1
        assert source.committed["p0"] == 1  # the in-flight batch, not the buffered one


async def test_revoke_abandons_batch_past_deadline_without_committing_it() -> None:
    source = MemorySource()
    source.extend("p0", [b"a"])
    started = asyncio.Event()
    cancelled = asyncio.Event()
    app = App()

    @app.consume(source, timeout=60, shutdown_timeout=0.05)
    async def handler(batch: Batch, context: Context) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with app.running():
        await started.wait()
        await source.revoke(["p0"])
        assert cancelled.is_set()
        assert "p0" not in source.committed


async def test_revoke_abandons_retrying_batch_at_once() -> None:
    source = MemorySource()
    source.extend("p0", [b"a"])
    calls = 0
    app = App()

    @app.consume(source, retry_base_delay=60, retry_max_delay=60)
    async def handler(batch: Batch, context: Context) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("bad")

    async with app.running():
        await wait_until(lambda: calls == 1)
        async with asyncio.timeout(5):  # not after the 30-60 s backoff
            await source.revoke(["p0"])
    assert "p0" not in source.committed


async def test_shutdown_commits_settled_records() -> None:
    source = MemorySource()
    source.extend("p0", [b"x"] * 30)
    seen = 0
    app = App()

    @app.consume(source, batch_size=10, **FAST_RETRY)
    async def handler(batch: Batch, context: Context) -> None:
        nonlocal seen
        seen += len(batch)

    async with app.running():
        await wait_until(lambda: seen == 30)
    assert source.committed["p0"] == 30


async def test_lambda_event_format_passes_aws_shaped_event() -> None:
    source = MemorySource()
    source.extend("p0", [b"a", b"b"])
    events: list[Any] = []
    app = App()

    @app.consume(
        source,
        event_format="lambda",
        batch_size=2,
        maximum_batching_window=1,
        function_response_types=["ReportBatchItemFailures"],
        **FAST_RETRY,
    )
    def handler(event: dict[str, Any], context: Context) -> dict[str, Any]:
        events.append(event)
        failed = [{"itemIdentifier": r["offset"]} for r in event["Records"][1:]]
        return {"batchItemFailures": failed if len(events) == 1 else []}

    async with app.running():
        await wait_until(lambda: source.committed.get("p0") == 2)
    assert [r["data"] for r in events[0]["Records"]] == ["YQ==", "Yg=="]
    assert [r["data"] for r in events[1]["Records"]] == ["Yg=="]
