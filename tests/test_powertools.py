"""Handlers written for Lambda with aws-lambda-powertools run unchanged on streamfn.

With ``event_format="lambda"`` a handler gets the exact event Lambda would give it, so
Powertools' event source data classes (``SQSEvent``, ``KinesisStreamEvent``,
``DynamoDBStreamEvent``, ``KafkaEvent``) read it, and the partial batch response its
``BatchProcessor`` builds drives streamfn's partial batch handling as it drives Lambda's: a
failed SQS message alone comes back; a stream rewinds to the failed record and delivers it and
every later record again. Each test runs a real connector against a real local server.

The one rule: Powertools' ``async_process_partial_response`` calls ``asyncio.run``, so it works
in a ``def`` handler (Lambda calls handlers synchronously; streamfn runs a ``def`` handler in a
worker thread, where no event loop is running) and fails in an ``async def`` handler, which
runs on streamfn's loop. There, hand it to a thread.
"""

from __future__ import annotations

import asyncio
import gc
import json
import threading
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch import (
    AsyncBatchProcessor,
    BatchProcessor,
    EventType,
    async_process_partial_response,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes import (
    DynamoDBStreamEvent,
    KafkaEvent,
    KinesisStreamEvent,
    SQSEvent,
)
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.data_classes.kafka_event import KafkaEventRecord
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import (
    KinesisStreamRecord,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from streamfn import App
from streamfn.connectors.sqs import SQSSource
from streamfn.testing import wait_until
from streamfn.testing.servers import TansuBroker

from .kafka.conftest import Kafka
from .kinesis import create_stream, ddb_source, kinesis_source, put, unique
from .sqs import create_queue, send, sqs_client, wait_empty

pytestmark = pytest.mark.usefixtures("aws_env")

REPORT = ["ReportBatchItemFailures"]
RUN_IN_LOOP = "asyncio.run() cannot be called from a running event loop"


class Poison(Exception):
    """What a record handler raises for the record the test fails."""


@pytest.fixture
async def sqs(moto_endpoint: str) -> AsyncIterator[Any]:
    async with sqs_client(moto_endpoint) as client:
        yield client


@pytest.fixture
def kafka(kafka_broker: TansuBroker) -> Kafka:
    return Kafka(kafka_broker.address)


# --- SQS -------------------------------------------------------------------------------------


async def test_sqs_batch_processor_reports_the_failed_message_which_alone_comes_back(
    sqs: Any, moto_endpoint: str
) -> None:
    url = await create_queue(sqs)
    await send(sqs, url, [json.dumps({"n": n}) for n in range(4)])
    source = SQSSource(url, endpoint_url=moto_endpoint, retry_delay=0)
    batches: list[list[tuple[int, str]]] = []
    responses: list[dict[str, Any]] = []
    failed_ids: list[str] = []
    app = App()

    def record_handler(record: SQSRecord) -> None:
        if record.json_body["n"] == 2 and record.attributes.approximate_receive_count == "1":
            failed_ids.append(record.message_id)
            raise Poison(record.body)

    @app.consume(
        source,
        batch_size=4,
        maximum_batching_window=1,
        event_format="lambda",
        function_response_types=REPORT,
    )
    def handler(event: dict[str, Any], context: LambdaContext) -> Any:
        parsed = SQSEvent(event)
        batches.append(
            [(r.json_body["n"], r.attributes.approximate_receive_count) for r in parsed.records]
        )
        # One processor per invocation: streamfn runs a function's invocations concurrently
        # (one per poller, shard or partition), and a processor holds one batch's state.
        processor = BatchProcessor(event_type=EventType.SQS)
        response = process_partial_response(event, record_handler, processor, context)
        responses.append(dict(response))
        return response

    async with app.running():
        await wait_until(lambda: source.deleted == 4)
    await wait_empty(sqs, url)
    assert batches == [[(0, "1"), (1, "1"), (2, "1"), (3, "1")], [(2, "2")]]
    assert responses == [
        {"batchItemFailures": [{"itemIdentifier": failed_ids[0]}]},
        {"batchItemFailures": []},
    ]


async def test_a_batch_whose_every_record_fails_is_a_function_error_and_comes_back_whole(
    sqs: Any, moto_endpoint: str
) -> None:
    """Powertools raises ``BatchProcessingError`` when every record failed (its default
    ``raise_on_entire_batch_failure``): a function error, so Lambda and streamfn return the
    whole batch to the queue."""
    url = await create_queue(sqs)
    await send(sqs, url, ["a", "b"])
    source = SQSSource(url, endpoint_url=moto_endpoint, retry_delay=0)
    receives: list[list[str]] = []
    app = App()

    def record_handler(record: SQSRecord) -> None:
        if record.attributes.approximate_receive_count == "1":
            raise Poison(record.body)

    @app.consume(
        source,
        batch_size=2,
        maximum_batching_window=1,
        event_format="lambda",
        function_response_types=REPORT,
    )
    def handler(event: dict[str, Any], context: LambdaContext) -> Any:
        receives.append(
            sorted(r.attributes.approximate_receive_count for r in SQSEvent(event).records)
        )
        processor = BatchProcessor(event_type=EventType.SQS)
        return process_partial_response(event, record_handler, processor, context)

    async with app.running():
        await wait_until(lambda: source.deleted == 2)
    assert receives == [["1", "1"], ["2", "2"]]
    assert source.released == 2


async def test_async_process_partial_response_works_in_a_def_handler(
    sqs: Any, moto_endpoint: str
) -> None:
    """streamfn runs a ``def`` handler in a worker thread, where Powertools' ``asyncio.run``
    starts a loop of its own for the async record handlers, as on Lambda."""
    url = await create_queue(sqs)
    await send(sqs, url, ["ok", "poison", "ok"])
    source = SQSSource(url, endpoint_url=moto_endpoint, retry_delay=0)
    handled: Counter[str] = Counter()
    threads: set[str] = set()
    app = App()

    async def record_handler(record: SQSRecord) -> None:
        await asyncio.sleep(0)
        handled[record.body] += 1
        if record.body == "poison" and record.attributes.approximate_receive_count == "1":
            raise Poison(record.body)

    @app.consume(
        source,
        batch_size=3,
        maximum_batching_window=1,
        event_format="lambda",
        function_response_types=REPORT,
    )
    def handler(event: dict[str, Any], context: LambdaContext) -> Any:
        threads.add(threading.current_thread().name)
        processor = AsyncBatchProcessor(event_type=EventType.SQS)
        return async_process_partial_response(event, record_handler, processor, context)

    async with app.running():
        await wait_until(lambda: source.deleted == 3)
    assert handled == {"ok": 2, "poison": 2}
    assert threading.main_thread().name not in threads


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
async def test_async_process_partial_response_fails_in_an_async_def_handler_unless_threaded(
    sqs: Any, moto_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    """In an ``async def`` handler streamfn's loop is running, so Powertools' ``asyncio.run``
    raises: a function error, after which the whole batch comes back, and one warning says
    how to fix the handler. Handed to a thread with ``asyncio.to_thread`` the same call
    works."""
    url = await create_queue(sqs)
    await send(sqs, url, ["ok", "poison"])
    source = SQSSource(url, endpoint_url=moto_endpoint, retry_delay=0)
    errors: list[str] = []
    batches: list[list[str]] = []
    handled: Counter[str] = Counter()
    app = App()

    async def record_handler(record: SQSRecord) -> None:
        handled[record.body] += 1
        if record.body == "poison" and record.attributes.approximate_receive_count == "2":
            raise Poison(record.body)

    @app.consume(
        source,
        batch_size=2,
        maximum_batching_window=1,
        event_format="lambda",
        function_response_types=REPORT,
    )
    async def handler(event: dict[str, Any], context: LambdaContext) -> Any:
        batches.append(sorted(r.body for r in SQSEvent(event).records))
        processor = AsyncBatchProcessor(event_type=EventType.SQS)
        if len(batches) == 1:
            try:
                return async_process_partial_response(event, record_handler, processor, context)
            except RuntimeError as exc:
                errors.append(str(exc))
                raise
        return await asyncio.to_thread(
            async_process_partial_response, event, record_handler, processor, context
        )

    async with app.running():
        await wait_until(lambda: source.deleted == 2)
    gc.collect()  # Powertools' unawaited coroutine is reported here, inside this test
    assert errors == [RUN_IN_LOOP]
    [hint] = [r for r in caplog.records if r.name == "streamfn.dispatch"]
    assert hint.levelname == "WARNING"
    assert "write the handler as def" in hint.getMessage()
    assert "asyncio.to_thread" in hint.getMessage()
    assert batches == [["ok", "poison"], ["ok", "poison"], ["poison"]]
    assert handled == {"ok": 1, "poison": 2}


# --- Kinesis and DynamoDB Streams ------------------------------------------------------------


async def test_kinesis_batch_processor_failure_rewinds_the_shard_to_that_record(
    moto_endpoint: str, tmp_path: Path
) -> None:
    stream = create_stream(moto_endpoint, 1)
    put(moto_endpoint, stream, [json.dumps({"n": n}) for n in range(6)], key=lambda i: "pk")
    calls: list[list[int]] = []
    sequence_numbers: dict[int, str] = {}
    responses: list[Any] = []
    app = App()

    def record_handler(record: KinesisStreamRecord) -> None:
        if record.kinesis.data_as_json()["n"] == 3 and len(calls) == 1:
            raise Poison(record.kinesis.sequence_number)

    @app.consume(
        kinesis_source(moto_endpoint, stream, tmp_path),
        batch_size=6,
        maximum_batching_window=1,
        event_format="lambda",
        function_response_types=REPORT,
        retry_base_delay=0.001,
        retry_max_delay=0.01,
    )
    def handler(event: dict[str, Any], context: LambdaContext) -> Any:
        parsed = KinesisStreamEvent(event)
        assert {r.kinesis.partition_key for r in parsed.records} == {"pk"}
        calls.append([r.kinesis.data_as_json()["n"] for r in parsed.records])
        for r in parsed.records:
            sequence_numbers[r.kinesis.data_as_json()["n"]] = r.kinesis.sequence_number
        processor = BatchProcessor(event_type=EventType.KinesisDataStreams)
        response = process_partial_response(event, record_handler, processor, context)
        responses.append(response)
        return response

    async with app.running():
        await wait_until(lambda: len(calls) == 2)
    assert calls == [[0, 1, 2, 3, 4, 5], [3, 4, 5]]
    assert responses == [
        {"batchItemFailures": [{"itemIdentifier": sequence_numbers[3]}]},
        {"batchItemFailures": []},
    ]


def _create_table(endpoint: str) -> tuple[str, str]:
    """A table keyed by ``Id`` (N) with a NEW_AND_OLD_IMAGES stream; (name, stream ARN)."""
    name = unique("table")
    table = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1").create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "Id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "Id", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    return name, table["TableDescription"]["LatestStreamArn"]


async def test_dynamodb_batch_processor_failure_rewinds_the_shard_to_that_change(
    moto_endpoint: str, tmp_path: Path
) -> None:
    table, _ = _create_table(moto_endpoint)
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1")
    for n in range(3):
        client.put_item(TableName=table, Item={"Id": {"N": str(n)}, "Note": {"S": f"item {n}"}})
    client.delete_item(TableName=table, Key={"Id": {"N": "0"}})
    calls: list[list[tuple[str, int, str | None]]] = []
    app = App()

    def record_handler(record: DynamoDBRecord) -> None:
        change = record.dynamodb
        assert change is not None and change.keys is not None
        if change.keys["Id"] == 1 and len(calls) == 1:
            raise Poison(change.sequence_number)

    @app.consume(
        ddb_source(moto_endpoint, table, tmp_path),
        batch_size=4,
        maximum_batching_window=1,
        event_format="lambda",
        function_response_types=REPORT,
        retry_base_delay=0.001,
        retry_max_delay=0.01,
    )
    def handler(event: dict[str, Any], context: LambdaContext) -> Any:
        seen = []
        for record in DynamoDBStreamEvent(event).records:
            change = record.dynamodb
            assert change is not None and change.keys is not None
            image = change.new_image or change.old_image
            seen.append((record.raw_event["eventName"], int(change.keys["Id"]), image.get("Note")))
        calls.append(seen)
        processor = BatchProcessor(event_type=EventType.DynamoDBStreams)
        return process_partial_response(event, record_handler, processor, context)

    async with app.running():
        await wait_until(lambda: len(calls) == 2)
    inserts = [("INSERT", n, f"item {n}") for n in range(3)]
    assert calls == [[*inserts, ("REMOVE", 0, "item 0")], [*inserts[1:], ("REMOVE", 0, "item 0")]]


# --- Kafka -----------------------------------------------------------------------------------


async def test_kafka_batch_processor_failure_rewinds_the_partition_to_that_offset(
    kafka: Kafka,
) -> None:
    """Powertools' ``EventType.Kafka`` reports ``{"partition": "<topic>-<n>", "offset": n}``,
    Lambda's Kafka item identifier; streamfn rewinds to it and commits past the batch after."""
    topic = await kafka.create_topic()
    await kafka.produce(
        topic, [json.dumps({"n": n}).encode() for n in range(5)], key=lambda i: b"k%d" % i
    )
    source = kafka.source(topic)
    calls: list[list[tuple[int, str, int]]] = []
    responses: list[Any] = []
    app = App()

    def record_handler(record: KafkaEventRecord) -> None:
        if record.offset == 2 and len(calls) == 1:
            raise Poison(record.offset)

    @app.consume(
        source,
        batch_size=5,
        maximum_batching_window=1,
        event_format="lambda",
        function_response_types=REPORT,
        retry_base_delay=0.01,
        retry_max_delay=0.05,
    )
    def handler(event: dict[str, Any], context: LambdaContext) -> Any:
        parsed = KafkaEvent(event)
        calls.append(
            [
                (r.offset, bytes(r.decoded_key or b"").decode(), r.json_value["n"])
                for r in parsed.records
            ]
        )
        processor = BatchProcessor(event_type=EventType.Kafka)
        response = process_partial_response(event, record_handler, processor, context)
        responses.append(response)
        return response

    async with app.running():
        await wait_until(lambda: len(calls) == 2, timeout=30)
    assert await kafka.committed(source.group_id, topic) == [5]
    assert calls == [
        [(n, f"k{n}", n) for n in range(5)],
        [(n, f"k{n}", n) for n in range(2, 5)],
    ]
    assert responses[0] == {
        "batchItemFailures": [{"itemIdentifier": {"partition": f"{topic}-0", "offset": 2}}]
    }
