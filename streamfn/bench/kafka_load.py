"""``streamfn bench kafka-load``: load a Kafka topic and measure the worker that drains it.

Without ``--group`` the worker is streamfn itself (KafkaSource and a measuring handler) in a
child process: it drains a pre-filled backlog (``--records``) or keeps up with an offered
``--rate``, optionally with an I/O-bound handler (``--sleep-ms``, per batch or
``--per-record``), poison records (``--poison-every``: bisect isolates them to an on-failure
destination) or a second worker joining and leaving mid-drain (``--join-at``). The handler
reads each record's produce stamp, so latency is end to end, producer to handler.

With ``--group`` (and ``--worker-pid``) the worker is yours, already consuming ``--topic``:
the bench loads the topic and watches the group's committed offsets, so throughput and
latency are measured to the commit, and CPU and peak RSS are read from /proc/<pid>.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from streamfn import logs
from streamfn.app import App
from streamfn.bench import kit
from streamfn.bench.fill import Load, create_topic, fill_kafka
from streamfn.connectors.kafka import KafkaSource
from streamfn.record import Batch
from streamfn.runtime import run_loop
from streamfn.testing.servers import TansuBroker

#: Group settings for bench workers: a joining or leaving worker rebalances in seconds.
FAST_GROUP = {"heartbeat_interval_ms": 500, "session_timeout_ms": 6000}


# -- the streamfn worker (a child process) ---------------------------------------------------


class _DeadLetters:
    """The on-failure destination of the poison scenario: notes which records got there."""

    include_payload = True

    def __init__(self, tracker: kit.Tracker) -> None:
        self.tracker = tracker

    def describe(self) -> str:
        return "bench-dead-letters"

    async def send(self, record: Mapping[str, Any], *, key: bytes | None = None) -> None:
        event = orjson.loads(record["payload"])
        values = [base64.b64decode(r["value"]) for rs in event["records"].values() for r in rs]
        self.tracker.dead_lettered(values)


def build_worker(config: Mapping[str, Any], tracker: kit.Tracker) -> tuple[App, KafkaSource]:
    """streamfn on the bench topic, with the handler the config asks for."""
    source = KafkaSource(
        config["topic"],
        bootstrap_servers=config["servers"],
        group_id=config["group"],
        consumer_options=FAST_GROUP,
    )
    app = App("bench-kafka-load")
    sleep = config["sleep_ms"] / 1000
    per_record = config["per_record"]
    poison = config["poison_every"] > 0

    @app.consume(
        source,
        batch_size=config["batch_size"],
        maximum_batching_window=config["batching_window"],
        parallelization_factor=config["parallelization_factor"],
        starting_position="TRIM_HORIZON",
        bisect_batch_on_function_error=poison,
        maximum_retry_attempts=0 if poison else -1,
        retry_base_delay=0.01,
        retry_max_delay=0.1,
        on_failure=_DeadLetters(tracker) if poison else None,
        timeout=300.0,
        shutdown_timeout=10.0,
    )
    async def handler(batch: Batch, context: Any) -> None:
        values = [r.value for r in batch]
        tracker.check(values)
        if sleep:
            for _ in values if per_record else (None,):
                await asyncio.sleep(sleep)
        tracker.values(values)

    return app, source


async def run_worker(config: Mapping[str, Any]) -> None:
    """Run until SIGTERM, reporting on stdout (see :class:`kit.WorkerReporter`)."""
    tracker = kit.Tracker(
        config["records"], latency=config["latency"], poison_every=config["poison_every"]
    )
    reporter = kit.WorkerReporter(tracker, config["ids_file"]).start()
    app, source = build_worker(config, tracker)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        async with app.running():
            while not source.partitions and not stop.is_set():
                await asyncio.sleep(0.01)
            reporter.ready()
            await stop.wait()
    finally:
        reporter.finish()


def worker_command(config: Mapping[str, Any]) -> list[str]:
    return [sys.executable, "-m", "streamfn.bench.kafka_load", orjson.dumps(config).decode()]


# -- the watcher of someone else's worker ----------------------------------------------------


class _CommitWatcher:
    """Polls a group's committed offsets: records committed per interval, and the latency of
    the records the bench produced at a rate, from their send time to the commit past them."""

    def __init__(self, servers: str, group: str, topic: str, interval: float = 0.05) -> None:
        self.servers = servers
        self.group = group
        self.topic = topic
        self.interval = interval
        self.timeline = kit.Timeline()
        self.histogram = kit.Histogram()
        self.committed = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self._offsets: dict[int, int] = {}
        self._sent: dict[int, collections.deque[tuple[int, float]]] = {}

    def sent(self, partition: int, offset: int, produced_at: float) -> None:
        self._sent.setdefault(partition, collections.deque()).append((offset, produced_at))

    async def watch(self, until: asyncio.Event) -> None:
        """OffsetFetch as a member-less client of the group (it never joins, so it does not
        trigger a rebalance); the admin API's ListConsumerGroupOffsets is not used because
        tansu answers it in a form aiokafka cannot decode."""
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.servers, group_id=self.group, enable_auto_commit=False
        )
        await reader.start()
        try:
            await reader.topics()  # loads the cluster metadata
            partitions = sorted(reader.partitions_for_topic(self.topic) or ())
            tps = [TopicPartition(self.topic, p) for p in partitions]
            while not until.is_set():
                self._update({tp.partition: await reader.committed(tp) for tp in tps})
                await asyncio.sleep(self.interval)
        finally:
            await reader.stop()

    def _update(self, offsets: Mapping[int, int | None]) -> None:
        now = time.time()
        advanced = 0
        for partition, offset in offsets.items():
            if offset is None or offset < 0:
                continue
            advanced += offset - self._offsets.get(partition, 0)
            self._offsets[partition] = offset
            pending = self._sent.get(partition, collections.deque())
            while pending and pending[0][0] < offset:
                self.histogram.add(now - pending.popleft()[1])
        if advanced > 0:
            self.first_at = self.first_at or now
            self.last_at = now
            self.committed += advanced
            self.timeline.add(advanced, now)


async def _watch_external(
    args: argparse.Namespace, servers: str, topic: str, load: Load
) -> dict[str, Any]:
    watcher = _CommitWatcher(servers, args.group, topic)
    sampler = kit.ProcSampler(args.worker_pid).start() if args.worker_pid else None
    progress = kit.Progress("kafka-load", load.records)
    done = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(watcher.watch(done))
            await fill_kafka(servers, topic, load, on_sent=watcher.sent if load.rate else None)
            async with asyncio.timeout(args.timeout):
                while watcher.committed < load.records:
                    progress.update(watcher.committed)
                    await asyncio.sleep(0.1)
            done.set()
    finally:
        progress.close()
    usage = sampler.stop() if sampler else kit.Usage()
    seconds = (watcher.last_at or 0.0) - (watcher.first_at or 0.0)
    row: dict[str, Any] = {
        "worker": f"group {args.group}",
        "records": watcher.committed,
        "seconds": round(seconds, 3),
        "records_per_s": round(watcher.committed / seconds) if seconds > 0 else 0,
        **usage.to_json(),
        "latency": "to commit" if load.rate else "n/a (backlog)",
        **(watcher.histogram.summary() if watcher.histogram.total else {}),
        "_timeline": watcher.timeline,
        "_histogram": watcher.histogram,
    }
    return row


# -- the built-in worker, supervised -------------------------------------------------------


def _config(args: argparse.Namespace, servers: str, topic: str) -> dict[str, Any]:
    return {
        "servers": servers,
        "topic": topic,
        "group": f"bench-{uuid.uuid4().hex[:12]}",
        "records": args.records,
        "batch_size": args.batch_size,
        "batching_window": args.batching_window,
        "parallelization_factor": args.parallelization_factor,
        "sleep_ms": args.sleep_ms,
        "per_record": args.per_record,
        "poison_every": args.poison_every,
        "latency": bool(args.rate),
        "ids_file": None,
    }


async def _run_builtin(
    args: argparse.Namespace, servers: str, topic: str, load: Load, tmp: str
) -> dict[str, Any]:
    config = _config(args, servers, topic)
    ids = {name: str(Path(tmp) / f"ids-{name}") for name in ("a", "b")}

    def spawn(name: str) -> kit.WorkerProcess:
        return kit.WorkerProcess(worker_command({**config, "ids_file": ids[name]}))

    poison = args.records // args.poison_every if args.poison_every else 0
    plan = kit.Plan(args.records - poison, args.timeout, args.join_at, args.stay)
    progress = kit.Progress("kafka-load", plan.expected)
    supervisor = kit.Supervisor(spawn, plan, progress)
    try:
        if not load.rate:
            await fill_kafka(servers, topic, load)
        await supervisor.start()
        if load.rate:
            await fill_kafka(servers, topic, load)
        run = await supervisor.finish()
    finally:
        progress.close()
    files = [ids[name] for name in supervisor.workers]
    row = kit.summarize(run, args.records, files, poison)
    return {"worker": "streamfn", **row}


# -- the scenario ----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_argument_group("target")
    target.add_argument(
        "--bootstrap-servers", help="your broker (default: tansu on a free loopback port)"
    )
    target.add_argument("--topic", help="topic to load (default: a fresh one)")
    target.add_argument("--partitions", type=int, default=4, help="partitions of a new topic")
    target.add_argument(
        "--group", help="measure YOUR worker: its consumer group, watched through its commits"
    )
    target.add_argument("--worker-pid", type=int, help="with --group: its pid, for CPU and RSS")
    load = parser.add_argument_group("load")
    load.add_argument("--records", type=int, default=100_000)
    load.add_argument("--size", type=int, default=100, help="bytes per record")
    load.add_argument("--keys", default="none", help="none, uniform:K or zipf:K[:S]")
    load.add_argument(
        "--rate", type=float, default=0.0, help="offered records/s (default: pre-fill, drain)"
    )
    worker = parser.add_argument_group("built-in streamfn worker")
    worker.add_argument("--batch-size", type=int, default=500)
    worker.add_argument("--batching-window", type=float, default=0.0, help="seconds")
    worker.add_argument("--parallelization-factor", type=int, default=1)
    worker.add_argument("--sleep-ms", type=float, default=0.0, help="handler I/O per batch")
    worker.add_argument("--per-record", action="store_true", help="--sleep-ms per record")
    worker.add_argument(
        "--poison-every", type=int, default=0, help="every Nth record fails (1000: 0.1%%)"
    )
    worker.add_argument(
        "--join-at", type=float, help="a second worker joins at this share of records (0-1)"
    )
    worker.add_argument("--stay", type=float, default=3.0, help="seconds the second one stays")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before giving up")
    parser.add_argument("--plot", help="write throughput and latency to this PNG")


async def _scenario(args: argparse.Namespace, servers: str) -> dict[str, Any]:
    topic = args.topic or f"bench-{uuid.uuid4().hex[:12]}"
    await create_topic(servers, topic, args.partitions)
    load = Load(args.records, args.size, kit.Keys(args.keys), args.rate)
    if args.group:
        return await _watch_external(args, servers, topic, load)
    with tempfile.TemporaryDirectory(prefix="streamfn-bench-") as tmp:
        return await _run_builtin(args, servers, topic, load, tmp)


def main(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        servers = args.bootstrap_servers or stack.enter_context(TansuBroker()).address
        row = run_loop(_scenario(args, servers))
    timeline, histogram = row.pop("_timeline"), row.pop("_histogram")
    report = {
        "scenario": "kafka-load",
        "records": args.records,
        "size": args.size,
        "keys": args.keys,
        "rate": args.rate,
        "partitions": args.partitions,
        **row,
    }
    if args.plot:
        title = f"kafka-load: {args.records:,} x {args.size} B" + (
            f" at {args.rate:,.0f}/s" if args.rate else " (drain)"
        )
        kit.plot(args.plot, title, {row["worker"]: timeline}, {row["worker"]: histogram})
    print(kit.dumps(report) if args.json else kit.render_table([report]))
    return 1 if row.get("timed_out") else 0


if __name__ == "__main__":
    logs.configure("warning")
    run_loop(run_worker(orjson.loads(sys.argv[1])))
