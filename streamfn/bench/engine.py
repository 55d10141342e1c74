"""``streamfn bench engine``: the engine's own cost, measured with an in-memory source and a
no-op batch handler, so connector benchmarks can be read against it.

A drain of ``--records`` can take a few milliseconds at large batch sizes, far too short to
mean anything on a shared machine, and growing ``--records`` to fill seconds would hold
tens of millions of records in memory. So a run repeats the drain (a fresh mapping over the
same records) until it has lasted ``--min-seconds``; runs interleave the partition counts in
rounds (see :mod:`streamfn.bench.rounds`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import time
from typing import Any

import orjson

from streamfn.app import App
from streamfn.bench import rounds
from streamfn.record import Batch, Record
from streamfn.runtime import run_loop
from streamfn.testing import MemorySource


def make_logs(records: int, partitions: int, record_size: int) -> dict[str, list[Record]]:
    """``records`` records (rounded down to a multiple of ``partitions``) spread evenly, built
    once and shared by every drain, so building them stays out of the runs."""
    template = MemorySource([f"p{i}" for i in range(partitions)])
    payload = b"x" * record_size
    for name in template.logs:
        template.extend(name, [payload] * (records // partitions))
    return template.logs


async def drain_once(logs: dict[str, list[Record]], batch_size: int) -> tuple[float, float]:
    """One mapping drains ``logs`` from the start: (wall seconds, CPU seconds), start-up and
    shutdown of the mapping included, as a worker pays them."""
    source = MemorySource(logs)
    for name, log in logs.items():
        source.logs[name] = log  # read-only here: the drain moves positions, not the lists
    total = sum(len(log) for log in logs.values())
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
    return elapsed, cpu


async def _measure(
    logs: dict[str, list[Record]], batch_size: int, min_seconds: float
) -> dict[str, Any]:
    """Drain ``logs`` again and again until the drains add up to ``min_seconds`` (one drain
    at least); the garbage of the last one is collected first, outside the clock."""
    per_drain = sum(len(log) for log in logs.values())
    seconds = cpu = 0.0
    drains = 0
    while drains == 0 or seconds < min_seconds:
        gc.collect()
        elapsed, used = await drain_once(logs, batch_size)
        seconds += elapsed
        cpu += used
        drains += 1
    records = per_drain * drains
    return {
        "drains": drains,
        "records": records,
        "seconds": round(seconds, 3),
        "records_per_s": round(records / seconds),
        "ns_per_record": round(seconds * 1e9 / records),
        "cpu_s": round(cpu, 3),
    }


async def drain_engine(
    records: int, partitions: int, batch_size: int, record_size: int
) -> dict[str, Any]:
    """Push ``records`` through one mapping once and return records/s and ns per record."""
    logs = make_logs(records, partitions, record_size)
    return {
        "scenario": "engine",
        "partitions": partitions,
        "batch_size": batch_size,
        **await _measure(logs, batch_size, 0.0),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--records", type=int, default=1_000_000, help="records per drain")
    parser.add_argument(
        "--partitions", type=int, nargs="+", default=[1, 8], help="one row per partition count"
    )
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--record-size", type=int, default=100, help="bytes per record")
    rounds.add_arguments(
        parser,
        rounds=3,
        min_seconds=3.0,
        extends="the drain is repeated until it is reached",
    )


def _side(partitions: int) -> str:
    return f"partitions={partitions}"


def main(args: argparse.Namespace) -> int:
    logs = {p: make_logs(args.records, p, args.record_size) for p in args.partitions}
    by_side = {_side(p): p for p in args.partitions}

    def run(side: str, index: int) -> dict[str, Any]:
        return run_loop(_measure(logs[by_side[side]], args.batch_size, args.min_seconds))

    runs = rounds.run_rounds(list(by_side), args.rounds, run, rounds.RECORDS, args.min_seconds)
    summary = rounds.summarize(runs, rounds.RECORDS)
    results = [_row(args, p, [r for r in runs if r["side"] == _side(p)]) for p in args.partitions]
    if args.json:
        print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(
        f"engine: {args.records:,} records per drain x {args.record_size} B, batch "
        f"{args.batch_size}, each run >= {args.min_seconds:g} s (the drain repeated)"
    )
    print(rounds.render(summary, rounds.RECORDS, args.rounds, args.min_seconds))
    ns = ", ".join(
        f"{r['partitions']} partitions {r['ns_per_record']} "
        f"({r['summary']['ns_per_record']['min']}-{r['summary']['ns_per_record']['max']})"
        for r in results
    )
    print(f"ns per record: {ns}")
    return 0


def _row(args: argparse.Namespace, partitions: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One partition count: the old single-run keys, now medians over the rounds, then every
    run and the spreads."""
    summary = rounds.summarize(runs, rounds.RECORDS)
    side = summary[_side(partitions)]
    ns = rounds.spread((r["ns_per_record"] for r in runs), 0)
    return {
        "scenario": "engine",
        "partitions": partitions,
        "records": args.records // partitions * partitions,
        "batch_size": args.batch_size,
        "seconds": rounds.spread(r["seconds"] for r in runs)["median"],
        "records_per_s": round(side["records_per_s"]["median"]),
        "ns_per_record": round(ns["median"]),
        "cpu_s": rounds.spread(r["cpu_s"] for r in runs)["median"],
        "peak_rss_mb": _peak_rss_mb(),
        "rounds": args.rounds,
        "min_seconds": args.min_seconds,
        "summary": {**side, "ns_per_record": ns, "load": summary["load"]},
        "short_runs": summary["short_runs"],
        "runs": runs,
    }
