"""Several workers sharing a stream through the DynamoDB lease table: fair shares, graceful
handoff without duplicates, and takeover after a worker process is killed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from streamfn import App, Batch, Context
from streamfn.connectors.kinesis import KinesisSource
from streamfn.connectors.kinesis.leases import DynamoDBLeaseStore
from streamfn.testing import wait_until

from . import create_stream, kinesis_source, put, unique

pytestmark = pytest.mark.usefixtures("aws_env")

LEASE = 2.0  # seconds; the default is 10


class Handled:
    """(worker, shard, sequence number) of every record handled, in order."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, int]] = []

    def keys(self) -> list[tuple[str, int]]:
        return [(shard, seq) for _, shard, seq in self.records]

    def assert_exactly_once_in_order(self, expected: int) -> None:
        keys = self.keys()
        assert len(keys) == len(set(keys)) == expected
        for shard in {s for s, _ in keys}:
            offsets = [seq for s, seq in keys if s == shard]
            assert offsets == sorted(offsets)


def worker(
    endpoint: str, stream: str, table: str, name: str, handled: Handled, state: Path
) -> tuple[App, KinesisSource]:
    source = kinesis_source(
        endpoint,
        stream,
        state / name,
        lease_store=DynamoDBLeaseStore(table, endpoint_url=endpoint),
        worker_id=name,
        lease_duration=LEASE,
    )
    app = App(name)

    @app.consume(source, name="work", batch_size=20)
    async def work(batch: Batch, context: Context) -> None:
        await asyncio.sleep(0.002)
        handled.records.extend((name, r.partition, r.offset) for r in batch)

    return app, source


def shares(sources: list[KinesisSource]) -> list[int]:
    owned = [s.owned for s in sources]
    assert sum(map(len, owned)) == len(frozenset().union(*owned)), "a shard is read twice"
    return sorted(map(len, owned))


async def test_two_workers_split_the_shards_and_handle_each_record_once(
    moto_endpoint: str, tmp_path: Path
) -> None:
    stream, table = create_stream(moto_endpoint, 4), unique("leases")
    put(moto_endpoint, stream, [str(i) for i in range(400)], key=lambda i: f"k{i}")
    handled = Handled()
    workers = [worker(moto_endpoint, stream, table, n, handled, tmp_path) for n in ("a", "b")]
    async with contextlib.AsyncExitStack() as stack:
        for app, _ in workers:
            await stack.enter_async_context(app.running())
        sources = [source for _, source in workers]
        await wait_until(lambda: shares(sources) == [2, 2] and len(handled.records) >= 400, 20)
    handled.assert_exactly_once_in_order(400)


@pytest.mark.slow
async def test_three_workers_balance_and_a_leaving_worker_hands_its_shards_over(
    moto_endpoint: str, tmp_path: Path
) -> None:
    stream, table = create_stream(moto_endpoint, 4), unique("leases")
    handled = Handled()
    workers = [worker(moto_endpoint, stream, table, n, handled, tmp_path) for n in "abc"]
    sources = [source for _, source in workers]
    async with contextlib.AsyncExitStack() as stack:
        stops = []
        for app, _ in workers:
            own = contextlib.AsyncExitStack()
            await own.enter_async_context(app.running())
            stops.append(own)
            stack.push_async_callback(own.aclose)
        await wait_until(lambda: shares(sources) == [1, 1, 2], timeout=30)
        put(moto_endpoint, stream, [str(i) for i in range(200)], key=lambda i: f"k{i}")
        await wait_until(lambda: len(handled.records) >= 200)
        leaving = max(range(3), key=lambda i: len(sources[i].owned))
        await stops[leaving].aclose()  # graceful: drain, checkpoint, release
        left = time.monotonic()
        staying = [s for i, s in enumerate(sources) if i != leaving]
        await wait_until(lambda: sum(shares(staying)) == 4, timeout=10)
        assert time.monotonic() - left < LEASE  # released leases need no expiry
        put(moto_endpoint, stream, [str(i) for i in range(200)], key=lambda i: f"k{i}")
        await wait_until(lambda: len(handled.records) >= 400)
    handled.assert_exactly_once_in_order(400)


WORKER_APP = """
import os
from streamfn import App
from streamfn.connectors.kinesis.leases import DynamoDBLeaseStore
from streamfn.connectors.kinesis import KinesisSource

endpoint = os.environ["KX_ENDPOINT"]
out = open(os.environ["KX_OUT"], "a", buffering=1)
app = App("worker")


@app.consume(
    KinesisSource(
        os.environ["KX_STREAM"],
        endpoint_url=endpoint,
        state_dir=os.environ["KX_STATE"],
        worker_id=os.environ["KX_WORKER"],
        lease_store=DynamoDBLeaseStore(os.environ["KX_TABLE"], endpoint_url=endpoint),
        lease_duration=float(os.environ["KX_LEASE"]),
        idle_interval=0.05,
        shard_sync_interval=1.0,
    ),
    batch_size=20,
)
def work(batch, context):
    out.write("".join(f"{r.text}\\n" for r in batch))
"""


@contextlib.contextmanager
def worker_process(
    tmp_path: Path, name: str, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    app = tmp_path / "worker_app.py"
    app.write_text(WORKER_APP)
    with open(tmp_path / f"{name}.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamfn.cli", "run", f"{app}:app", "--no-http"],
            env={**os.environ, **env, "KX_WORKER": name, "KX_OUT": str(tmp_path / f"{name}.out")},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(10)


def lease_owners(endpoint: str, table: str) -> Counter[str]:
    client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    try:
        items = client.scan(TableName=table, ConsistentRead=True)["Items"]
    except client.exceptions.ResourceNotFoundException:
        return Counter()
    return Counter(item["leaseOwner"]["S"] for item in items if "leaseOwner" in item)


async def wait_for_owners(
    endpoint: str, table: str, expected: dict[str, int], timeout: float
) -> None:
    async with asyncio.timeout(timeout):
        while await asyncio.to_thread(lease_owners, endpoint, table) != Counter(expected):
            await asyncio.sleep(0.1)


def outputs(tmp_path: Path, *names: str) -> set[str]:
    lines: set[str] = set()
    for name in names:
        path = tmp_path / f"{name}.out"
        if path.exists():
            lines |= set(path.read_text().splitlines())
    return lines


@pytest.mark.slow
async def test_killed_worker_process_shards_are_taken_over_within_about_a_lease_period(
    moto_endpoint: str, tmp_path: Path
) -> None:
    stream, table = create_stream(moto_endpoint, 4), unique("leases")
    env = {
        "KX_ENDPOINT": moto_endpoint,
        "KX_STREAM": stream,
        "KX_TABLE": table,
        "KX_STATE": str(tmp_path / "state"),
        "KX_LEASE": str(LEASE),
    }
    with worker_process(tmp_path, "a", env) as a, worker_process(tmp_path, "b", env) as b:
        await wait_for_owners(moto_endpoint, table, {"a": 2, "b": 2}, timeout=40)
        first = {f"x{i}" for i in range(200)}
        put(moto_endpoint, stream, sorted(first), key=lambda i: f"k{i}")
        await wait_until(lambda: first <= outputs(tmp_path, "a", "b"), timeout=20)

        a.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        await wait_for_owners(moto_endpoint, table, {"b": 4}, timeout=6 * LEASE)
        takeover = time.monotonic() - killed
        second = {f"y{i}" for i in range(200)}
        put(moto_endpoint, stream, sorted(second), key=lambda i: f"k{i}")
        await wait_until(lambda: second <= outputs(tmp_path, "b"), timeout=20)

        b.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(b.wait, 20) == 0  # graceful: leases released
    assert takeover <= LEASE + 2.0, f"takeover took {takeover:.2f} s"
    assert await asyncio.to_thread(lease_owners, moto_endpoint, table) == Counter()
