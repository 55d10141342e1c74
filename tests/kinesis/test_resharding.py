"""Resharding while records are being processed: a split and a merge lose nothing, and a child
shard is read only after all its parents were read to their end and checkpointed.

moto 5's Kinesis reshards unlike AWS: new records keep going to a closed parent, a split moves
the parent's records into itself again, a merge copies both parents' records into the child,
and a closed shard never ends its iterator. The server these tests use patches those four
things to AWS's documented behaviour; everything else is moto's.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamfn import App, Batch, Context
from streamfn.connectors.kinesis import KinesisSource
from streamfn.testing import wait_until
from streamfn.testing.servers import free_port, wait_for_port

from . import create_stream, kinesis, kinesis_source, put

pytestmark = pytest.mark.usefixtures("aws_env")

AWS_RESHARDING = r"""
import collections, sys
from moto.kinesis import models, utils
from moto.utilities.utils import md5_hash

def get_shard_for_key(self, partition_key, explicit_hash_key):
    key = (int(explicit_hash_key) if explicit_hash_key
           else int(md5_hash(partition_key.encode()).hexdigest(), 16))
    return next(s for s in self.shards.values()
                if s.is_open and s.starting_hash <= key <= s.ending_hash)

def keeping_records(reshard):
    def patched(self, *args):
        parents = [self.shards[a] for a in args if a in self.shards]
        kept = [(p, p.records) for p in parents]
        for p in parents:
            p.records = collections.OrderedDict()
        reshard(self, *args)
        for p, records in kept:
            p.records = records
    return patched

get_records = models.KinesisBackend.get_records

def ending_get_records(self, stream_arn, shard_iterator, limit):
    next_iterator, records, behind = get_records(self, stream_arn, shard_iterator, limit)
    name, shard_id, last = utils.decompose_shard_iterator(next_iterator)
    shard = self.describe_stream(stream_arn=stream_arn, stream_name=name).get_shard(shard_id)
    if not shard.is_open and int(last) >= shard.get_max_sequence_number():
        next_iterator = None
    return next_iterator, records, behind

models.Stream.get_shard_for_key = get_shard_for_key
models.Stream.split_shard = keeping_records(models.Stream.split_shard)
models.Stream.merge_shards = keeping_records(models.Stream.merge_shards)
models.KinesisBackend.get_records = ending_get_records

from moto.server import main
main(sys.argv[1:])
"""


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """moto's server with AWS's resharding behaviour, for this module only."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", AWS_RESHARDING, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


class Log:
    """(shard, value) in handling order, from a slow-ish handler so resharding lands mid-way."""

    def __init__(self) -> None:
        self.handled: list[tuple[str, str]] = []

    async def handle(self, batch: Batch, context: Context) -> None:
        await asyncio.sleep(0.01)
        self.handled.extend((r.partition, r.text) for r in batch)

    def values(self) -> set[str]:
        return {value for _, value in self.handled}

    def positions(self, shard: str) -> list[int]:
        return [i for i, (s, _) in enumerate(self.handled) if s == shard]


@pytest.mark.slow
async def test_split_during_processing_loses_nothing_and_reads_the_parent_first(
    endpoint: str, tmp_path: Path
) -> None:
    stream = create_stream(endpoint, 1)
    before = [f"a{i}" for i in range(300)]
    after = [f"b{i}" for i in range(300)]
    put(endpoint, stream, before)
    source = kinesis_source(endpoint, stream, tmp_path)
    log = Log()
    app = App()
    app.consume(source, name="split", batch_size=10)(log.handle)
    async with app.running():
        await wait_until(lambda: len(log.handled) >= 50)
        assert len(log.handled) < len(before), "the split must land during processing"
        kinesis(endpoint).split_shard(
            StreamName=stream, ShardToSplit="shardId-000000000000", NewStartingHashKey=str(2**127)
        )
        put(endpoint, stream, after)
        await wait_until(lambda: log.values() == set(before + after), timeout=20)
        await retired(source, "shardId-000000000000")
    parent = log.positions("shardId-000000000000")
    children = log.positions("shardId-000000000001") + log.positions("shardId-000000000002")
    assert len(parent) >= len(before) and len(children) >= len(after)
    assert max(parent) < min(children)


async def test_merge_during_processing_loses_nothing_and_reads_both_parents_first(
    endpoint: str, tmp_path: Path
) -> None:
    stream = create_stream(endpoint, 2)
    before = [f"a{i}" for i in range(300)]
    after = [f"b{i}" for i in range(200)]
    put(endpoint, stream, before, key=lambda i: f"k{i}")
    source = kinesis_source(endpoint, stream, tmp_path)
    log = Log()
    app = App()
    app.consume(source, name="merge", batch_size=10)(log.handle)
    async with app.running():
        await wait_until(lambda: len(log.handled) >= 50)
        assert len(log.handled) < len(before), "the merge must land during processing"
        kinesis(endpoint).merge_shards(
            StreamName=stream,
            ShardToMerge="shardId-000000000000",
            AdjacentShardToMerge="shardId-000000000001",
        )
        put(endpoint, stream, after, key=lambda i: f"k{i}")
        await wait_until(lambda: log.values() == set(before + after), timeout=20)
    parents = log.positions("shardId-000000000000") + log.positions("shardId-000000000001")
    child = log.positions("shardId-000000000002")
    assert len(child) >= len(after)
    assert max(parents) < min(child)


async def retired(source: KinesisSource, shard: str) -> None:
    """Wait until the shard's lease was deleted: finished, and its children have leases."""
    assert source.coordinator is not None
    store = source.coordinator.store
    async with asyncio.timeout(10):
        while any(lease.key == shard for lease in await store.list()):
            await asyncio.sleep(0.05)
