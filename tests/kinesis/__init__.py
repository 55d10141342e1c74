"""Kinesis, DynamoDB Streams and lease tests against moto's server; shared helpers."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import boto3

from streamfn.connectors.kinesis import DynamoDBStreamSource, KinesisSource

FAST_RETRY = {"retry_base_delay": 0.001, "retry_max_delay": 0.01}
#: Tests poll caught-up shards often and re-list shards every second.
FAST_READ = {"idle_interval": 0.05, "shard_sync_interval": 1.0}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def leaf(error: BaseException) -> BaseException:
    """The first exception inside (nested) exception groups."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def kinesis(endpoint: str) -> Any:
    return boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1")


def create_stream(endpoint: str, shards: int) -> str:
    name = unique("stream")
    kinesis(endpoint).create_stream(StreamName=name, ShardCount=shards)
    return name


def put(endpoint: str, stream: str, values: Iterable[str], key: Callable[[int], str] = str) -> None:
    """PutRecords, 500 at a time; record i gets partition key ``key(i)``."""
    client = kinesis(endpoint)
    entries = [{"Data": value.encode(), "PartitionKey": key(i)} for i, value in enumerate(values)]
    for start in range(0, len(entries), 500):
        client.put_records(StreamName=stream, Records=entries[start : start + 500])


def shard_ids(endpoint: str, stream: str) -> list[str]:
    shards = kinesis(endpoint).list_shards(StreamName=stream)["Shards"]
    return [s["ShardId"] for s in shards]


def kinesis_source(endpoint: str, stream: str, state_dir: Path, **options: Any) -> KinesisSource:
    return KinesisSource(
        stream, endpoint_url=endpoint, state_dir=state_dir, **{**FAST_READ, **options}
    )


def ddb_source(endpoint: str, stream: str, state_dir: Path, **options: Any) -> DynamoDBStreamSource:
    return DynamoDBStreamSource(
        stream, endpoint_url=endpoint, state_dir=state_dir, **{**FAST_READ, **options}
    )
