"""SQSSource on a standard queue: delete on success, partial failures, retry delay, the Lambda
event, filtering, malformed bodies, scaling, and clear errors for a missing queue, refused
credentials and a visibility timeout shorter than the function timeout."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest

from streamfn import App, Batch, BatchResult, ConfigError, Context, Record, SourceError
from streamfn.connectors.sqs import SQSDestination, SQSSource
from streamfn.connectors.sqs._client import call_by_ten as _call_by_ten
from streamfn.testing import wait_until
from streamfn.testing.servers import free_port, wait_for_port

from . import create_queue, failure_of, send, sqs_client, wait_empty

REPORT = ["ReportBatchItemFailures"]


@pytest.fixture
async def sqs(moto_endpoint: str, aws_env: None) -> AsyncIterator[Any]:
    async with sqs_client(moto_endpoint) as client:
        yield client


@pytest.fixture(scope="module")
def iam_endpoint() -> Iterator[str]:
    """A second moto server that checks IAM credentials, so made-up keys are refused."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


async def test_successful_batches_are_deleted_and_sized_with_metadata(
    sqs: Any, moto_endpoint: str
) -> None:
    url = await create_queue(sqs)
    await send(sqs, url, [f"m{i}" for i in range(25)])
    source = SQSSource(url, endpoint_url=moto_endpoint)
    seen: list[str] = []
    sizes: list[int] = []
    app = App()

    @app.consume(source)
    async def handler(batch: Batch, context: Context) -> None:
        assert len(batch) <= 10
        seen.extend(r.text for r in batch)
        sizes.extend(r.size - len(r.value) for r in batch)

    async with app.running():
        await wait_until(lambda: source.deleted == 25)
    await wait_empty(sqs, url)
    assert sorted(seen) == sorted(f"m{i}" for i in range(25))
    assert min(sizes) > 300  # message id, receipt handle, attributes, ARN: Lambda counts them


async def test_the_payload_cap_counts_message_metadata(sqs: Any, moto_endpoint: str) -> None:
    url = await create_queue(sqs)
    await send(sqs, url, [f"m{i}" for i in range(10)])  # 2-byte bodies
    source = SQSSource(url, endpoint_url=moto_endpoint)
    batches: list[int] = []
    app = App()

    @app.consume(source, payload_limit=2000)
    async def handler(batch: Batch, context: Context) -> None:
        batches.append(len(batch))

    async with app.running():
        await wait_until(lambda: source.deleted == 10)
    assert sum(batches) == 10
    assert max(batches) <= 3  # each message's metadata takes hundreds of bytes of the cap


async def test_a_source_runs_again_in_a_restarted_app(sqs: Any, moto_endpoint: str) -> None:
    url = await create_queue(sqs)
    source = SQSSource(url, endpoint_url=moto_endpoint)

    async def run_once(body: str) -> None:
        await send(sqs, url, [body])
        expected = source.deleted + 1
        app = App()
        app.consume(source, name="f")(lambda batch, context: None)
        async with app.running():
            await wait_until(lambda: source.deleted == expected)

    await run_once("first")
    await run_once("second")
    await wait_empty(sqs, url)


async def test_lambda_event_is_the_sqs_event(sqs: Any, moto_endpoint: str) -> None:
    url = await create_queue(sqs)
    arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))["Attributes"][
        "QueueArn"
    ]
    attributes = {
        "text": {"DataType": "String", "StringValue": "hello"},
        "count": {"DataType": "Number", "StringValue": "42"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xff"},
    }
    await send(sqs, url, ['{"order": 1}'], attributes=attributes)
    events: list[dict[str, Any]] = []
    app = App()

    @app.consume(SQSSource(url, endpoint_url=moto_endpoint), event_format="lambda")
    async def handler(event: dict[str, Any], context: Context) -> None:
        events.append(event)

    async with app.running():
        await wait_until(lambda: bool(events))
    (record,) = events[0]["Records"]
    assert set(record) == {
        "messageId",
        "receiptHandle",
        "body",
        "attributes",
        "messageAttributes",
        "md5OfBody",
        "md5OfMessageAttributes",
        "eventSource",
        "eventSourceARN",
        "awsRegion",
    }
    assert record["body"] == '{"order": 1}'
    assert record["md5OfBody"] == hashlib.md5(b'{"order": 1}').hexdigest()
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == arn
    assert record["awsRegion"] == "us-east-1"
    assert set(record["attributes"]) == {
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
    }
    assert all(isinstance(v, str) for v in record["attributes"].values())
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert record["messageAttributes"] == {
        "text": {
            "stringValue": "hello",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        },
        "count": {
            "stringValue": "42",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Number",
        },
        "blob": {
            "binaryValue": base64.b64encode(b"\x00\xff").decode(),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Binary",
        },
    }
    orjson.dumps(events[0])  # JSON-serialisable as Lambda hands it over


async def test_partial_batch_response_releases_only_listed_messages(
    sqs: Any, moto_endpoint: str
) -> None:
    url = await create_queue(sqs)
    await send(sqs, url, ["0", "1", "2", "3"])
    source = SQSSource(url, endpoint_url=moto_endpoint, retry_delay=0)
    batches: list[list[str]] = []
    app = App()

    @app.consume(source, batch_size=4, event_format="lambda", function_response_types=REPORT)
    async def handler(event: dict[str, Any], context: Context) -> dict[str, Any]:
        records = event["Records"]
        batches.append([r["body"] for r in records])
        failed = (
            [r["messageId"] for r in records if r["body"] in ("1", "3")]
            if len(batches) == 1
            else []
        )
        return {"batchItemFailures": [{"itemIdentifier": i} for i in failed]}

    async with app.running():
        await wait_until(lambda: source.deleted == 4)
    assert batches == [["0", "1", "2", "3"], ["1", "3"]]
    await wait_empty(sqs, url)


@pytest.mark.parametrize("invalid", ["a bare messageId", "an unknown messageId"])
async def test_an_invalid_item_identifier_beside_a_valid_one_returns_the_whole_batch(
    sqs: Any, moto_endpoint: str, invalid: str
) -> None:
    """Lambda's complete failure: one entry it cannot honour (not ``{"itemIdentifier": id}``,
    or an id not in the batch) returns every message, not only the valid one listed."""
    url = await create_queue(sqs)
    await send(sqs, url, ["0", "1", "2", "3"])
    source = SQSSource(url, endpoint_url=moto_endpoint, retry_delay=0)
    batches: list[list[str]] = []
    app = App()

    @app.consume(source, batch_size=4, event_format="lambda", function_response_types=REPORT)
    async def handler(event: dict[str, Any], context: Context) -> dict[str, Any]:
        records = event["Records"]
        batches.append([r["body"] for r in records])
        if len(batches) > 1:
            return {"batchItemFailures": []}
        wrong: Any = (
            records[-1]["messageId"]
            if invalid == "a bare messageId"
            else {"itemIdentifier": "00000000-0000-0000-0000-000000000000"}
        )
        return {"batchItemFailures": [{"itemIdentifier": records[0]["messageId"]}, wrong]}

    async with app.running():
        await wait_until(lambda: source.deleted == 4)
    first, *again = batches
    assert len(first) > 1
    assert sorted(b for batch in again for b in batch) == sorted(first)
    await wait_empty(sqs, url)


async def test_event_size_bounds_each_message_of_the_lambda_event(
    sqs: Any, moto_endpoint: str
) -> None:
    """The payload cap of Lambda-format events counts ``event_size``: at least what a message
    adds to its event (the body escaped as a JSON string, the metadata, message attributes)."""
    url = await create_queue(sqs)
    await sqs.send_message(
        QueueUrl=url,
        MessageBody='{"quoted": "\\"yes\\"", "lines": "a\\nb"}\n\t',
        MessageAttributes={
            "trace": {"DataType": "String", "StringValue": "abc"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01" * 50},
        },
    )
    await send(sqs, url, ["plain"])
    source = SQSSource(url, endpoint_url=moto_endpoint)
    records: list[Record] = []
    app = App()

    @app.consume(source, batch_size=2, maximum_batching_window=1)
    async def handler(batch: Batch, context: Context) -> None:
        records.extend(batch)

    async with app.running():
        await wait_until(lambda: source.deleted == 2)
        envelope = len(orjson.dumps(source.lambda_event("p", [])))
        for record in records:
            alone = len(orjson.dumps(source.lambda_event("p", [record]))) - envelope
            assert alone < source.event_size(record) <= alone + 128
        whole = len(orjson.dumps(source.lambda_event("p", records)))
        assert whole <= envelope + sum(source.event_size(r) for r in records)


async def test_raised_error_returns_the_whole_batch(sqs: Any, moto_endpoint: str) -> None:
    url = await create_queue(sqs)
    await send(sqs, url, ["a", "b"])
    source = SQSSource(url, endpoint_url=moto_endpoint, retry_delay=0)
    receives: list[list[str]] = []
    app = App()

    @app.consume(source, batch_size=2, event_format="lambda")
    async def handler(event: dict[str, Any], context: Context) -> None:
        receives.append([r["attributes"]["ApproximateReceiveCount"] for r in event["Records"]])
        if len(receives) == 1:
            raise RuntimeError("boom")

    async with app.running():
        await wait_until(lambda: source.deleted == 2)
    assert receives == [["1", "1"], ["2", "2"]]


@pytest.mark.slow
async def test_retry_delay_backs_off_with_the_receive_count(sqs: Any, moto_endpoint: str) -> None:
    url = await create_queue(sqs, visibility=30)
    await send(sqs, url, ["x"])
    source = SQSSource(url, endpoint_url=moto_endpoint, retry_delay=1)
    times: list[float] = []
    app = App()

    @app.consume(source)
    async def handler(batch: Batch, context: Context) -> None:
        times.append(time.monotonic())
        if len(times) < 3:
            raise RuntimeError("not yet")

    async with app.running():
        await wait_until(lambda: source.deleted == 1)
    first, second = times[1] - times[0], times[2] - times[1]
    assert 0.9 <= first < 4  # 1 s after the first receive, not the 30 s visibility timeout
    assert 1.9 <= second < 5  # then 2 s


async def test_messages_matching_no_filter_are_deleted(sqs: Any, moto_endpoint: str) -> None:
    url = await create_queue(sqs)
    await send(sqs, url, ['{"type": "order", "id": 1}', "plain text", '{"type": "ping"}'])
    await send(
        sqs,
        url,
        ['{"type": "other"}'],
        attributes={"kind": {"DataType": "String", "StringValue": "urgent"}},
    )
    source = SQSSource(url, endpoint_url=moto_endpoint)
    seen: list[str] = []
    app = App()

    @app.consume(
        source,
        filter_criteria={
            "Filters": [
                {"Pattern": '{"body": {"type": ["order"]}}'},
                {"Pattern": '{"messageAttributes": {"kind": {"stringValue": ["urgent"]}}}'},
            ]
        },
    )
    async def handler(batch: Batch, context: Context) -> None:
        seen.extend(r.text for r in batch)

    async with app.running():
        await wait_until(lambda: source.deleted == 4)
    assert sorted(seen) == ['{"type": "order", "id": 1}', '{"type": "other"}']
    await wait_empty(sqs, url)


MALFORMED = ['{"unterminated": ', "not json at all", "\u00fc\u20ac\U0001f600 <&>", " "]


async def test_malformed_bodies_reach_a_lambda_handler_verbatim(
    sqs: Any, moto_endpoint: str
) -> None:
    url = await create_queue(sqs)
    await send(sqs, url, MALFORMED)
    source = SQSSource(url, endpoint_url=moto_endpoint)
    bodies: list[str] = []
    app = App()

    @app.consume(source, event_format="lambda")
    def handler(event: dict[str, Any], context: Any) -> None:  # a plain Lambda handler
        bodies.extend(r["body"] for r in event["Records"])

    async with app.running():
        await wait_until(lambda: source.deleted == len(MALFORMED))
    assert sorted(bodies) == sorted(MALFORMED)


async def test_malformed_bodies_reported_by_a_native_handler_go_to_the_dead_letter(
    sqs: Any, moto_endpoint: str
) -> None:
    url = await create_queue(sqs)
    dlq = await create_queue(sqs)
    await send(sqs, url, ['{"ok": 1}', *MALFORMED, '{"ok": 2}'])
    async with SQSDestination(dlq, endpoint_url=moto_endpoint) as dead_letter:
        source = SQSSource(url, endpoint_url=moto_endpoint, dead_letter=dead_letter, max_receives=1)
        decoded: list[Any] = []
        app = App()

        @app.consume(source, function_response_types=REPORT)
        async def handler(batch: Batch, context: Context) -> BatchResult:
            bad = []
            for rec in batch:
                try:
                    decoded.append(rec.json())
                except ValueError:
                    bad.append(rec)
            return BatchResult(bad)

        async with app.running():
            await wait_until(lambda: source.deleted == len(MALFORMED) + 2)
    assert source.dead_lettered == len(MALFORMED)
    assert sorted(d["ok"] for d in decoded) == [1, 2]
    await wait_empty(sqs, url)
    received = await sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10)
    records = [orjson.loads(m["Body"]) for m in received["Messages"]]
    assert sorted(r["body"] for r in records) == sorted(MALFORMED)
    assert all(r["eventSource"] == "aws:sqs" for r in records)


@pytest.mark.slow
async def test_pollers_scale_up_with_a_backlog_and_down_when_idle(
    sqs: Any, moto_endpoint: str
) -> None:
    url = await create_queue(sqs)
    await send(sqs, url, [str(i) for i in range(80)])
    source = SQSSource(url, endpoint_url=moto_endpoint, max_pollers=3)
    pollers: set[str] = set()
    app = App()

    @app.consume(source)
    async def handler(batch: Batch, context: Context) -> None:
        pollers.add(batch.partition)
        await asyncio.sleep(0.3)

    async with app.running():
        await wait_until(lambda: source.active_pollers == 3, timeout=10)
        await wait_until(lambda: source.deleted == 80, timeout=15)
        await wait_until(lambda: source.active_pollers == 1, timeout=10)
    assert {"poller-0", "poller-1"} <= pollers  # a late poller may find the backlog taken


async def test_missing_queue_is_a_clear_source_error(moto_endpoint: str, aws_env: None) -> None:
    app = App()
    app.consume(SQSSource("no-such-queue", endpoint_url=moto_endpoint), name="f")(
        lambda event, context: None
    )
    error = await failure_of(app)
    assert isinstance(error, SourceError)
    assert "SQS queue 'no-such-queue' does not exist" in str(error)


async def test_refused_credentials_are_a_clear_source_error(
    iam_endpoint: str, aws_env: None
) -> None:
    app = App()
    source = SQSSource(
        "orders",
        endpoint_url=iam_endpoint,
        aws_access_key_id="AKIAUNKNOWN",
        aws_secret_access_key="wrong",
    )
    app.consume(source, name="f")(lambda event, context: None)
    error = await failure_of(app)
    assert isinstance(error, SourceError)
    assert "AWS refused the credentials used for SQS queue 'orders'" in str(error)


async def test_missing_credentials_are_a_clear_source_error(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    app = App()
    source = SQSSource("orders", endpoint_url=moto_endpoint, region_name="us-east-1")
    app.consume(source, name="f")(lambda event, context: None)
    error = await failure_of(app)
    assert isinstance(error, SourceError)
    assert "no usable AWS credentials for SQS queue 'orders'" in str(error)


async def test_visibility_timeout_shorter_than_function_timeout_is_refused(
    sqs: Any, moto_endpoint: str
) -> None:
    url = await create_queue(sqs, visibility=5)
    app = App()
    source = SQSSource(url, endpoint_url=moto_endpoint, function_timeout=10)
    app.consume(source, name="f", timeout=10)(lambda event, context: None)
    error = await failure_of(app)
    assert isinstance(error, ConfigError)
    assert "visibility timeout of 5 s, shorter than the function timeout of 10 s" in str(error)


@pytest.mark.parametrize(
    ("queue", "settings", "message"),
    [
        ("q.fifo", {"batch_size": 11, "maximum_batching_window": 1}, "1-10 for FIFO queue"),
        ("q.fifo", {"maximum_batching_window": 1}, "takes no batching window"),
        ("q", {"batch_size": 100}, "needs maximum_batching_window >= 1 second"),
    ],
)
async def test_lambda_batching_rules_are_enforced(
    queue: str, settings: dict[str, Any], message: str
) -> None:
    app = App()
    app.consume(SQSSource(queue, endpoint_url="http://127.0.0.1:9"), name="f", **settings)(
        lambda event, context: None
    )
    error = await failure_of(app)
    assert isinstance(error, ConfigError)
    assert message in str(error)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"queue": "bad name"}, "queue='bad name' is invalid"),
        ({"queue": "q", "max_receives": 3}, "dead_letter and max_receives go together"),
        ({"queue": "q", "min_pollers": 3, "max_pollers": 2}, "must be <= max_pollers=2"),
        ({"queue": "q", "retry_delay": -1}, "retry_delay=-1 is invalid"),
    ],
)
def test_invalid_settings_are_refused_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SQSSource(**kwargs)


async def test_batch_calls_retry_entries_that_failed_on_the_server_side() -> None:
    """SQS reports per-entry failures inside a successful call: those on its side are retried,
    those on the sender's side (an expired receipt handle) are final and reported."""
    calls: list[list[str]] = []

    async def delete_message_batch(QueueUrl: str, Entries: list[dict[str, Any]]) -> Any:
        calls.append([e["Item"] for e in Entries])
        if len(calls) > 1:
            return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}
        return {
            "Successful": [{"Id": "0"}],
            "Failed": [
                {"Id": "1", "SenderFault": False, "Code": "InternalError"},
                {"Id": "2", "SenderFault": True, "Code": "ReceiptHandleIsInvalid"},
            ],
        }

    failures = await _call_by_ten(
        delete_message_batch, "url", [f"m{i}" for i in range(12)], lambda i, m: {"Id": i, "Item": m}
    )
    assert failures == [("m2", "ReceiptHandleIsInvalid")]
    assert calls[0] == [f"m{i}" for i in range(10)]
    assert sorted(calls[1:]) == [["m1"], ["m10", "m11"]]


async def test_a_queue_deleted_while_running_disables_only_its_mapping(
    sqs: Any, moto_endpoint: str
) -> None:
    doomed_url, other_url = await create_queue(sqs), await create_queue(sqs)
    app = App()
    seen: list[bytes] = []
    app.consume(SQSSource(doomed_url, endpoint_url=moto_endpoint), name="doomed")(
        lambda event, context: None
    )

    @app.consume(SQSSource(other_url, endpoint_url=moto_endpoint), name="other")
    async def other(batch: Batch, context: Context) -> None:
        seen.extend(record.value for record in batch)

    doomed = app.mappings[0]
    async with asyncio.timeout(30), app.running():
        await wait_until(lambda: doomed.stats.assignments > 0)
        await sqs.delete_queue(QueueUrl=doomed_url)
        await wait_until(lambda: doomed.error is not None, timeout=25)
        await send(sqs, other_url, ["still here"])
        await wait_until(lambda: seen == [b"still here"])
    assert isinstance(doomed.error, SourceError)
    assert "does not exist" in str(doomed.error)
    assert doomed.state == "Disabled"
