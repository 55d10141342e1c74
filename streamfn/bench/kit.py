"""Measurement tools shared by the ``streamfn bench`` scenarios and the peer comparison.

No client library is imported here: scenarios in ``connectors/`` produce and consume; this
module stamps records, picks keys, keeps latency histograms and throughput timelines, samples a
worker's CPU and memory from ``/proc``, and renders results (table, JSON, PNG).
"""

from __future__ import annotations

import asyncio
import bisect
import math
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from streamfn.app import App

if TYPE_CHECKING:
    from streamfn.source import Source

# -- records --------------------------------------------------------------------------------

#: A record's fixed-width JSON prefix: the produce time and a sequence number sit at known
#: offsets, so a handler reads them with two slices instead of parsing JSON per record.
_STAMP = b'{"ts":%17.6f,"id":%12d,"pad":"'
_TS = slice(6, 23)
_ID = slice(29, 41)
STAMP_BYTES = len(_STAMP % (0.0, 0)) + 2


def stamp(seq: int, size: int, now: float | None = None) -> bytes:
    """A JSON record of ``size`` bytes (at least :data:`STAMP_BYTES`) carrying its produce
    time and ``seq``, the id that duplicates and losses are counted by."""
    head = _STAMP % (time.time() if now is None else now, seq)
    return head + b"x" * max(0, size - len(head) - 2) + b'"}'


def record_id(value: bytes) -> int:
    return int(value[_ID])


class Keys:
    """Record keys: ``none``, ``uniform:K`` (K keys, equally likely) or ``zipf:K[:S]`` (key
    rank r drawn with weight 1/r**S, S=1.1 by default), the skew real traffic has."""

    def __init__(self, spec: str, seed: int = 7) -> None:
        kind, _, rest = spec.partition(":")
        parts = rest.split(":") if rest else []
        self.spec = spec
        self._rng = random.Random(seed)
        self._cumulative: list[float] = []
        if kind == "none" and not parts:
            self.count = 0
            return
        if kind not in ("uniform", "zipf") or not parts or not parts[0].isdigit():
            raise ValueError(f"keys {spec!r}: expected none, uniform:K or zipf:K[:S]")
        self.count = int(parts[0])
        if self.count < 1:
            raise ValueError(f"keys {spec!r}: K must be >= 1")
        if kind == "zipf":
            skew = float(parts[1]) if len(parts) > 1 else 1.1
            weights = [1 / (rank**skew) for rank in range(1, self.count + 1)]
            total = 0.0
            for weight in weights:
                total += weight
                self._cumulative.append(total)

    def next(self) -> bytes | None:
        if not self.count:
            return None
        if self._cumulative:
            draw = self._rng.random() * self._cumulative[-1]
            index = bisect.bisect_left(self._cumulative, draw)
        else:
            index = self._rng.randrange(self.count)
        return b"k%d" % index


class Pacer:
    """Spaces sends to an offered rate (records/s) without drifting: a late sender catches
    up in a burst instead of losing the records it owed. ``rate`` 0 means as fast as possible."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._start = time.perf_counter()

    def delay(self, sent: int) -> float:
        """Seconds to wait before sending record number ``sent``."""
        if not self.rate:
            return 0.0
        return max(0.0, self._start + sent / self.rate - time.perf_counter())


# -- latency and throughput -----------------------------------------------------------------

_GROWTH = 1.02  # bucket width: 2 %, so a percentile is within 1 % of the true value
_LOG_GROWTH = math.log(_GROWTH)
_FLOOR = 1e-6  # seconds: everything below lands in the first bucket


class Histogram:
    """Latencies in log-spaced buckets: constant memory for any number of records, 1 %
    accuracy on every percentile, and two histograms merge by adding counts."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        index = int(math.log(max(seconds, _FLOOR) / _FLOOR) / _LOG_GROWTH)
        self.counts[index] = self.counts.get(index, 0) + 1
        self.total += 1
        if seconds > self.max:
            self.max = seconds

    def merge(self, other: Histogram) -> None:
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count
        self.total += other.total
        self.max = max(self.max, other.max)

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0-100) in seconds; 0.0 when empty."""
        if not self.total:
            return 0.0
        rank = q / 100 * self.total
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return min(self.max, float(_FLOOR * _GROWTH ** (index + 0.5)))
        return self.max

    def summary(self) -> dict[str, float]:
        """p50/p95/p99/max in milliseconds."""
        return {
            "p50_ms": round(self.percentile(50) * 1000, 3),
            "p95_ms": round(self.percentile(95) * 1000, 3),
            "p99_ms": round(self.percentile(99) * 1000, 3),
            "max_ms": round(self.max * 1000, 3),
        }

    def to_json(self) -> dict[str, Any]:
        return {"counts": {str(k): v for k, v in self.counts.items()}, "max": self.max}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Histogram:
        hist = cls()
        hist.counts = {int(k): int(v) for k, v in data["counts"].items()}
        hist.total = sum(hist.counts.values())
        hist.max = float(data["max"])
        return hist

    def buckets(self) -> list[tuple[float, int]]:
        """(upper bound in seconds, count) per non-empty bucket, in order, for plotting."""
        return [(_FLOOR * _GROWTH ** (i + 1), self.counts[i]) for i in sorted(self.counts)]


class Timeline:
    """Records done per ``interval`` seconds since the first one: the throughput-over-time
    series of the plot, which shows stalls (rebalances, retries) an average hides. Times are
    wall-clock, so the timelines of several worker processes merge."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.started: float | None = None
        self.bins: list[int] = []

    def add(self, count: int, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if self.started is None:
            self.started = now
        index = int((now - self.started) / self.interval)
        if index >= len(self.bins):
            self.bins.extend([0] * (index + 1 - len(self.bins)))
        self.bins[index] += count

    def rates(self) -> list[tuple[float, float]]:
        """(seconds since start, records/s) per interval."""
        return [(i * self.interval, n / self.interval) for i, n in enumerate(self.bins)]

    def longest_gap(self) -> float:
        """The longest run of empty intervals inside the series, in seconds: the pause."""
        longest = run = 0
        for count in self.bins:
            run = run + 1 if count == 0 else 0
            longest = max(longest, run)
        return longest * self.interval

    def to_json(self) -> dict[str, Any]:
        return {"interval": self.interval, "started": self.started, "bins": self.bins}

    @classmethod
    def merged(cls, parts: Iterable[Mapping[str, Any]], interval: float = 0.5) -> Timeline:
        """One timeline from several workers' :meth:`to_json`, aligned on wall-clock time."""
        started = [part for part in parts if part["started"] is not None]
        merged = cls(interval)
        if started:
            merged.started = min(part["started"] for part in started)
        for part in started:
            for i, count in enumerate(part["bins"]):
                if count:
                    merged.add(count, part["started"] + (i + 0.5) * part["interval"])
        return merged


# -- what a worker saw -----------------------------------------------------------------------


class Tracker:
    """Counts what a bench worker's handler was given, by record id: total, distinct, the
    duplicates and (against the expected ids) the losses, and the latency from each record's
    produce stamp when ``latency`` is on. Thread-safe enough for a progress reader: it only
    reads ints. A record is poison when ``poison_every`` divides ``id + 1``."""

    def __init__(self, expected: int, *, latency: bool = False, poison_every: int = 0) -> None:
        self.expected = expected
        self.counts = bytearray(expected)
        self.latency = latency
        self.poison_every = poison_every
        self.seen = 0
        self.distinct = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.timeline = Timeline()
        self.histogram = Histogram()
        self.failed_ids: set[int] = set()
        self.isolated: dict[int, float] = {}  # poison id -> seconds from first failure to DLQ
        self._first_failure: dict[int, float] = {}

    @property
    def poison(self) -> int:
        return self.expected // self.poison_every if self.poison_every else 0

    def is_poison(self, value: bytes) -> bool:
        return bool(self.poison_every) and (record_id(value) + 1) % self.poison_every == 0

    def check(self, values: Iterable[bytes]) -> None:
        """Raise for a batch holding a poison record (and note when it first failed)."""
        if not self.poison_every:
            return
        now = time.time()
        for value in values:
            if self.is_poison(value):
                self._first_failure.setdefault(record_id(value), now)
                raise PoisonRecord(record_id(value))

    def dead_lettered(self, values: Iterable[bytes]) -> None:
        """Poison records that reached the on-failure destination: how long isolating took."""
        now = time.time()
        for value in values:
            ident = record_id(value)
            self.failed_ids.add(ident)
            self.isolated.setdefault(ident, now - self._first_failure.get(ident, now))

    def values(self, values: Iterable[bytes]) -> None:
        """Count a successful batch (values of stamped records)."""
        now = time.time()
        counts = self.counts
        n = new = 0
        for value in values:
            ident = int(value[_ID])
            count = counts[ident]
            if not count:
                new += 1
            if count < 255:
                counts[ident] = count + 1
            n += 1
            if self.latency:
                self.histogram.add(now - float(value[_TS]))
        if self.first_at is None:
            self.first_at = now
        self.last_at = now
        self.seen += n
        self.distinct += new
        self.timeline.add(n, now)

    def result(self) -> dict[str, Any]:
        isolate = sorted(self.isolated.values())
        return {
            "seen": self.seen,
            "distinct": self.distinct,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "timeline": self.timeline.to_json(),
            "histogram": self.histogram.to_json(),
            "dead_lettered": len(self.failed_ids),
            "isolate_s": isolate,
        }


class PoisonRecord(Exception):
    """Raised by a bench handler for a batch that holds a poison record."""


class WorkerReporter:
    """A bench worker's side of the line protocol on stdout that :class:`WorkerProcess` reads:
    ``READY`` once it owns partitions, ``P <seen> <distinct>`` every ``interval`` (from a
    thread, so sync frameworks report too), ``RESULT <json>`` at the end. The id counts go to
    ``ids_file`` so the orchestrator can merge several workers' duplicates and losses."""

    def __init__(self, tracker: Tracker, ids_file: str | None, interval: float = 0.25) -> None:
        self.tracker = tracker
        self.ids_file = ids_file
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-progress")
        self._lock = threading.Lock()

    def start(self) -> WorkerReporter:
        self._thread.start()
        return self

    def ready(self) -> None:
        self._line("READY")

    def _line(self, text: str) -> None:
        with self._lock:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._line(f"P {self.tracker.seen} {self.tracker.distinct}")

    def finish(self, extra: Mapping[str, Any] | None = None) -> None:
        self._stop.set()
        if self.ids_file:
            Path(self.ids_file).write_bytes(bytes(self.tracker.counts))
        result = {**self.tracker.result(), **(extra or {})}
        self._line("RESULT " + orjson.dumps(result).decode())


class WorkerProcess:
    """Runs a bench worker (``command``) as a child process and reads its line protocol; its
    CPU and peak RSS are sampled from /proc, so they are the worker's own."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.spawned_at = time.time()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            list(command),
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        self.ready = threading.Event()
        self.finished = threading.Event()
        self.seen = 0
        self.distinct = 0
        self.progressed_at = time.monotonic()
        self.result: dict[str, Any] | None = None
        self.sampler = ProcSampler(self.process.pid).start()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if line == "READY":
                self.ready.set()
            elif line.startswith("P "):
                seen, distinct = (int(v) for v in line[2:].split())
                if seen != self.seen:
                    self.progressed_at = time.monotonic()
                self.seen, self.distinct = seen, distinct
            elif line.startswith("RESULT "):
                self.result = orjson.loads(line[7:])
        self.finished.set()

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 60.0) -> dict[str, Any]:
        """SIGTERM (a graceful stop: the worker commits), then its result and usage."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.finished.wait(10)
        usage = self.sampler.stop()
        self._stderr.seek(0)
        tail = self._stderr.read().decode(errors="replace")[-3000:]
        self._stderr.close()
        if self.result is None:
            raise RuntimeError(f"bench worker exited {self.process.returncode}: {tail}")
        return {**self.result, **usage.to_json(), "spawned_at": self.spawned_at}


JOIN_LIMIT = 30.0  # seconds a joining worker may take to get its first record


@dataclass
class Plan:
    """How a run unfolds: ``expected`` distinct records should succeed within ``timeout``;
    with ``join_at`` (a share of ``expected``) a second worker joins the group then, and
    leaves (SIGTERM) ``stay`` seconds later, to measure a rebalance's pause, duplicates and
    losses. A run ends once all is handled and nothing moved for ``settle`` seconds, or when
    nothing moved for ``idle`` seconds after the first record (a worker that lost records
    never reaches ``expected``)."""

    expected: int
    timeout: float = 600.0
    join_at: float | None = None
    stay: float = 3.0
    settle: float = 0.5
    idle: float = 15.0


class Supervisor:
    """Runs bench workers for one :class:`Plan` and reports what they did together."""

    def __init__(
        self,
        spawn: Callable[[str], WorkerProcess],
        plan: Plan,
        progress: Progress | None = None,
    ) -> None:
        self.spawn = spawn
        self.plan = plan
        self.progress = progress
        self.workers: dict[str, WorkerProcess] = {}
        self.timed_out = False

    async def start(self, ready_timeout: float = 120.0) -> WorkerProcess:
        """The first worker, once it owns its partitions (or has handled a record)."""
        first = self.workers["a"] = self.spawn("a")
        deadline = time.monotonic() + ready_timeout
        while not (first.ready.is_set() or first.seen):
            if not first.alive() or time.monotonic() > deadline:
                first.stop(5)  # raises with the worker's stderr
                raise RuntimeError("bench worker never became ready")
            await asyncio.sleep(0.02)
        return first

    def distinct(self) -> int:
        return sum(w.distinct for w in self.workers.values())

    async def finish(self) -> dict[str, Any]:
        """Wait for the plan to complete (or time out), stop every worker, merge results."""
        deadline = time.monotonic() + self.plan.timeout
        leave_at: float | None = None
        while time.monotonic() < deadline:
            done = self.distinct()
            if self.progress is not None:
                self.progress.update(done)
            leave_at = self._rebalance(done, leave_at)
            idle = time.monotonic() - max(w.progressed_at for w in self.workers.values())
            if leave_at is None and (
                (done >= self.plan.expected and idle >= self.plan.settle)
                or (done and idle >= self.plan.idle)
            ):
                break
            if not any(w.alive() for w in self.workers.values()):
                break
            await asyncio.sleep(0.05)
        else:
            self.timed_out = True
        results = {name: w.stop() for name, w in self.workers.items()}
        return {"timed_out": self.timed_out, "workers": results}

    def _rebalance(self, done: int, leave_at: float | None) -> float | None:
        """Start the second worker at ``join_at``; stop it ``stay`` seconds after it handled
        its first record (it has joined the group and owns partitions), or ``JOIN_LIMIT``
        seconds after it started if it never gets any."""
        plan = self.plan
        if plan.join_at is None:
            return None
        second = self.workers.get("b")
        if second is None:
            if done >= plan.join_at * plan.expected:
                self.workers["b"] = self.spawn("b")
                return time.monotonic() + JOIN_LIMIT
            return None
        now = time.monotonic()
        if leave_at is not None and second.seen and leave_at > now + plan.stay:
            return now + plan.stay
        if leave_at is not None and now >= leave_at:
            second.process.send_signal(signal.SIGTERM)
            return None
        return leave_at


def summarize(
    run: Mapping[str, Any], total: int, ids_files: Iterable[str], poison: int = 0
) -> dict[str, Any]:
    """One row from a :meth:`Supervisor.finish` over ``total`` written records of which
    ``poison`` must fail: throughput from the first to the last record handled by any
    worker, time to first record, latency, losses (good records never handled), duplicates
    and usage."""
    workers = list(run["workers"].values())
    first = min((w["first_at"] for w in workers if w["first_at"]), default=None)
    last = max((w["last_at"] for w in workers if w["last_at"]), default=None)
    seconds = (last - first) if first and last else 0.0
    hist = Histogram()
    for w in workers:
        hist.merge(Histogram.from_json(w["histogram"]))
    timeline = Timeline.merged(w["timeline"] for w in workers)
    counts = merge_ids(ids_files, total)
    lead = run["workers"]["a"]
    isolate = sorted(t for w in workers for t in w["isolate_s"])
    row: dict[str, Any] = {
        "records": counts["distinct"],
        "seconds": round(seconds, 3),
        "records_per_s": round(counts["distinct"] / seconds) if seconds > 0 else 0,
        "first_record_s": round(lead["first_at"] - lead["spawned_at"], 3)
        if lead["first_at"]
        else None,
        "cpu_s": round(sum(w["cpu_s"] for w in workers), 3),
        "peak_rss_mb": max(w["peak_rss_mb"] for w in workers),
        "duplicates": counts["duplicates"],
        # records never handled; on a timed-out run, "not reached" rather than lost
        "lost": None if run["timed_out"] else counts["missing"] - poison,
        "dead_lettered": sum(w["dead_lettered"] for w in workers),
        "pause_s": timeline.longest_gap(),
        "timed_out": run["timed_out"],
    }
    if hist.total:
        row.update(hist.summary())
    if isolate:
        row["isolate_p50_s"] = round(median_spread(isolate)[0], 3)
    row["_timeline"] = timeline
    row["_histogram"] = hist
    return row


def merge_ids(paths: Iterable[str | Path], expected: int) -> dict[str, int]:
    """Duplicates and losses across several workers' id counts."""
    total = bytearray(expected)
    for path in paths:
        for ident, count in enumerate(Path(path).read_bytes()):
            if count:
                total[ident] = min(255, total[ident] + count)
    seen = sum(total)
    distinct = expected - total.count(0)
    return {"distinct": distinct, "duplicates": seen - distinct, "missing": expected - distinct}


# -- a worker's CPU and memory --------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its reaped children, from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return sum(int(v) for v in fields[11:15]) / _TICKS


def proc_rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of ``pid`` in MB, from /proc/<pid>/status."""
    now = peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            now = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return now, max(now, peak)


@dataclass
class Usage:
    """CPU seconds and peak RSS of a worker between :meth:`ProcSampler.start` and ``stop``."""

    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0

    def to_json(self) -> dict[str, float]:
        return {"cpu_s": round(self.cpu_s, 3), "peak_rss_mb": round(self.peak_rss_mb, 1)}


class ProcSampler:
    """Samples another process's CPU and RSS from a thread, so the numbers are the worker's
    own even when it is not Python (a peer, a user's worker) and survive its exit: the last
    sample before the process is gone is kept."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.usage = Usage()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"sampler-{pid}")
        self._cpu0 = 0.0

    def start(self) -> ProcSampler:
        self._cpu0 = self._read()[0]
        self._thread.start()
        return self

    def stop(self) -> Usage:
        self._stop.set()
        self._thread.join()
        return self.usage

    def _read(self) -> tuple[float, float]:
        cpu = proc_cpu_seconds(self.pid)
        _, peak = proc_rss_mb(self.pid)
        return cpu, peak

    def _run(self) -> None:
        while True:
            try:
                cpu, peak = self._read()
            except (OSError, ValueError):  # the process has exited
                return
            self.usage.cpu_s = cpu - self._cpu0
            self.usage.peak_rss_mb = max(self.usage.peak_rss_mb, peak)
            if self._stop.wait(self.interval):
                return


# -- progress and rendering -----------------------------------------------------------------


class Progress:
    """A one-line progress bar on stderr, redrawn with ``\\r`` at most 10 times a second;
    silent when stderr is not a terminal (CI logs, ``--json`` piped to a file) unless forced."""

    def __init__(
        self, label: str, total: int, *, stream: TextIO | None = None, force: bool = False
    ) -> None:
        self.label = label
        self.total = max(total, 1)
        self.stream = stream or sys.stderr
        self.enabled = force or self.stream.isatty()
        self.done = 0
        self._started = time.perf_counter()
        self._drawn = 0.0

    def update(self, done: int) -> None:
        self.done = done
        now = time.perf_counter()
        if self.enabled and (now - self._drawn >= 0.1 or done >= self.total):
            self._drawn = now
            self.stream.write("\r" + self.line(now))
            self.stream.flush()

    def line(self, now: float) -> str:
        share = min(1.0, self.done / self.total)
        filled = int(share * 30)
        elapsed = now - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        return (
            f"{self.label} [{'#' * filled}{'.' * (30 - filled)}] {share:6.1%} "
            f"{self.done:,}/{self.total:,} {rate:,.0f}/s {elapsed:5.1f}s"
        )

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def render_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A plain text table: numbers right-aligned with thousands separators; the columns are
    every key of every row, in first-seen order, unless given."""
    if not rows:
        return "(no rows)"
    columns = list(columns or dict.fromkeys(k for row in rows for k in row))
    cells = [[_cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    numeric = [all(_is_number(row.get(c, 0)) for row in rows) for c in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, cells)])


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def dumps(report: Any) -> str:
    return orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode()


def median_spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max) of repeated runs: the figure and its spread."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return median, ordered[0], ordered[-1]


# -- plots ----------------------------------------------------------------------------------


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError(
            "--plot needs matplotlib, which is not installed: pip install matplotlib"
        ) from exc
    return plt


def plot(
    path: str | Path,
    title: str,
    timelines: Mapping[str, Timeline],
    histograms: Mapping[str, Histogram] | None = None,
) -> None:
    """Throughput over time (one line per series) and, when some histogram holds latencies,
    their distribution (CDF on a log axis), into a small PNG. A drain of a backlog measures no
    latency: its histograms are empty and the PNG has the throughput panel only."""
    plt = _pyplot()
    histograms = {name: hist for name, hist in (histograms or {}).items() if hist.total}
    panels = 2 if histograms else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 3.4), dpi=80, squeeze=False)
    rate_ax = axes[0][0]
    for name, timeline in timelines.items():
        points = timeline.rates()
        rate_ax.plot([t for t, _ in points], [r for _, r in points], label=name, linewidth=1.2)
    rate_ax.set(title="throughput", xlabel="seconds", ylabel="records/s")
    rate_ax.legend(fontsize=7)
    if histograms:
        lat_ax = axes[0][1]
        for name, hist in histograms.items():
            _plot_cdf(lat_ax, name, hist)
        lat_ax.set(title="end-to-end latency", xlabel="ms (log)", ylabel="share of records")
        lat_ax.set_xscale("log")
        lat_ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_cdf(axis: Any, name: str, hist: Histogram) -> None:
    if not hist.total:
        return
    xs, ys, seen = [], [], 0
    for upper, count in hist.buckets():
        seen += count
        xs.append(upper * 1000)
        ys.append(seen / hist.total)
    axis.plot(xs, ys, label=name, linewidth=1.2)


def plot_bars(
    path: str | Path, title: str, groups: Mapping[str, Mapping[str, tuple[float, float, float]]]
) -> None:
    """Grouped bars (median, with min-max whiskers): one group per scenario, one bar per peer."""
    plt = _pyplot()
    peers = sorted({peer for bars in groups.values() for peer in bars})
    fig, axis = plt.subplots(figsize=(max(5.5, 1.6 * len(groups)), 3.4), dpi=80)
    width = 0.8 / max(1, len(peers))
    for i, peer in enumerate(peers):
        xs, heights, low, high = [], [], [], []
        for g, bars in enumerate(groups.values()):
            if peer in bars:
                median, lo, hi = bars[peer]
                xs.append(g + i * width)
                heights.append(median)
                low.append(median - lo)
                high.append(hi - median)
        axis.bar(xs, heights, width, yerr=[low, high], label=peer, capsize=2)
    axis.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], list(groups), fontsize=7)
    axis.set_ylabel("records/s")
    axis.set_yscale("log")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def wait_until(condition: Callable[[], bool], timeout: float, poll: float = 0.05) -> bool:
    """Poll ``condition`` until true or ``timeout``; True when it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


class DrainClock:
    """Times a drain from the first fetched records to the last handled batch, in wall and CPU
    seconds, so start-up (connecting, joining a group) stays out of the rate."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.seen = 0
        self.done = asyncio.Event()
        self._start: tuple[float, float] | None = None
        self._stop: tuple[float, float] | None = None

    def started(self) -> None:
        if self._start is None:
            self._start = (time.perf_counter(), time.process_time())

    def count(self, n: int) -> None:
        self.seen += n
        if self.seen >= self.total and self._stop is None:
            self._stop = (time.perf_counter(), time.process_time())
            self.done.set()

    async def drain_with_noop_app(self, source: Source, batch_size: int, **settings: Any) -> None:
        """streamfn's side of a drain: one mapping from ``source`` (from TRIM_HORIZON, no
        batching window, and ``settings``) into a no-op batch handler that counts, until
        every record is seen."""
        app = App("bench")

        @app.consume(
            source,
            batch_size=batch_size,
            maximum_batching_window=0,
            starting_position="TRIM_HORIZON",
            **settings,
        )
        async def noop(batch: Any, context: Any) -> None:
            self.count(len(batch))

        async with app.running():
            await self.done.wait()

    def result(self, side: str, **extra: Any) -> dict[str, Any]:
        assert self._start is not None and self._stop is not None
        seconds = self._stop[0] - self._start[0]
        return {
            "side": side,
            "records": self.seen,
            "seconds": round(seconds, 3),
            "records_per_s": round(self.seen / seconds),
            **extra,
            "cpu_s": round(self._stop[1] - self._start[1], 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }


def grown_drains(max_messages: int) -> str:
    """What a queue scenario does about a short run, for ``rounds.add_arguments``'
    ``extends``: a warm-up drain times ``--messages`` and every run then drains proportionally
    more, up to ``max_messages``."""
    return (
        f"every run drains more messages (up to {max_messages:,}), after a warm-up drain has "
        "timed it"
    )


@dataclass
class MessageDrain:
    """One side's drain of ``total`` messages in a queue scenario (``rabbitmq``, ``sqs``),
    timed from its first message (:meth:`start`, called on every message: the first one
    counts) to its last acknowledgement (:meth:`finish`), so connecting and declaring stay out
    of the rate. CPU seconds are this process's; the broker's are not counted. A scenario
    subclasses it for its own counters."""

    total: int
    started: float = field(default=0.0, init=False)
    finished: float = field(default=0.0, init=False)
    cpu: float = field(default=0.0, init=False)  # CPU seconds at the start, then spent

    def start(self) -> None:
        if not self.started:
            self.started = time.perf_counter()
            self.cpu = time.process_time()

    def finish(self) -> None:
        self.finished = time.perf_counter()
        self.cpu = time.process_time() - self.cpu

    def result(self) -> dict[str, Any]:
        seconds = self.finished - self.started
        return {
            "messages": self.total,
            "seconds": round(seconds, 3),
            "messages_per_s": round(self.total / seconds, 1),
            "cpu_s": round(self.cpu, 3),
        }
