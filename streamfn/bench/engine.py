"""``streamfn bench engine``: the engine's own cost, measured with an in-memory source and a
no-op batch handler, so connector benchmarks can be read against it."""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
from typing import Any

import orjson

from streamfn.app import App
from streamfn.record import Batch
from streamfn.runtime import run_loop
from streamfn.testing import MemorySource


async def drain_engine(
    records: int, partitions: int, batch_size: int, record_size: int
) -> dict[str, Any]:
    """Push ``records`` through one mapping and return records/s and ns of engine per record."""
    names = [f"p{i}" for i in range(partitions)]
    source = MemorySource(names)
    payload = b"x" * record_size
    per_partition = records // partitions
    for name in names:
        source.extend(name, [payload] * per_partition)
    total = per_partition * partitions
    done = asyncio.Event()
    seen = 0

    app = App("bench")

    @app.consume(source, batch_size=batch_size, maximum_batching_window=0)
    async def noop(batch: Batch, context: Any) -> None:
        nonlocal seen
        seen += len(batch)
        if seen >= total:
            done.set()

    cpu0 = time.process_time()
    t0 = time.perf_counter()
    async with app.running():
        await done.wait()
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    return {
        "scenario": "engine",
        "partitions": partitions,
        "records": total,
        "batch_size": batch_size,
        "seconds": round(elapsed, 3),
        "records_per_s": round(total / elapsed),
        "ns_per_record": round(elapsed * 1e9 / total),
        "cpu_s": round(cpu, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument(
        "--partitions", type=int, nargs="+", default=[1, 8], help="one run per partition count"
    )
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--record-size", type=int, default=100, help="bytes per record")


def main(args: argparse.Namespace) -> int:
    results = [
        run_loop(drain_engine(args.records, p, args.batch_size, args.record_size))
        for p in args.partitions
    ]
    if args.json:
        print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"{'partitions':>10} {'records':>10} {'records/s':>12} {'ns/record':>10} {'cpu s':>7}")
    for r in results:
        print(
            f"{r['partitions']:>10} {r['records']:>10} {r['records_per_s']:>12,} "
            f"{r['ns_per_record']:>10} {r['cpu_s']:>7}"
        )
    return 0
