"""``streamfn bench http-load``: drive Lambda's Invoke API at a fixed offered rate, sync
(``RequestResponse``) and async (``Event``), and measure what the caller sees.

The load is open-loop: request i is due at ``i / rate`` seconds and its latency is counted from
then, so a server that falls behind shows up in the percentiles instead of silently slowing the
generator down (coordinated omission). Point ``--url`` at your running worker (and
``--worker-pid`` at it for CPU and RSS), or let the bench start a streamfn server with a no-op
function and, with ``--bare``, a bare ASGI app on the same uvicorn stack as the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from streamfn.bench import kit
from streamfn.runtime import run_loop

TYPES = {"sync": ("RequestResponse", 200), "event": ("Event", 202)}


@dataclass
class _Result:
    """What one load run saw."""

    sent: int = 0
    done: int = 0
    errors: int = 0
    histogram: kit.Histogram = field(default_factory=kit.Histogram)
    timeline: kit.Timeline = field(default_factory=kit.Timeline)
    seconds: float = 0.0


class _Connection:
    """One keep-alive HTTP/1.1 connection: a request, then its whole response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def call(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = re.search(rb"(?i)content-length:\s*(\d+)", head)
        if length:
            await self.reader.readexactly(int(length[1]))
        return status

    def close(self) -> None:
        self.writer.close()


def _request(host: str, path: str, invocation_type: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nX-Amz-Invocation-Type: {invocation_type}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def drive(
    url: str,
    function: str,
    kind: str,
    rate: float,
    duration: float,
    connections: int,
    size: int,
    progress: kit.Progress | None = None,
) -> _Result:
    """Offer ``rate`` invocations/s for ``duration`` s over at most ``connections``."""
    parts = urlsplit(url)
    path = f"/2015-03-31/functions/{function}/invocations"
    invocation_type, ok = TYPES[kind]
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    pool: asyncio.Queue[_Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(_Connection(*await asyncio.open_connection(host, port)))
    result = _Result()
    total = int(rate * duration)
    started = time.perf_counter()

    async def one(n: int, due: float) -> None:
        due = max(due, time.perf_counter())  # a timer may fire a little early
        connection = await pool.get()
        try:
            body = kit.stamp(n, size)
            status = await connection.call(_request(host, path, invocation_type, body))
        finally:
            pool.put_nowait(connection)
        result.histogram.add(time.perf_counter() - due)
        result.timeline.add(1)
        result.done += 1
        result.errors += status != ok
        if progress is not None:
            progress.update(result.done)

    async with asyncio.TaskGroup() as tg:
        for n in range(total):
            due = started + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tg.create_task(one(n, due))
            result.sent += 1
    result.seconds = time.perf_counter() - started
    while not pool.empty():
        pool.get_nowait().close()
    return result


def wait_until_drained(url: str, timeout: float = 120.0) -> float:
    """Seconds until the server's durable async queue is empty (its /metrics says so)."""
    started = time.perf_counter()
    depth = re.compile(r"^streamfn_async_queue_depth (\S+)$", re.MULTILINE)

    def empty() -> bool:
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as reply:
            found = depth.search(reply.read().decode())
        return found is None or float(found[1]) == 0

    if not kit.wait_until(empty, timeout, 0.05):
        raise RuntimeError(f"accepted events did not drain within {timeout} s")
    return time.perf_counter() - started


@contextlib.contextmanager
def bench_server(role: str, state_dir: Path) -> Iterator[tuple[str, int]]:
    """streamfn.bench.http's server (``streamfn``: a no-op function; ``bare``: a bare ASGI
    app) in a child process: its URL and pid."""
    command = [sys.executable, "-m", "streamfn.bench.http", role, str(state_dir)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith(b"PORT "):
            raise RuntimeError(f"bench server {role} did not start")
        yield f"http://127.0.0.1:{int(line.split()[1])}", process.pid
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure(
    name: str, url: str, pid: int | None, kind: str, args: argparse.Namespace
) -> dict[str, Any]:
    """One run against one server: a row of the table, and its series for the plot."""
    sampler = kit.ProcSampler(pid).start() if pid else None
    progress = kit.Progress(f"{name} {kind}", int(args.rate * args.duration))
    try:
        result = run_loop(
            drive(
                url,
                args.function,
                kind,
                args.rate,
                args.duration,
                args.connections,
                args.size,
                progress,
            )
        )
    finally:
        progress.close()
    drain_s = wait_until_drained(url) if kind == "event" and name == "streamfn" else None
    usage = sampler.stop() if sampler else kit.Usage()
    done = result.done
    row: dict[str, Any] = {
        "server": name,
        "type": kind,
        "offered_per_s": args.rate,
        "done": done,
        "achieved_per_s": round(done / result.seconds) if result.seconds else 0,
        "errors": result.errors,
        **result.histogram.summary(),
        **usage.to_json(),
    }
    if drain_s is not None:
        row["queue_drain_s"] = round(drain_s, 3)
    row["_timeline"] = result.timeline
    row["_histogram"] = result.histogram
    return row


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="your worker's Invoke API (default: start streamfn's)")
    parser.add_argument("--worker-pid", type=int, help="with --url: its pid, for CPU and RSS")
    parser.add_argument("--function", default="noop", help="function to invoke")
    parser.add_argument(
        "--type", choices=["sync", "event", "both"], default="both", help="invocation type"
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="offered invocations/s")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections")
    parser.add_argument("--size", type=int, default=100, help="bytes of JSON per request")
    parser.add_argument(
        "--bare", action="store_true", help="also run the sync load on a bare ASGI app"
    )
    parser.add_argument("--plot", help="write throughput and latency to this PNG")


def _rows(args: argparse.Namespace, stack: contextlib.ExitStack) -> list[dict[str, Any]]:
    kinds = ["sync", "event"] if args.type == "both" else [args.type]
    if args.url:
        return [measure("worker", args.url.rstrip("/"), args.worker_pid, k, args) for k in kinds]
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="streamfn-bench-")))
    rows = []
    if args.bare:
        url, pid = stack.enter_context(bench_server("bare", tmp / "bare"))
        rows.append(measure("bare ASGI", url, pid, "sync", args))
    url, pid = stack.enter_context(bench_server("streamfn", tmp / "state"))
    rows.extend(measure("streamfn", url, pid, kind, args) for kind in kinds)
    return rows


def main(args: argparse.Namespace) -> int:
    if args.rate <= 0 or args.duration <= 0 or args.connections < 1:
        print(
            "streamfn bench http-load: --rate, --duration, --connections must be > 0",
            file=sys.stderr,
        )
        return 2
    with contextlib.ExitStack() as stack:
        rows = _rows(args, stack)
    series = {f"{r['server']} {r['type']}": r for r in rows}
    if args.plot:
        kit.plot(
            args.plot,
            f"http-load: {args.rate:,.0f}/s offered for {args.duration:g} s",
            {name: r["_timeline"] for name, r in series.items()},
            {name: r["_histogram"] for name, r in series.items()},
        )
    for row in rows:
        del row["_timeline"], row["_histogram"]
    print(
        kit.dumps({"scenario": "http-load", "rows": rows}) if args.json else kit.render_table(rows)
    )
    return 1 if any(r["errors"] for r in rows) else 0
