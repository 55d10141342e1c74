"""``streamfn bench http``: synchronous invocation of a no-op function next to a bare ASGI app on
the same server stack (uvicorn + httptools, the same event loop), then ``Event`` invocations
with the durable queue on, all in one run.

Each server runs in its own process; the load generator (wrk when installed, else the asyncio
one below: raw keep-alive connections, one request in flight on each) runs in this one. With at
least two CPUs the servers are pinned to one and the generator to the others, so the generator
does not take the server's CPU. Scenarios run in interleaved rounds and the median is reported,
with its spread, so background load drifting during the run hits all of them alike (see
:mod:`streamfn.bench.rounds`); next to requests/s the server's own CPU time per 1,000 requests
is measured, which other processes on the machine disturb far less than throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import orjson

from streamfn.bench import rounds
from streamfn.errors import ConfigError
from streamfn.runtime import run_loop

PATH = "/2015-03-31/functions/noop/invocations"
BODY = b'{"bench": true}'
SYNC_TARGET = 0.7  # streamfn sync requests/s as a share of the bare app's
ASYNC_TARGET = 0.5  # accepted Event invocations/s as a share of the sync figure
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class _Server:
    port: int
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far."""
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _TICK


@dataclass
class Result:
    scenario: str
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    server_cpu: float  # seconds of server CPU during the measured window

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us(self) -> float:
        """Server CPU per request, in microseconds."""
        return self.server_cpu / max(1, self.requests) * 1e6

    def row(self) -> dict[str, Any]:
        """The run as the rounds record it."""
        return {
            "scenario": self.scenario,
            "requests": self.requests,
            "seconds": self.seconds,
            "requests_per_s": round(self.rps),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "cpu_s": round(self.server_cpu, 3),  # the server's, not the generator's
            "errors": self.errors,
        }


def _request(invocation_type: str) -> bytes:
    return (
        f"POST {PATH} HTTP/1.1\r\nHost: bench\r\nX-Amz-Invocation-Type: {invocation_type}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY


@dataclass
class _Window:
    record_from: float
    stop_at: float

    def recording(self, now: float) -> bool:
        return self.record_from <= now < self.stop_at


class _Connection(asyncio.Protocol):
    """One keep-alive connection sending the same request again as soon as each answer is
    complete; latencies are kept only inside the measured window."""

    def __init__(self, request: bytes, ok: int, window: _Window) -> None:
        self.request = request
        self.ok = ok
        self.window = window
        self.latencies: list[float] = []
        self.errors = 0
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buffer = b""
        self._sent = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._send()

    def _send(self) -> None:
        self._sent = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self._buffer[:end].lower()
        at = head.find(b"content-length:") + 15
        line_end = head.find(b"\r\n", at)
        length = int(head[at : line_end if line_end >= 0 else None])
        if len(self._buffer) < end + 4 + length:
            return
        now = time.perf_counter()
        if self.window.recording(now):
            self.latencies.append(now - self._sent)
            if int(self._buffer[9:12]) != self.ok:
                self.errors += 1
        self._buffer = self._buffer[end + 4 + length :]
        if now < self.window.stop_at:
            self._send()
        else:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def _drive(
    server: _Server, request: bytes, ok: int, args: argparse.Namespace
) -> tuple[list[float], int, float]:
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    window = _Window(start + args.warmup, start + args.warmup + args.duration)
    conns = []
    for _ in range(args.connections):
        _, conn = await loop.create_connection(
            lambda: _Connection(request, ok, window), "127.0.0.1", server.port
        )
        conns.append(conn)
    async with asyncio.timeout(args.warmup + args.duration + 30):  # a stuck server fails
        await asyncio.sleep(window.record_from - time.perf_counter())
        cpu = server.cpu_seconds()
        await asyncio.sleep(window.stop_at - time.perf_counter())
        cpu = server.cpu_seconds() - cpu
        await asyncio.gather(*(c.closed for c in conns))
    latencies = [x for c in conns for x in c.latencies]
    return latencies, sum(c.errors for c in conns), cpu


def _generate(
    scenario: str, server: _Server, invocation_type: str, ok: int, args: argparse.Namespace
) -> Result:
    latencies, errors, cpu = run_loop(_drive(server, _request(invocation_type), ok, args))
    latencies.sort()

    def quantile(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return Result(
        scenario, len(latencies), errors, args.duration, quantile(0.5), quantile(0.99), cpu
    )


def _wrk(
    scenario: str, server: _Server, invocation_type: str, ok: int, args: argparse.Namespace
) -> Result:
    """The same load with wrk: one thread, the same connections and duration."""
    script = (
        f'wrk.method = "POST"\nwrk.body = {orjson.dumps(BODY.decode()).decode()}\n'
        f'wrk.headers["X-Amz-Invocation-Type"] = "{invocation_type}"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(script)
        lua.flush()
        command = ["wrk", "-t1", f"-c{args.connections}", "--latency", "-s", lua.name]
        url = f"http://127.0.0.1:{server.port}{PATH}"
        warmup = max(1, round(args.warmup))
        subprocess.run([*command, f"-d{warmup}s", url], check=True, capture_output=True)
        cpu = server.cpu_seconds()
        out = subprocess.run(
            [*command, f"-d{round(args.duration)}s", url],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        cpu = server.cpu_seconds() - cpu
    requests = re.search(r"(\d+) requests in", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if requests is None:
        raise RuntimeError(f"cannot read wrk's output: {out}")
    return Result(
        scenario,
        int(requests[1]),
        int(non_2xx[1]) if non_2xx else 0,
        float(round(args.duration)),
        _wrk_ms(out, "50%"),
        _wrk_ms(out, "99%"),
        cpu,
    )


def _wrk_ms(out: str, label: str) -> float:
    found = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", out)
    if found is None:
        raise RuntimeError(f"no {label} latency in wrk's output: {out}")
    return float(found[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found[2]]


@contextlib.contextmanager
def _start(role: str, state_dir: Path, cpu: int | None) -> Iterator[_Server]:
    """A server process (``role`` is ``bare`` or ``streamfn``), pinned to ``cpu``."""
    command = [sys.executable, "-m", "streamfn.bench.http", role, str(state_dir)]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )
    try:
        if cpu is not None:
            os.sched_setaffinity(proc.pid, {cpu})
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once it listens, within seconds
        if not line.startswith(b"PORT "):
            raise RuntimeError(f"bench server {role} did not start")
        yield _Server(int(line.split()[1]), proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_until_drained(server: _Server, timeout: float = 120.0) -> None:
    """Let the accepted events run before the next round, so they do not slow it down."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as r:
            text = r.read().decode()
        if re.search(r"^streamfn_async_queue_depth 0$", text, re.MULTILINE):
            return
        time.sleep(0.1)
    raise RuntimeError(f"accepted events did not drain within {timeout} s")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    rounds.add_arguments(
        parser, min_seconds=3.0, extends="--duration is raised to it (the window is measured)"
    )
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections")
    parser.add_argument(
        "--generator",
        choices=["auto", "asyncio", "wrk"],
        default="auto",
        help="load generator (auto: wrk when installed, else the asyncio one)",
    )


#: side -> (the table's name, invocation type, the status that counts as success)
SIDES = {
    "bare": ("bare ASGI", "RequestResponse", 200),
    "sync": ("streamfn sync", "RequestResponse", 200),
    "event": ("streamfn Event (durable)", "Event", 202),
}


def main(args: argparse.Namespace) -> int:
    if args.generator == "wrk" and shutil.which("wrk") is None:
        raise ConfigError("--generator wrk: wrk is not installed (apt-get install wrk)")
    use_wrk = args.generator == "wrk" or (args.generator == "auto" and shutil.which("wrk"))
    generate: Callable[..., Result] = _wrk if use_wrk else _generate
    args.duration = max(args.duration, args.min_seconds)
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu = cpus[-1] if len(cpus) > 1 else None
    if server_cpu is not None:
        os.sched_setaffinity(0, set(cpus[:-1]))
    with (
        tempfile.TemporaryDirectory(prefix="streamfn-bench-") as tmp,
        _start("bare", Path(tmp) / "bare", server_cpu) as bare,
        _start("streamfn", Path(tmp) / "state", server_cpu) as streamfn,
    ):

        def run(side: str, index: int) -> dict[str, Any]:
            label, invocation_type, ok = SIDES[side]
            return generate(
                label, bare if side == "bare" else streamfn, invocation_type, ok, args
            ).row()

        def settle(side: str) -> None:
            if side == "event":
                _wait_until_drained(streamfn)

        runs = rounds.run_rounds(
            list(SIDES), args.rounds, run, rounds.REQUESTS, args.min_seconds, after=settle
        )
    summary = rounds.summarize(runs, rounds.REQUESTS, [("sync", "bare"), ("event", "sync")])
    ratios = summary["ratios"]
    report = {
        "results": [_medians(runs, side) for side in SIDES],
        "generator": "wrk" if use_wrk else "asyncio",
        "connections": args.connections,
        "rounds": args.rounds,
        "duration": args.duration,
        "server_cpu": server_cpu,
        # the median per-round ratios; "by_cpu" is the baseline's CPU per request over the
        # other's (above 1: the other is cheaper), the inverse of the summary's cpu_cost
        "sync_vs_bare": ratios["sync/bare"]["throughput"]["median"],
        "event_vs_sync": ratios["event/sync"]["throughput"]["median"],
        "sync_vs_bare_by_cpu": _inverse(ratios["sync/bare"]["cpu_cost"]["median"]),
        "event_vs_sync_by_cpu": _inverse(ratios["event/sync"]["cpu_cost"]["median"]),
        "summary": summary,
        "runs": runs,
    }
    _report(report, summary, args)
    ok = report["sync_vs_bare"] >= SYNC_TARGET and report["event_vs_sync"] >= ASYNC_TARGET
    errors = sum(r["errors"] for r in runs)
    return 0 if ok and not errors else 1


def _inverse(value: float) -> float:
    return round(1 / value, 3) if value else 0.0


def _medians(runs: list[dict[str, Any]], side: str) -> dict[str, Any]:
    """One side's medians over the rounds, in the keys of the table (and of older reports);
    errors are summed, not a median: any error counts."""
    mine = [r for r in runs if r["side"] == side]

    def median(key: str) -> float:
        return rounds.spread(r[key] for r in mine)["median"]

    return {
        "scenario": SIDES[side][0],
        "requests_per_s": round(median("requests_per_s")),
        "p50_ms": median("p50_ms"),
        "p99_ms": median("p99_ms"),
        "server_cpu_us_per_request": round(median("cpu_s_per_1000") * 1000, 1),
        "errors": sum(r["errors"] for r in mine),
    }


def _report(report: dict[str, Any], summary: dict[str, Any], args: argparse.Namespace) -> None:
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    print(
        f"{'scenario':<26} {'requests/s':>11} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'server CPU us/req':>18} {'errors':>7}  (medians)"
    )
    for r in report["results"]:
        print(
            f"{r['scenario']:<26} {r['requests_per_s']:>11,} {r['p50_ms']:>8.2f} "
            f"{r['p99_ms']:>8.2f} {r['server_cpu_us_per_request']:>18.1f} {r['errors']:>7}"
        )
    print(rounds.render(summary, rounds.REQUESTS, args.rounds, args.min_seconds))
    print(
        f"targets: sync / bare >= {SYNC_TARGET}, Event / sync >= {ASYNC_TARGET}; generator "
        f"{report['generator']}, {report['connections']} connections, {report['duration']:g} s "
        f"per run, servers on CPU {report['server_cpu']}"
    )


async def _bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The baseline: read the body, answer ``null`` as JSON, nothing else."""
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"4")],
        }
    )
    await send({"type": "http.response.body", "body": b"null"})


async def _serve(role: str, state_dir: Path) -> None:
    """Run one bench server on a free port and print ``PORT <n>`` once it listens."""
    from streamfn import App, Context
    from streamfn.connectors import http
    from streamfn.connectors.http import server
    from streamfn.connectors.http.wire import Limits

    if role == "bare":
        limits = Limits()
        sock = server.bind("127.0.0.1", 0)
        print(f"PORT {sock.getsockname()[1]}", flush=True)
        await server.Server(server.uvicorn_config(_bare_app, limits)).serve(sockets=[sock])
        return
    app = App("bench", state_dir=state_dir)

    @app.function()
    async def noop(event: Any, context: Context) -> None:
        return None

    class PrintPort(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "listening":
                print(f"PORT {record.__dict__['port']}", flush=True)

    logger = logging.getLogger("streamfn.http")
    logger.addHandler(PrintPort())
    logger.setLevel(logging.INFO)
    await app.serve(functools.partial(http.serve, port=0))


if __name__ == "__main__":
    run_loop(_serve(sys.argv[1], Path(sys.argv[2])))
