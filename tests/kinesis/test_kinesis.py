"""KinesisSource against moto: the Lambda event, ordering, checkpoints and restarts, the outcome
policy with KinesisBatchInfo, starting positions, pacing, throttling and a missing stream."""

from __future__ import annotations

import asyncio
import base64
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from streamfn import App, Batch, BatchResult, Context, SourceError
from streamfn.connectors.kinesis import KinesisSource, ShardMetrics
from streamfn.connectors.kinesis._shards import _ShardReader
from streamfn.leases import Lease
from streamfn.testing import MemoryDestination, wait_until

from . import FAST_RETRY, create_stream, kinesis, kinesis_source, put, shard_ids

pytestmark = pytest.mark.usefixtures("aws_env")


async def test_lambda_event_is_the_exact_kinesis_event(moto_endpoint: str, tmp_path: Path) -> None:
    stream = create_stream(moto_endpoint, 1)
    put(moto_endpoint, stream, ['{"n": 1}'], key=lambda i: "user-7")
    source = kinesis_source(moto_endpoint, stream, tmp_path)
    events: list[dict[str, Any]] = []
    app = App(account_id="123456789012")

    @app.consume(source, event_format="lambda")
    async def handler(event: dict[str, Any], context: Any) -> None:
        events.append(event)

    async with app.running():
        await wait_until(lambda: bool(events))
    [record] = events[0]["Records"]
    kinesis = record.pop("kinesis")
    arrival = kinesis.pop("approximateArrivalTimestamp")
    assert isinstance(arrival, float) and abs(arrival - time.time()) < 60
    assert base64.b64decode(kinesis.pop("data")) == b'{"n": 1}'
    seq = kinesis.pop("sequenceNumber")
    assert kinesis == {"kinesisSchemaVersion": "1.0", "partitionKey": "user-7"}
    shard = shard_ids(moto_endpoint, stream)[0]
    assert record == {
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard}:{seq}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/streamfn",
        "awsRegion": "us-east-1",
        "eventSourceARN": f"arn:aws:kinesis:us-east-1:123456789012:stream/{stream}",
    }


async def test_records_stay_in_order_per_shard_and_per_key_with_parallelization(
    moto_endpoint: str, tmp_path: Path
) -> None:
    stream = create_stream(moto_endpoint, 2)
    total = 600
    put(moto_endpoint, stream, [str(i) for i in range(total)], key=lambda i: f"k{i % 13}")
    source = kinesis_source(moto_endpoint, stream, tmp_path)
    seen: dict[str, list[int]] = defaultdict(list)  # key -> values, in handling order
    shards: dict[str, list[int]] = defaultdict(list)  # shard -> sequence numbers per key lane
    count = 0
    app = App()

    @app.consume(source, batch_size=7, parallelization_factor=4)
    async def handler(batch: Batch, context: Context) -> None:
        nonlocal count
        await asyncio.sleep(0.001)  # let the lanes interleave
        for record in batch:
            seen[record.key.decode() if record.key else ""].append(int(record.value))
            shards[f"{record.partition}/{record.key!r}"].append(record.offset)
        count += len(batch)

    async with app.running():
        await wait_until(lambda: count >= total)
    assert count == total
    for values in seen.values():
        assert values == sorted(values)
    for offsets in shards.values():
        assert offsets == sorted(offsets)


async def test_restart_resumes_after_the_last_checkpoint(
    moto_endpoint: str, tmp_path: Path
) -> None:
    stream = create_stream(moto_endpoint, 2)
    put(moto_endpoint, stream, [f"a{i}" for i in range(50)])
    handled: list[str] = []

    def app_reading() -> App:
        app = App()

        @app.consume(kinesis_source(moto_endpoint, stream, tmp_path), batch_size=10)
        async def handler(batch: Batch, context: Context) -> None:
            handled.extend(r.text for r in batch)

        return app

    async with app_reading().running():
        await wait_until(lambda: len(handled) == 50)
    put(moto_endpoint, stream, [f"b{i}" for i in range(30)])
    async with app_reading().running():  # a replay would come before the b records
        await wait_until(lambda: sum(h.startswith("b") for h in handled) == 30)
    assert sorted(handled) == sorted([f"a{i}" for i in range(50)] + [f"b{i}" for i in range(30)])


async def test_poison_record_is_bisected_to_the_failure_destination_with_kinesis_batch_info(
    moto_endpoint: str, tmp_path: Path
) -> None:
    stream = create_stream(moto_endpoint, 1)
    put(moto_endpoint, stream, ["ok"] * 15 + ["poison"] + ["ok"] * 16)
    destination = MemoryDestination()
    handled = 0
    app = App(region="us-east-1", account_id="123456789012")

    @app.consume(
        kinesis_source(moto_endpoint, stream, tmp_path),
        batch_size=32,
        maximum_batching_window=1,
        bisect_batch_on_function_error=True,
        maximum_retry_attempts=1,
        on_failure=destination,
        **FAST_RETRY,
    )
    async def handler(batch: Batch, context: Context) -> None:
        nonlocal handled
        if any(r.value == b"poison" for r in batch):
            raise ValueError("poison")
        handled += len(batch)

    async with app.running():
        [failure] = await destination.wait_for(1)
        await wait_until(lambda: handled == 31)
    info = failure["KinesisBatchInfo"]
    shard = shard_ids(moto_endpoint, stream)[0]
    assert info["shardId"] == shard
    assert info["startSequenceNumber"] == info["endSequenceNumber"] == "16"
    assert info["batchSize"] == 1
    assert info["streamArn"].endswith(f":stream/{stream}")
    assert info["approximateArrivalOfFirstRecord"].endswith("Z")
    assert set(info) == {
        "shardId",
        "startSequenceNumber",
        "endSequenceNumber",
        "approximateArrivalOfFirstRecord",
        "approximateArrivalOfLastRecord",
        "batchSize",
        "streamArn",
    }
    assert failure["requestContext"]["condition"] == "RetryAttemptsExhausted"


async def test_partial_response_rewinds_to_the_lowest_sequence_number_as_an_integer(
    moto_endpoint: str, tmp_path: Path
) -> None:
    stream = create_stream(moto_endpoint, 1)
    put(moto_endpoint, stream, [str(i) for i in range(12)])  # sequence numbers "1" .. "12"
    calls: list[list[int]] = []
    app = App()

    @app.consume(
        kinesis_source(moto_endpoint, stream, tmp_path),
        batch_size=12,
        maximum_batching_window=1,
        function_response_types=["ReportBatchItemFailures"],
        **FAST_RETRY,
    )
    async def handler(batch: Batch, context: Context) -> BatchResult | None:
        calls.append([r.offset for r in batch])
        if len(calls) == 1:  # "10" < "9" as strings, but 9 is the lowest failure
            return BatchResult(["10", "9"])
        return None

    async with app.running():
        await wait_until(lambda: len(calls) == 2)
    assert calls[1] == [9, 10, 11, 12]


async def test_a_sequence_number_not_in_the_batch_beside_a_valid_one_retries_it_whole(
    moto_endpoint: str, tmp_path: Path
) -> None:
    """Lambda takes a response it cannot honour as a complete failure: the valid sequence
    number must not let the records before it be checkpointed."""
    stream = create_stream(moto_endpoint, 1)
    put(moto_endpoint, stream, [str(i) for i in range(6)])
    calls: list[list[int]] = []
    app = App()

    @app.consume(
        kinesis_source(moto_endpoint, stream, tmp_path),
        batch_size=6,
        maximum_batching_window=1,
        function_response_types=["ReportBatchItemFailures"],
        event_format="lambda",
        **FAST_RETRY,
    )
    async def handler(event: dict[str, Any], context: Context) -> dict[str, Any]:
        sequences = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
        calls.append([int(s) for s in sequences])
        if len(calls) > 1:
            return {"batchItemFailures": []}
        unknown = str(int(sequences[-1]) + 1000)
        failures = [{"itemIdentifier": sequences[3]}, {"itemIdentifier": unknown}]
        return {"batchItemFailures": failures}

    async with app.running():
        await wait_until(lambda: len(calls) == 2)
    assert len(calls[0]) == 6
    assert calls[1] == calls[0]


async def test_latest_skips_what_was_there_and_at_timestamp_starts_at_that_time(
    moto_endpoint: str, tmp_path: Path
) -> None:
    stream = create_stream(moto_endpoint, 1)
    put(moto_endpoint, stream, ["old"])
    await asyncio.sleep(0.05)
    boundary = time.time()
    await asyncio.sleep(0.05)
    put(moto_endpoint, stream, ["new"])
    latest: list[str] = []
    since: list[str] = []
    from_latest = kinesis_source(moto_endpoint, stream, tmp_path / "latest")
    app = App()

    @app.consume(from_latest, starting_position="LATEST")
    async def latest_handler(batch: Batch, context: Context) -> None:
        latest.extend(r.text for r in batch)

    @app.consume(
        kinesis_source(moto_endpoint, stream, tmp_path / "at"),
        starting_position="AT_TIMESTAMP",
        starting_position_timestamp=boundary,
    )
    async def timestamp_handler(batch: Batch, context: Context) -> None:
        since.extend(r.text for r in batch)

    def latest_positioned() -> bool:  # a second GetRecords: the LATEST iterator exists
        return any(m.get_records_calls >= 2 for m in from_latest.metrics.values())

    async with app.running():
        await wait_until(lambda: since == ["new"])
        await wait_until(latest_positioned)
        put(moto_endpoint, stream, ["newest"])
        await wait_until(lambda: latest == ["newest"] and since == ["new", "newest"])


async def test_millis_behind_latest_and_iterator_age_are_kept_per_shard(
    moto_endpoint: str, tmp_path: Path
) -> None:
    stream = create_stream(moto_endpoint, 2)
    put(moto_endpoint, stream, [str(i) for i in range(40)], key=lambda i: f"k{i}")
    source = kinesis_source(moto_endpoint, stream, tmp_path)
    count = 0
    app = App()

    @app.consume(source)
    async def handler(batch: Batch, context: Context) -> None:
        nonlocal count
        count += len(batch)

    async with app.running():
        await wait_until(lambda: count == 40)
        await wait_until(lambda: all(m.iterator_age_ms == 0 for m in source.metrics.values()))
        assert set(source.metrics) == set(shard_ids(moto_endpoint, stream))
        for metrics in source.metrics.values():
            assert metrics.millis_behind_latest == 0
            assert metrics.records > 0 and metrics.get_records_calls >= 2


async def test_get_records_calls_are_paced_per_shard(moto_endpoint: str, tmp_path: Path) -> None:
    stream = create_stream(moto_endpoint, 1)
    rate = 4.0
    sources = [  # two mappings on one shard share its call budget
        kinesis_source(
            moto_endpoint, stream, tmp_path / str(i), idle_interval=0.01, max_calls_per_second=rate
        )
        for i in range(2)
    ]
    app = App()
    for i, source in enumerate(sources):
        app.consume(source, name=f"noop{i}")(lambda batch, context: None)
    async with app.running():
        await wait_until(lambda: all(s.metrics for s in sources))
        calls = sum(m.get_records_calls for s in sources for m in s.metrics.values())
        await asyncio.sleep(1.5)
        calls = sum(m.get_records_calls for s in sources for m in s.metrics.values()) - calls
    assert 1 <= calls <= 1.5 * rate + 1


def test_throttles_back_off_exponentially_expired_iterators_resume_and_refusals_are_fatal(
    tmp_path: Path,
) -> None:
    source = KinesisSource("arn:aws:kinesis:us-east-1:123456789012:stream/s", state_dir=tmp_path)
    reader = _ShardReader(source, Lease("shardId-0", checkpoint="41"), ShardMetrics())
    loop = asyncio.new_event_loop()
    try:
        delays = []
        for _ in range(6):
            throttled = ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException"}}, "GetRecords"
            )
            assert reader._failed(throttled, loop)
            delays.append(reader._not_before - loop.time())
        assert delays[-1] > delays[0] * 4 and reader.metrics.throttles == 6
        assert reader._start() == ("AFTER_SEQUENCE_NUMBER", "41")  # the lease's checkpoint
        reader.iterator, reader.position = "it", 57
        assert reader._failed(
            ClientError({"Error": {"Code": "ExpiredIteratorException"}}, "x"), loop
        )
        assert reader.iterator is None and reader._start() == ("AFTER_SEQUENCE_NUMBER", "57")
        assert not reader._failed(
            ClientError({"Error": {"Code": "ValidationException"}}, "x"), loop
        )
        with pytest.raises(SourceError, match="AWS refused access to shard shardId-0"):
            reader._failed(ClientError({"Error": {"Code": "AccessDeniedException"}}, "x"), loop)
    finally:
        loop.close()


async def test_shards_are_listed_page_by_page(moto_endpoint: str, tmp_path: Path) -> None:
    stream = create_stream(moto_endpoint, 3)
    source = kinesis_source(moto_endpoint, stream, tmp_path)
    source.list_page_size = 1
    app = App()
    app.consume(source, name="noop")(lambda batch, context: None)
    async with app.running():
        await wait_until(lambda: source.owned == set(shard_ids(moto_endpoint, stream)))


async def test_a_stream_that_does_not_exist_is_a_clear_source_error(
    moto_endpoint: str, tmp_path: Path
) -> None:
    app = App()
    source = kinesis_source(moto_endpoint, "no-such-stream", tmp_path)
    app.consume(source, name="noop")(lambda batch, context: None)
    async with app.running():  # the mapping is disabled; the app goes on
        await wait_until(lambda: app.mappings[0].error is not None)
    error = app.mappings[0].error
    assert isinstance(error, SourceError)
    assert "Kinesis stream 'no-such-stream' does not exist" in str(error)
    assert "us-east-1" in str(error) and moto_endpoint in str(error)


async def test_a_stream_deleted_while_running_disables_its_mapping(
    moto_endpoint: str, tmp_path: Path
) -> None:
    stream = create_stream(moto_endpoint, 1)
    put(moto_endpoint, stream, ["one"])
    app = App()
    seen: list[bytes] = []

    @app.consume(kinesis_source(moto_endpoint, stream, tmp_path))
    async def handler(batch: Batch, context: Context) -> None:
        seen.extend(record.value for record in batch)

    mapping = app.mappings[0]
    async with asyncio.timeout(30), app.running():
        await wait_until(lambda: seen == [b"one"])
        kinesis(moto_endpoint).delete_stream(StreamName=stream)
        await wait_until(lambda: mapping.error is not None, timeout=25)
        assert app.health.live().ok  # the worker lives on; the mapping is disabled
    assert isinstance(mapping.error, SourceError)
    assert "no longer exists" in str(mapping.error)
    assert mapping.state_reason is not None and mapping.state_reason.startswith("PROBLEM: ")
