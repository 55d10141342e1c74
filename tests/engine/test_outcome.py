"""Stream outcome policy: retries with backoff, retry quota, record age, bisect, partial batch
responses, on-failure records and the checkpoint contract."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

from streamfn import App, Batch, BatchResult, Context, Record
from streamfn.backoff import retry_delay
from streamfn.testing import MemoryDestination, MemorySource, wait_until

from .helpers import FAST_RETRY


async def test_failing_batch_is_retried_until_success() -> None:
    source = MemorySource()
    source.extend("p0", [b"a", b"b"])
    calls = 0
    app = App()

    @app.consume(source, **FAST_RETRY)
    async def flaky(batch: Batch, context: Context) -> None:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise RuntimeError("not yet")

    async with app.running():
        await wait_until(lambda: source.committed.get("p0") == 2)
    assert calls == 4


async def test_retrying_partition_blocks_only_itself() -> None:
    source = MemorySource(["bad", "good"])
    source.append("bad", b"poison")
    source.extend("good", [b"x"] * 500)
    good = 0
    app = App()

    @app.consume(source, batch_size=10, **FAST_RETRY)
    async def handler(batch: Batch, context: Context) -> None:
        nonlocal good
        if batch.partition == "bad":
            raise RuntimeError("poison")
        good += len(batch)

    async with app.running():
        await wait_until(lambda: source.committed.get("good") == 500)
        assert "bad" not in source.committed  # still retrying, never passed
    assert good == 500


async def test_retry_attempts_exhausted_sends_failure_record_and_moves_on() -> None:
    source = MemorySource()
    source.extend("p0", [b"poison"])
    dest = MemoryDestination()
    calls = 0
    app = App(region="eu-west-1", account_id="123456789012")

    @app.consume(source, maximum_retry_attempts=2, on_failure=dest, **FAST_RETRY)
    async def handler(batch: Batch, context: Context) -> None:
        nonlocal calls
        calls += 1
        if batch[0].value == b"poison":
            raise RuntimeError("bad record")

    async with app.running():
        [record] = await dest.wait_for(1)
        source.append("p0", b"next")
        await wait_until(lambda: source.committed.get("p0") == 2)
    assert calls == 3 + 1  # first attempt, two retries, then the next record
    assert record["version"] == "1.0"
    assert record["timestamp"].endswith("Z")
    ctx = record["requestContext"]
    assert ctx["condition"] == "RetryAttemptsExhausted"
    assert ctx["approximateInvokeCount"] == 3
    assert ctx["functionArn"] == "arn:aws:lambda:eu-west-1:123456789012:function:handler"
    assert record["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    info = record["MemoryBatchInfo"]
    assert info["batchSize"] == 1
    assert info["startSequenceNumber"] == info["endSequenceNumber"] == "0"
    assert "payload" not in record


async def test_failure_record_carries_payload_when_destination_asks() -> None:
    source = MemorySource()
    source.append("p0", b"poison")
    dest = MemoryDestination(include_payload=True)
    app = App()

    @app.consume(source, maximum_retry_attempts=0, on_failure=dest)
    async def handler(batch: Batch, context: Context) -> None:
        raise RuntimeError("bad")

    async with app.running():
        [record] = await dest.wait_for(1)
    assert '"data":"cG9pc29u"' in record["payload"]


async def test_exhaustion_without_destination_discards_and_moves_on() -> None:
    source = MemorySource()
    source.extend("p0", [b"poison", b"fine"])
    seen: list[bytes] = []
    app = App()

    @app.consume(source, batch_size=1, maximum_retry_attempts=1, **FAST_RETRY)
    async def handler(batch: Batch, context: Context) -> None:
        if batch[0].value == b"poison":
            raise RuntimeError("bad")
        seen.append(batch[0].value)

    async with app.running():
        await wait_until(lambda: source.committed.get("p0") == 2)
    assert seen == [b"fine"]


async def test_records_older_than_maximum_record_age_skip_the_function() -> None:
    source = MemorySource()
    source.append("p0", b"old", timestamp=time.time() - 120)
    source.append("p0", b"new")
    dest = MemoryDestination()
    seen: list[bytes] = []
    app = App()

    @app.consume(source, maximum_record_age=60, on_failure=dest, maximum_batching_window=0)
    async def handler(batch: Batch, context: Context) -> None:
        seen.extend(r.value for r in batch)

    async with app.running():
        [record] = await dest.wait_for(1)
        await wait_until(lambda: source.committed.get("p0") == 2)
    assert seen == [b"new"]
    assert record["requestContext"]["condition"] == "RecordAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 0


@pytest.mark.parametrize("batch_size", [16, 100])
async def test_bisect_isolates_poison_record_in_log2_calls(batch_size: int) -> None:
    source = MemorySource(["p0", "p1"])
    source.extend("p0", [b"ok"] * batch_size)
    source.logs["p0"][batch_size // 3].value = b"poison"
    source.extend("p1", [b"ok"] * 2000)
    dest = MemoryDestination()
    poisoned_calls = 0
    other = 0
    app = App()

    @app.consume(
        source,
        batch_size=batch_size,
        maximum_batching_window=1,
        bisect_batch_on_function_error=True,
        maximum_retry_attempts=0,
        on_failure=dest,
    )
    async def handler(batch: Batch, context: Context) -> None:
        nonlocal poisoned_calls, other
        if batch.partition == "p1":
            other += len(batch)
            return
        if any(r.value == b"poison" for r in batch):
            poisoned_calls += 1
            raise ValueError("poison")

    async with app.running():
        [record] = await dest.wait_for(1)
        await wait_until(lambda: source.committed.get("p0") == batch_size)
        await wait_until(lambda: other == 2000)
    assert poisoned_calls <= math.ceil(math.log2(batch_size)) + 1
    info = record["MemoryBatchInfo"]
    assert info["batchSize"] == 1
    assert info["startSequenceNumber"] == str(batch_size // 3)


async def test_bisect_does_not_consume_retry_quota() -> None:
    source = MemorySource()
    source.extend("p0", [b"ok", b"ok", b"ok", b"poison"])
    dest = MemoryDestination()
    sizes: list[int] = []
    app = App()

    @app.consume(
        source,
        batch_size=4,
        maximum_batching_window=1,
        bisect_batch_on_function_error=True,
        maximum_retry_attempts=1,
        on_failure=dest,
        **FAST_RETRY,
    )
    async def handler(batch: Batch, context: Context) -> None:
        sizes.append(len(batch))
        if any(r.value == b"poison" for r in batch):
            raise ValueError("poison")

    async with app.running():
        [record] = await dest.wait_for(1)
    # 4 -> [2 ok, 2 bad] -> [1 ok, 1 bad] -> the singleton still gets its one retry
    assert sizes == [4, 2, 2, 1, 1, 1]
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"


async def test_partial_batch_response_rewinds_to_lowest_failed_record() -> None:
    source = MemorySource()
    source.extend("p0", [b"%d" % i for i in range(6)])
    calls: list[list[int]] = []
    app = App()

    @app.consume(
        source,
        batch_size=6,
        maximum_batching_window=1,
        function_response_types=["ReportBatchItemFailures"],
        **FAST_RETRY,
    )
    async def handler(batch: Batch, context: Context) -> dict[str, Any]:
        calls.append([r.offset for r in batch])
        if len(calls) == 1:
            return {"batchItemFailures": [{"itemIdentifier": "4"}, {"itemIdentifier": "2"}]}
        return {"batchItemFailures": []}

    async with app.running():
        await wait_until(lambda: source.committed.get("p0") == 6)
    assert calls == [[0, 1, 2, 3, 4, 5], [2, 3, 4, 5]]


async def test_batch_result_with_records_is_a_partial_response() -> None:
    source = MemorySource()
    source.extend("p0", [b"a", b"b", b"c"])
    calls: list[list[int]] = []
    app = App()

    @app.consume(
        source,
        batch_size=3,
        maximum_batching_window=1,
        function_response_types="ReportBatchItemFailures",
        **FAST_RETRY,
    )
    async def handler(batch: Batch, context: Context) -> BatchResult:
        calls.append([r.offset for r in batch])
        return BatchResult([batch[1]] if len(calls) == 1 else [])

    async with app.running():
        await wait_until(lambda: source.committed.get("p0") == 3)
    assert calls == [[0, 1, 2], [1, 2]]


async def test_partial_response_is_ignored_without_report_batch_item_failures() -> None:
    source = MemorySource()
    source.extend("p0", [b"a", b"b"])
    calls = 0
    app = App()

    @app.consume(source, **FAST_RETRY)
    async def handler(batch: Batch, context: Context) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return {"batchItemFailures": [{"itemIdentifier": "0"}]}

    async with app.running():
        await wait_until(lambda: source.committed.get("p0") == 2)
    assert calls == 1


@pytest.mark.parametrize(
    "failures",
    [
        [{"itemIdentifier": ""}],
        [{"itemIdentifier": None}],
        [{"wrongKey": "0"}],
        [{"itemIdentifier": "99"}],  # not in the batch
        # One invalid entry fails the batch whatever the others name: "1" alone would commit 0.
        [{"itemIdentifier": "1"}, {"itemIdentifier": "99"}],
        [{"itemIdentifier": "99"}, {"itemIdentifier": "1"}],
        [{"itemIdentifier": "1"}, {"itemIdentifier": ""}],
        [{"itemIdentifier": "1"}, {"itemIdentifier": None}],
        [{"itemIdentifier": "1"}, {"itemidentifier": "1"}],
        ["1"],  # a bare identifier, not an object with an itemIdentifier
        [1],
        [{"itemIdentifier": "1"}, ["1"]],
        {"itemIdentifier": "1"},  # batchItemFailures that is not a list
    ],
)
async def test_invalid_item_identifier_fails_the_whole_batch(failures: Any) -> None:
    source = MemorySource()
    source.extend("p0", [b"a", b"b"])
    calls: list[list[int]] = []
    app = App()

    @app.consume(
        source,
        batch_size=2,
        maximum_batching_window=1,
        function_response_types=["ReportBatchItemFailures"],
        **FAST_RETRY,
    )
    async def handler(batch: Batch, context: Context) -> dict[str, Any]:
        calls.append([r.offset for r in batch])
        return {"batchItemFailures": failures if len(calls) == 1 else []}

    async with app.running():
        await wait_until(lambda: source.committed.get("p0") == 2)
    assert calls == [[0, 1], [0, 1]]


async def test_a_batch_result_naming_a_record_of_another_batch_fails_the_whole_batch() -> None:
    source = MemorySource()
    source.extend("p0", [b"a", b"b"])
    stranger = Record("p1", 1, b"b")  # offset 1, but not this batch's record
    calls: list[list[int]] = []
    app = App()

    @app.consume(
        source,
        batch_size=2,
        maximum_batching_window=1,
        function_response_types=["ReportBatchItemFailures"],
        **FAST_RETRY,
    )
    async def handler(batch: Batch, context: Context) -> BatchResult:
        calls.append([r.offset for r in batch])
        return BatchResult([stranger] if len(calls) == 1 else [])

    async with app.running():
        await wait_until(lambda: source.committed.get("p0") == 2)
    assert calls == [[0, 1], [0, 1]]


async def test_maximum_record_age_judges_every_record_not_the_first() -> None:
    """Kafka's CreateTime need not grow with the offset: old records may follow fresh ones.
    Each run of expired records is one on-failure record (its batch info names a range); the
    fresh ones are invoked together, in order, and nothing is committed before all settle."""
    source = MemorySource()
    now, old = time.time(), time.time() - 120
    for i, timestamp in enumerate([now, old, now, old, old, now]):
        source.append("p0", b"%d" % i, timestamp=timestamp)
    dest = MemoryDestination(fail_times=2)  # delivery is retried; the checkpoint waits
    seen: list[list[int]] = []
    committed_then: list[int | None] = []
    app = App()

    @app.consume(
        source,
        batch_size=6,
        maximum_batching_window=1,
        maximum_record_age=60,
        on_failure=dest,
        **FAST_RETRY,
    )
    async def handler(batch: Batch, context: Context) -> None:
        committed_then.append(source.committed.get("p0"))
        seen.append([r.offset for r in batch])

    async with app.running():
        records = await dest.wait_for(2)
        await wait_until(lambda: source.committed.get("p0") == 6)
    assert seen == [[0, 2, 5]]
    assert committed_then == [None]
    ranges = [
        (
            r["MemoryBatchInfo"]["startSequenceNumber"],
            r["MemoryBatchInfo"]["endSequenceNumber"],
            r["MemoryBatchInfo"]["batchSize"],
        )
        for r in records
    ]
    assert ranges == [("1", "1", 1), ("3", "4", 2)]
    assert {r["requestContext"]["condition"] for r in records} == {"RecordAgeExceeded"}


async def test_unserialisable_return_value_is_a_marshal_error_and_the_batch_is_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Lambda's runtime serialises every response: a value that is not JSON is a function
    error (Runtime.MarshalError), worded as the Invoke API words it, and the batch is retried."""
    source = MemorySource()
    source.extend("p0", [b"a", b"b"])
    calls = 0
    app = App()

    @app.consume(source, **FAST_RETRY)
    async def handler(batch: Batch, context: Context) -> Any:
        nonlocal calls
        calls += 1
        return {"seen": {r.offset for r in batch}} if calls == 1 else {"seen": 2}

    with caplog.at_level("ERROR", logger="streamfn.failures"):
        async with app.running():
            await wait_until(lambda: source.committed.get("p0") == 2)
    assert calls == 2
    [line] = [r for r in caplog.records if r.name == "streamfn.failures"]
    assert line.__dict__["errorType"] == "Runtime.MarshalError"
    assert line.__dict__["errorMessage"] == (
        "Unable to marshal response: Type is not JSON serializable: set"
    )


async def test_destination_failure_holds_the_checkpoint_until_delivered() -> None:
    source = MemorySource()
    source.extend("p0", [b"poison"])
    down = 1_000_000
    dest = MemoryDestination(fail_times=down)
    app = App()

    @app.consume(source, maximum_retry_attempts=0, on_failure=dest, **FAST_RETRY)
    async def handler(batch: Batch, context: Context) -> None:
        raise RuntimeError("bad")

    async with app.running():
        await wait_until(lambda: dest.fail_times <= down - 3)  # three refused deliveries
        assert "p0" not in source.committed  # not delivered, so not passed
        dest.fail_times = 0  # the destination comes back
        await dest.wait_for(1)
        await wait_until(lambda: source.committed.get("p0") == 1)


def test_retry_delay_grows_exponentially_with_jitter_and_cap() -> None:
    for attempt in range(10):
        step = min(8.0, 0.5 * 2**attempt)
        for _ in range(50):
            delay = retry_delay(attempt, 0.5, 8.0)
            assert step / 2 <= delay <= step


async def test_retries_back_off_instead_of_spinning() -> None:
    source = MemorySource()
    source.append("p0", b"poison")
    calls = 0
    app = App()

    @app.consume(source, retry_base_delay=0.05, retry_max_delay=0.05)
    async def handler(batch: Batch, context: Context) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("bad")

    async with app.running():
        await wait_until(lambda: calls >= 3)
        started = time.monotonic()
        before = calls
        await wait_until(lambda: calls >= before + 2)
        # two retries need at least two half-steps of backoff
        assert time.monotonic() - started >= 0.05 - 0.005
