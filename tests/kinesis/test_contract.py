"""The source contract (streamfn.testing.contracts) for KinesisSource on moto: shards are the
partitions, checkpoints in the SQLite lease store of the test's state directory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from streamfn.connectors.kinesis import KinesisSource
from streamfn.testing.contracts import SourceContract

from . import create_stream, kinesis, kinesis_source


class KinesisStream:
    """One test's two-shard stream; a record goes to a shard by that shard's hash key."""

    partitions = 2

    def __init__(self, endpoint: str, state_dir: Path) -> None:
        self.endpoint, self.state_dir = endpoint, state_dir
        self.stream = create_stream(endpoint, self.partitions)
        shards = kinesis(endpoint).list_shards(StreamName=self.stream)["Shards"]
        self.hash_keys = {s["ShardId"]: s["HashKeyRange"]["StartingHashKey"] for s in shards}

    def source(self) -> KinesisSource:
        return kinesis_source(self.endpoint, self.stream, self.state_dir)

    async def append(self, partition: str, values: Sequence[bytes]) -> None:
        key = self.hash_keys[partition]
        records = [{"Data": v, "PartitionKey": "k", "ExplicitHashKey": key} for v in values]
        kinesis(self.endpoint).put_records(StreamName=self.stream, Records=records)


class TestKinesisSource(SourceContract):
    @pytest.fixture
    def source_harness(self, moto_endpoint: str, aws_env: None, tmp_path: Path) -> KinesisStream:
        return KinesisStream(moto_endpoint, tmp_path)
