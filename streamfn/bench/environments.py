"""``streamfn bench environments``: what an execution environment costs next to an in-loop
coroutine (and a worker thread), with a no-op handler, on the synchronous Invoke path and the
batch path, plus the cold start of an environment.

- invoke: the HTTP adapter's own sequence (take the slot, build the context,
  ``Function.call``) without the HTTP server, so the figure is the mode's overhead alone;
  one caller in turn (latency) and ``--callers`` at once (throughput over that many warm
  environments).
- batch: a mapping drains ``--records`` in-memory records in batches of ``--batch-size``; an
  environment receives each native ``Batch`` over its channel.
- cold start: a fresh environment's first invocation (process start, init, invoke).

CPU is the worker's plus every environment's (``/proc/PID/stat``), so "per core" means per
CPU-second actually spent, wherever it was spent.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from streamfn.app import App
from streamfn.context import Context
from streamfn.dispatch import Function, new_request_id
from streamfn.runtime import run_loop
from streamfn.testing import MemorySource

_TICK = os.sysconf("SC_CLK_TCK")


def noop(event: Any, context: Any) -> None:
    """The environment's handler: does nothing."""


async def anoop(event: Any, context: Any) -> None:
    """The coroutine's handler: does nothing."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--invocations", type=int, default=20_000, help="per invoke run")
    parser.add_argument("--callers", type=int, default=2, help="concurrent callers (2)")
    parser.add_argument("--records", type=int, default=200_000, help="per batch run")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--cold-starts", type=int, default=5)


def _cpu(pids: list[int]) -> float:
    """CPU seconds of this process and of ``pids`` (environments alive now)."""
    total = time.process_time()
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def _pids(function: Function) -> list[int]:
    return function.environments.pids if function.environments is not None else []


async def _invoke_run(function: Function, n: int, callers: int) -> dict[str, float]:
    async def caller(count: int) -> None:
        for _ in range(count):
            function.try_reserve()
            await function.call(None, Context(function.info, new_request_id()))

    await asyncio.gather(*(caller(2) for _ in range(callers)))  # warm: every environment up
    pids = _pids(function)
    cpu0, t0 = _cpu(pids), time.perf_counter()
    await asyncio.gather(*(caller(n // callers) for _ in range(callers)))
    wall, cpu = time.perf_counter() - t0, _cpu(pids) - cpu0
    return {"us_per_invocation": wall / n * 1e6, "per_second": n / wall, "per_cpu_second": n / cpu}


async def _batch_run(execution: str, records: int, batch_size: int) -> dict[str, float]:
    source = MemorySource()
    source.extend("p0", [b"x" * 100] * records)
    app = App("bench")
    handler: Callable[..., Any] = anoop if execution == "loop" else noop
    app.consume(source, name="noop", batch_size=batch_size, execution=execution)(handler)
    function = app.functions["noop"]
    async with app.running():
        await _until(lambda: function.environments is None or bool(function.environments.pids))
        pids = _pids(function)
        cpu0, t0 = _cpu(pids), time.perf_counter()
        await _until(lambda: source.committed.get("p0") == records)
        wall, cpu = time.perf_counter() - t0, _cpu(pids) - cpu0
    batches = records / batch_size
    return {
        "records_per_second": records / wall,
        "us_per_batch": wall / batches * 1e6,
        "batches_per_cpu_second": batches / cpu,
    }


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.001)


async def _cold_starts(count: int) -> dict[str, float]:
    times = []
    for _ in range(count):
        app = App("bench")
        app.function(name="noop")(noop)
        function = app.functions["noop"]
        t0 = time.perf_counter()
        await function.call(None, Context(function.info, new_request_id()))
        times.append((time.perf_counter() - t0) * 1000)
        assert function.environments is not None
        await function.environments.close()
    return {"median_ms": statistics.median(times), "max_ms": max(times)}


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    modes: tuple[tuple[str, Callable[..., Any]], ...] = (
        ("loop", anoop),
        ("thread", noop),
        ("environment", noop),
    )
    for execution, handler in modes:
        app = App("bench")
        app.function(name="noop", execution=execution)(handler)
        function = app.functions["noop"]
        results[f"invoke_{execution}_1_caller"] = await _invoke_run(function, args.invocations, 1)
        results[f"invoke_{execution}_{args.callers}_callers"] = await _invoke_run(
            function, args.invocations, args.callers
        )
        if function.environments is not None:
            await function.environments.close()
        results[f"batch_{execution}"] = await _batch_run(execution, args.records, args.batch_size)
    results["cold_start"] = await _cold_starts(args.cold_starts)
    return results


def main(args: argparse.Namespace) -> int:
    results = run_loop(_main(args))
    if args.json:
        print(orjson.dumps(results).decode())
        return 0
    for name, figures in results.items():
        shown = ", ".join(f"{key} {value:,.1f}" for key, value in figures.items())
        print(f"{name:32} {shown}")
    return 0
