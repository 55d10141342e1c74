"""Event source mapping metrics on ``/metrics``: per-partition counters with exact values after a
known flow on the in-memory sources, the batch-size histogram, rebalances, the gauges a source
reports, and the standard process metrics."""

from __future__ import annotations

import os
import re
import time
from typing import Any

import orjson

from streamfn import App, Batch, Context
from streamfn.config import MappingConfig
from streamfn.mapping import Mapping
from streamfn.testing import MemoryDestination, MemoryQueue, MemorySource, wait_until

from .helpers import FAST_RETRY

SAMPLE = re.compile(r'([a-z_]+)(\{(?:[a-z_]+="[^"]*",?)*\})? (\S+)')
COUNTERS = (
    "polled_records",
    "filtered_records",
    "invocations",
    "invoked_records",
    "failed_invocations",
    "retries",
    "bisects",
    "dropped_records",
    "on_failure_records",
    "deleted_messages",
    "returned_messages",
    "commits",
)


def scrape(app: App) -> dict[str, float]:
    """``name{labels}`` -> value of the app's exposition, checking its shape on the way: one
    HELP and TYPE per family, counters named ``_total``, every sample of a declared family."""
    values: dict[str, float] = {}
    types: dict[str, str] = {}
    helps: set[str] = set()
    for line in app.metrics.render().splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name not in helps, f"HELP of {name} twice"
            helps.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name not in types, f"TYPE of {name} twice"
            types[name] = kind
            assert name.endswith("_total") == (kind == "counter"), name
        else:
            match = SAMPLE.fullmatch(line)
            assert match, line
            name, labels, value = match.groups()
            family = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in types or types.get(family) == "histogram", line
            values[name + (labels or "")] = float(value)
    return values


def partition_counters(values: dict[str, float], labels: str) -> dict[str, float]:
    return {c: values[f"streamfn_esm_{c}_total{{{labels}}}"] for c in COUNTERS}


class LaggingSource(MemorySource):
    """A memory source that reports a gauge, as the Kafka source reports its offset lag."""

    def gauges(self) -> dict[str, dict[str, float]]:
        return {"offset_lag": {p: 3.0 for p in self.logs}, "not_a_gauge": {"b0": 1.0}}


async def test_partition_counters_after_a_known_flow() -> None:
    orders = MemorySource(["p0", "p1"])
    for i in range(10):
        orders.append("p0", orjson.dumps({"kind": "order" if i < 8 else "ping"}))
    for _ in range(5):
        orders.append("p1", orjson.dumps({"kind": "order"}))
    poisoned = LaggingSource(["b0"])
    poisoned.extend("b0", [b"ok", b"ok", b"poison", b"ok"])
    queue = MemoryQueue()
    for body in (b"a", b"b", b"c"):
        queue.send(body)
    destination = MemoryDestination()
    failed_once: set[str] = set()
    app = App()

    @app.consume(
        orders,
        name="orders",
        filter_criteria=[{"data": {"kind": ["order"]}}],
        maximum_batching_window=0,
        **FAST_RETRY,
    )
    async def handle_orders(batch: Batch, context: Context) -> None:
        if batch.partition == "p0" and "p0" not in failed_once:
            failed_once.add("p0")
            raise ValueError("first attempt fails")

    @app.consume(
        poisoned,
        name="bisecting",
        bisect_batch_on_function_error=True,
        maximum_retry_attempts=0,
        on_failure=destination,
    )
    async def bisecting(batch: Batch, context: Context) -> None:
        if any(r.value == b"poison" for r in batch):
            raise ValueError("poison")

    @app.consume(queue, name="queued", function_response_types=["ReportBatchItemFailures"])
    async def queued(batch: Batch, context: Context) -> dict[str, Any]:
        first = [r for r in batch if r.value == b"b" and "b" not in failed_once]
        failed_once.update(r.value.decode() for r in first)
        return {"batchItemFailures": [{"itemIdentifier": f"msg-{r.offset}"} for r in first]}

    started = time.time()
    async with app.running():
        await wait_until(
            lambda: (
                orders.committed == {"p0": 10, "p1": 5}
                and poisoned.committed.get("b0") == 4
                and len(queue.deleted) == 3
            )
        )
        values = scrape(app)

    p0 = 'function="orders",mapping="memory://p0,p1",partition="p0"'
    assert partition_counters(values, p0) == {
        **dict.fromkeys(COUNTERS, 0),
        "polled_records": 10,
        "filtered_records": 2,
        "invocations": 2,
        "invoked_records": 16,
        "failed_invocations": 1,
        "retries": 1,
        "commits": 1,
    }
    p1 = 'function="orders",mapping="memory://p0,p1",partition="p1"'
    assert partition_counters(values, p1) == {
        **dict.fromkeys(COUNTERS, 0),
        "polled_records": 5,
        "invocations": 1,
        "invoked_records": 5,
        "commits": 1,
    }
    b0 = 'function="bisecting",mapping="memory://b0",partition="b0"'
    assert partition_counters(values, b0) == {
        **dict.fromkeys(COUNTERS, 0),
        "polled_records": 4,
        "invocations": 5,  # 4 records, 2 + 2, then 1 + 1
        "invoked_records": 10,
        "failed_invocations": 3,
        "bisects": 2,
        "on_failure_records": 1,
        "commits": 1,
    }
    poller = 'function="queued",mapping="memory-queue://1",partition="poller-0"'
    assert partition_counters(values, poller) == {
        **dict.fromkeys(COUNTERS, 0),
        "polled_records": 4,  # "b" comes back once
        "invocations": 2,
        "invoked_records": 4,
        "failed_invocations": 1,
        "deleted_messages": 3,
        "returned_messages": 1,
    }
    for labels in (p0, p1, b0):
        assert values[f"streamfn_esm_in_flight_records{{{labels}}}"] == 0
        committed_at = values[f"streamfn_esm_last_commit_timestamp_seconds{{{labels}}}"]
        assert started <= committed_at <= time.time()
    assert values[f"streamfn_esm_last_commit_timestamp_seconds{{{poller}}}"] == 0

    mapping = 'function="orders",mapping="memory://p0,p1"'
    assert values[f"streamfn_esm_partitions_assigned_total{{{mapping}}}"] == 2
    assert values[f"streamfn_esm_partitions_revoked_total{{{mapping}}}"] == 0
    buckets = {
        le: values[f'streamfn_esm_batch_size_records_bucket{{{mapping},le="{le}"}}']
        for le in ("1", "5", "10", "10000", "+Inf")
    }
    assert buckets == {"1": 0, "5": 1, "10": 3, "10000": 3, "+Inf": 3}  # 8, 8 and 5 records
    assert values[f"streamfn_esm_batch_size_records_sum{{{mapping}}}"] == 21
    assert values[f"streamfn_esm_batch_size_records_count{{{mapping}}}"] == 3

    assert values[f"streamfn_esm_offset_lag{{{b0}}}"] == 3
    assert not any("not_a_gauge" in name for name in values)


async def test_mappings_that_describe_themselves_alike_stay_apart() -> None:
    app = App()

    @app.consume(MemorySource(["p0"]), name="twice")
    async def twice(batch: Batch, context: Context) -> None:
        pass

    app.mappings.append(Mapping(app.functions["twice"], MemorySource(["p0"]), MappingConfig()))
    async with app.running():
        await wait_until(lambda: all(m.stats.assigned for m in app.mappings))
        values = scrape(app)
    assert values['streamfn_esm_partitions_assigned_total{function="twice",mapping="memory://p0"}']
    assert values[
        'streamfn_esm_partitions_assigned_total{function="twice",mapping="memory://p0 #2"}'
    ]


def test_process_metrics() -> None:
    values = scrape(App())
    assert values["process_cpu_seconds_total"] > 0
    assert values["process_max_fds"] > 0
    if os.path.exists("/proc/self/stat"):
        assert values["process_resident_memory_bytes"] > 1_000_000
        assert values["process_virtual_memory_bytes"] >= values["process_resident_memory_bytes"]
        assert 0 < time.time() - values["process_start_time_seconds"] < 86_400
        assert 0 < values["process_open_fds"] <= values["process_max_fds"]
