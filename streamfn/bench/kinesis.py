"""``streamfn bench kinesis``: drain one pre-filled Kinesis stream twice, with a raw aiobotocore
GetRecords loop over its shards and with streamfn (KinesisSource and a no-op batch handler),
under the same per-shard call-rate limit, and print both rates side by side; then count the
DynamoDB calls the lease manager makes with three idle workers.

Each drain runs in its own process from TRIM_HORIZON, timed from the first records fetched to
the last records handled. moto does not throttle, so ``--calls-per-second`` (Kinesis's limit
is 5 per shard) is enforced by each side itself; on this emulator the server's speed usually
binds first, for both sides alike. Without ``--endpoint-url`` a moto server is started on a
free loopback port.

The sides alternate in ``--rounds`` rounds over the same stream (see
:mod:`streamfn.bench.rounds`); a drain under ``--min-seconds`` is flagged, not extended:
filling moto's stream is the slow part, so ``--records`` is the knob.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from aiobotocore.session import get_session

from streamfn import logs
from streamfn.app import App
from streamfn.bench import rounds
from streamfn.bench.kit import DrainClock
from streamfn.connectors.kinesis import KinesisSource
from streamfn.connectors.kinesis.leases import DynamoDBLeaseStore
from streamfn.record import Batch, Record
from streamfn.runtime import run_loop
from streamfn.testing.servers import moto_server

SIDES = ("raw", "streamfn")
MEDIANS = (
    "records",
    "records_per_s",
    "seconds",
    "get_records_calls",
    "cpu_s",
    "peak_rss_mb",
)  # the keys of "raw" and "streamfn"
PUT_BATCH = 500  # records per PutRecords call (the API's maximum)
REGION = "us-east-1"


#: Run in moto's server before it starts: moto finds a shard's last sequence number by copying
#: all its keys on every put, which makes filling quadratic (over 9 minutes for 200,000
#: records on 4 shards); this looks it up in O(1). Reads, which the benchmark measures, are
#: moto's own.
FAST_FILL = (
    "from moto.kinesis.models import Shard\n"
    "Shard.get_max_sequence_number = lambda self: next(reversed(self.records), 0)\n"
)


def _client(service: str, endpoint: str) -> Any:
    return get_session().create_client(service, endpoint_url=endpoint, region_name=REGION)


async def create_stream(endpoint: str, shards: int) -> str:
    name = f"streamfn-bench-{uuid.uuid4().hex[:12]}"
    async with _client("kinesis", endpoint) as kinesis:
        await kinesis.create_stream(StreamName=name, ShardCount=shards)
        async with asyncio.timeout(60):
            while True:
                summary = await kinesis.describe_stream_summary(StreamName=name)
                if summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
                    return name
                await asyncio.sleep(0.5)


async def fill(endpoint: str, stream: str, records: int, record_size: int) -> None:
    """PutRecords in batches of 500, spread over the shards by random partition keys. One call
    at a time: moto numbers a shard's records without a lock, so concurrent puts collide."""
    payload = b"x" * record_size
    async with _client("kinesis", endpoint) as kinesis:
        for start in range(0, records, PUT_BATCH):
            size = min(PUT_BATCH, records - start)
            entries = [{"Data": payload, "PartitionKey": uuid.uuid4().hex} for _ in range(size)]
            response = await kinesis.put_records(StreamName=stream, Records=entries)
            if response.get("FailedRecordCount"):
                raise RuntimeError(f"{response['FailedRecordCount']} records not written")


async def drain_raw(
    endpoint: str, stream: str, clock: DrainClock, calls_per_second: float, limit: int
) -> int:
    """The baseline: per shard, GetShardIterator(TRIM_HORIZON) then GetRecords as fast as the
    call-rate limit allows; nothing else. Returns the number of GetRecords calls."""
    interval = 1.0 / calls_per_second
    calls = 0
    async with _client("kinesis", endpoint) as kinesis:
        arn = (await kinesis.describe_stream_summary(StreamName=stream))[
            "StreamDescriptionSummary"
        ]["StreamARN"]
        shards = (await kinesis.list_shards(StreamARN=arn))["Shards"]

        async def read(shard: str) -> None:
            nonlocal calls
            loop = asyncio.get_running_loop()
            iterator = (
                await kinesis.get_shard_iterator(
                    StreamARN=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
                )
            )["ShardIterator"]
            next_at = 0.0
            while iterator and not clock.done.is_set():
                now = loop.time()
                if next_at > now:
                    await asyncio.sleep(next_at - now)
                next_at = max(now, next_at) + interval
                response = await kinesis.get_records(
                    ShardIterator=iterator, Limit=limit, StreamARN=arn
                )
                calls += 1
                if response["Records"]:
                    clock.started()
                    clock.count(len(response["Records"]))
                iterator = response.get("NextShardIterator")

        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(read(s["ShardId"])) for s in shards]
            await clock.done.wait()
            for task in tasks:
                task.cancel()
    return calls


class _TimedSource(KinesisSource):
    """Starts the clock when the first records are fetched, as the raw side does, and keeps
    the GetRecords call count: the source drops a shard's metrics when the mapping stops and
    releases its leases, before the count could be read."""

    clock: DrainClock
    get_records_calls = 0

    async def fetch(self, partition: str, max_records: int, timeout: float) -> Sequence[Record]:
        records = await super().fetch(partition, max_records, timeout)
        if records:
            self.clock.started()
        self.get_records_calls = sum(m.get_records_calls for m in self.metrics.values())
        return records


async def drain_streamfn(
    endpoint: str,
    stream: str,
    clock: DrainClock,
    calls_per_second: float,
    limit: int,
    batch_size: int,
) -> int:
    """streamfn's path: KinesisSource (SQLite leases and checkpoints), per-shard pollers and a
    no-op batch handler; the engine checkpoints after every batch."""
    with tempfile.TemporaryDirectory() as state:
        source = _TimedSource(
            stream,
            endpoint_url=endpoint,
            region_name=REGION,
            state_dir=state,
            max_calls_per_second=calls_per_second,
            records_per_call=limit,
        )
        source.clock = clock
        await clock.drain_with_noop_app(source, batch_size)
        return source.get_records_calls


async def lease_calls(endpoint: str, shards: int, workers: int, seconds: float) -> dict[str, Any]:
    """DynamoDB calls per minute of ``workers`` idle workers (default lease timing) sharing an
    empty stream, measured once their leases are balanced."""
    stream = await create_stream(endpoint, shards)
    table = f"streamfn-bench-leases-{uuid.uuid4().hex[:8]}"
    stores = [
        DynamoDBLeaseStore(table, endpoint_url=endpoint, region_name=REGION) for _ in range(workers)
    ]
    with tempfile.TemporaryDirectory() as state:
        sources = [
            KinesisSource(
                stream,
                endpoint_url=endpoint,
                region_name=REGION,
                state_dir=Path(state) / str(i),
                lease_store=store,
                worker_id=f"worker-{i}",
            )
            for i, store in enumerate(stores)
        ]
        async with contextlib.AsyncExitStack() as stack:
            for i, source in enumerate(sources):
                app = App(f"idle-{i}")
                app.consume(source, name="idle")(_noop)
                await stack.enter_async_context(app.running())
            fair = -(-shards // workers)
            async with asyncio.timeout(180):
                while not (
                    sum(len(s.owned) for s in sources) == shards
                    and max(len(s.owned) for s in sources) <= fair
                ):
                    await asyncio.sleep(0.2)
            before = sum(sum(store.calls.values()) for store in stores)
            await asyncio.sleep(seconds)
            made = sum(sum(store.calls.values()) for store in stores) - before
    per_minute = made * 60 / seconds
    return {
        "workers": workers,
        "shards": shards,
        "seconds": seconds,
        "calls": made,
        "calls_per_minute": round(per_minute, 1),
        "calls_per_minute_per_worker": round(per_minute / workers, 1),
    }


def _noop(batch: Batch, context: Any) -> None:
    return None


async def _drain(side: str, endpoint: str, stream: str, args: Sequence[str]) -> dict[str, Any]:
    records, cps, limit, batch_size, timeout = args
    clock = DrainClock(int(records))
    async with asyncio.timeout(float(timeout)):
        if side == "raw":
            calls = await drain_raw(endpoint, stream, clock, float(cps), int(limit))
        else:
            calls = await drain_streamfn(
                endpoint, stream, clock, float(cps), int(limit), int(batch_size)
            )
    return clock.result(side, get_records_calls=calls)


def _run_side(side: str, endpoint: str, stream: str, args: argparse.Namespace) -> dict[str, Any]:
    """One side in a fresh interpreter, so its CPU time and peak RSS are its own."""
    command = [
        sys.executable, "-m", "streamfn.bench.kinesis", "side", side, endpoint, stream,
        str(args.records), str(args.calls_per_second), str(args.records_per_call),
        str(args.batch_size), str(args.timeout),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, timeout=args.timeout + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench side {side!r} failed: {done.stderr.decode()[-3000:]}")
    result: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    del result["side"]  # the rounds put it first
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint-url", default=None, help="an existing endpoint (default: start moto)"
    )
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--record-size", type=int, default=100, help="bytes per record")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument(
        "--calls-per-second",
        type=float,
        default=5.0,
        help="GetRecords calls per second and shard, on both sides (Kinesis allows 5)",
    )
    parser.add_argument(
        "--records-per-call", type=int, default=10_000, help="GetRecords Limit, both sides"
    )
    parser.add_argument("--batch-size", type=int, default=1000, help="the mapping's batch_size")
    parser.add_argument(
        "--lease-seconds",
        type=float,
        default=30.0,
        help="seconds to count the lease manager's DynamoDB calls (0: skip)",
    )
    rounds.add_arguments(parser, extends="the run is flagged short (raise --records)")
    parser.add_argument(
        "--repeat", type=int, dest="rounds", default=argparse.SUPPRESS, help="the old --rounds"
    )
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds each side may take before the bench gives up")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    with contextlib.ExitStack() as stack:
        endpoint = args.endpoint_url or stack.enter_context(moto_server(preamble=FAST_FILL))
        stream = run_loop(create_stream(endpoint, args.shards))
        started = time.perf_counter()
        run_loop(fill(endpoint, stream, args.records, args.record_size))
        fill_s = time.perf_counter() - started
        runs = rounds.run_rounds(
            SIDES,
            args.rounds,
            lambda side, _: _run_side(side, endpoint, stream, args),
            rounds.RECORDS,
            args.min_seconds,
        )
        leases = (
            run_loop(lease_calls(endpoint, args.shards, 3, args.lease_seconds))
            if args.lease_seconds > 0
            else None
        )
    summary = rounds.summarize(runs, rounds.RECORDS, [("streamfn", "raw")])
    report = {
        "scenario": "kinesis",
        "records": args.records,
        "record_size": args.record_size,
        "shards": args.shards,
        "calls_per_second": args.calls_per_second,
        "records_per_call": args.records_per_call,
        "batch_size": args.batch_size,
        "fill_s": round(fill_s, 3),
        "rounds": args.rounds,
        "min_seconds": args.min_seconds,
        # medians over the rounds, in the keys a single run used to fill
        "raw": rounds.medians(runs, "raw", MEDIANS),
        "streamfn": rounds.medians(runs, "streamfn", MEDIANS),
        "ratio": summary["ratios"]["streamfn/raw"]["throughput"]["median"],
        "cpu_ratio": summary["ratios"]["streamfn/raw"]["cpu_cost"]["median"],
        "summary": summary,
        "runs": runs,
        "lease_manager": leases,
    }
    _print(report, as_json=getattr(args, "json", False))
    return 0


def _print(report: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    print(
        f"{report['records']:,} records x {report['record_size']} B, {report['shards']} shards, "
        f"GetRecords <= {report['calls_per_second']:g}/s per shard (Limit "
        f"{report['records_per_call']}), batch {report['batch_size']} "
        f"(stream filled in {report['fill_s']:.1f} s)"
    )
    print(rounds.render(report["summary"], rounds.RECORDS, report["rounds"], report["min_seconds"]))
    calls = {side: report[side]["get_records_calls"] for side in SIDES}
    print(f"GetRecords calls per drain (median): raw {calls['raw']}, streamfn {calls['streamfn']}")
    leases = report["lease_manager"]
    if leases is not None:
        print(
            f"lease manager, {leases['workers']} idle workers, {leases['shards']} shards: "
            f"{leases['calls_per_minute']:g} DynamoDB calls/min "
            f"({leases['calls_per_minute_per_worker']:g} per worker; "
            f"{leases['calls']} calls in {leases['seconds']:g} s)"
        )


def _cli(argv: Sequence[str]) -> int:
    if argv[:1] == ["side"]:
        side, endpoint, stream, *rest = argv[1:]
        if side not in SIDES:
            raise SystemExit(f"unknown side {side!r}: expected one of {SIDES}")
        logs.configure("warning")
        print(orjson.dumps(run_loop(_drain(side, endpoint, stream, rest))).decode())
        return 0
    parser = argparse.ArgumentParser(prog="python -m streamfn.bench.kinesis")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    add_arguments(parser)
    logs.configure("warning")
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(_cli(sys.argv[1:]))
