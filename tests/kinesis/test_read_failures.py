"""The lines a shard reader writes for the failed reads it retries by itself (throttling, 5xx,
an expired iterator): visible, with the error code and what happens next, and at a bounded rate
(one line a minute while a shard stays throttled)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from streamfn.connectors.kinesis import KinesisSource, ShardMetrics
from streamfn.connectors.kinesis._shards import _ShardReader
from streamfn.leases import Lease

THROTTLED = ClientError(
    {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "Rate exceeded"}},
    "GetRecords",
)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def reader(tmp_path: Path) -> _ShardReader:
    source = KinesisSource("arn:aws:kinesis:us-east-1:123456789012:stream/s", state_dir=tmp_path)
    return _ShardReader(source, Lease("shardId-0"), ShardMetrics())


def test_a_shard_throttled_for_ten_minutes_writes_ten_lines_then_its_recovery(
    tmp_path: Path, loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    shard = reader(tmp_path)
    source = shard.source.describe()
    now = 0.0
    shard._read_failures.clock = lambda: now

    with caplog.at_level(logging.INFO, "streamfn.kinesis"):
        for second in range(600):  # throttled once a second
            now = float(second)
            assert shard._failed(THROTTLED, loop)
        throttled = list(caplog.records)
        now = 600.5
        shard._read_failures.succeeded()  # what the next GetRecords that works calls

    assert len(throttled) == 10  # the first throttle in full, then a summary a minute
    assert all(r.levelno == logging.WARNING for r in throttled)
    first = throttled[0]
    assert first.getMessage().startswith("reading the shard failed; retrying in ")
    assert (first.errorType, first.shard, first.source) == (
        "ProvisionedThroughputExceededException",
        "shardId-0",
        source,
    )
    assert "Rate exceeded" in first.errorMessage
    assert all(r.getMessage().endswith("[60 times in 60 s]") for r in throttled[1:])
    *_, last, recovered = caplog.records
    assert last.getMessage().endswith("[59 times in 60 s]")  # owed, written by the success
    assert (recovered.levelno, recovered.getMessage()) == (
        logging.INFO,
        "reading the shard failed: recovered",
    )
    # Every throttle is counted in some line: the first, the summaries, the recovery.
    repeated = sum(r.repeated for r in caplog.records[1:])
    assert 1 + repeated == 600 == shard.metrics.throttles


def test_an_expired_iterator_is_an_info_line_naming_the_shard(
    tmp_path: Path, loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    shard = reader(tmp_path)
    expired = ClientError({"Error": {"Code": "ExpiredIteratorException"}}, "GetRecords")

    with caplog.at_level(logging.INFO, "streamfn.kinesis"):
        assert shard._failed(expired, loop)

    [line] = caplog.records
    assert (line.levelno, line.shard) == (logging.INFO, "shardId-0")
    assert line.getMessage() == "shard iterator expired; renewing it after the last record read"
