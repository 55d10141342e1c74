"""DynamoDBStreamSource against moto: the DynamoDB Streams event, DDBStreamBatchInfo, filters
on the change record, and the errors for a table without a stream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest

from streamfn import App, Batch, ConfigError, Context, Record, SourceError
from streamfn.testing import MemoryDestination, wait_until

from . import FAST_RETRY, ddb_source, leaf, unique

pytestmark = pytest.mark.usefixtures("aws_env")


def dynamodb(endpoint: str) -> Any:
    return boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")


def create_table(endpoint: str, *, stream: bool = True) -> tuple[str, str]:
    """A table keyed by ``Id`` (N), with a NEW_AND_OLD_IMAGES stream; (name, stream ARN)."""
    name = unique("table")
    spec = {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"} if stream else {}
    table = dynamodb(endpoint).create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "Id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "Id", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
        **({"StreamSpecification": spec} if stream else {}),
    )
    return name, table["TableDescription"].get("LatestStreamArn", "")


async def run_until(app: App, condition: Any) -> None:
    async with app.running():
        await wait_until(condition)


async def test_lambda_event_is_the_exact_dynamodb_streams_event(
    moto_endpoint: str, tmp_path: Path
) -> None:
    table, stream_arn = create_table(moto_endpoint)
    client = dynamodb(moto_endpoint)
    client.put_item(TableName=table, Item={"Id": {"N": "101"}, "Message": {"S": "New item!"}})
    client.put_item(TableName=table, Item={"Id": {"N": "101"}, "Message": {"S": "Changed"}})
    client.delete_item(TableName=table, Key={"Id": {"N": "101"}})
    records: list[dict[str, Any]] = []
    app = App()

    @app.consume(ddb_source(moto_endpoint, table, tmp_path), event_format="lambda")
    async def handler(event: dict[str, Any], context: Any) -> None:
        records.extend(event["Records"])

    await run_until(app, lambda: len(records) == 3)
    assert [r["eventName"] for r in records] == ["INSERT", "MODIFY", "REMOVE"]
    insert, modify, remove = records
    change = insert["dynamodb"]
    assert isinstance(change.pop("ApproximateCreationDateTime"), int)
    assert int(change.pop("SequenceNumber")) < int(modify["dynamodb"]["SequenceNumber"])
    assert change.pop("SizeBytes") > 0
    assert change == {
        "Keys": {"Id": {"N": "101"}},
        "NewImage": {"Id": {"N": "101"}, "Message": {"S": "New item!"}},
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    assert modify["dynamodb"]["OldImage"]["Message"] == {"S": "New item!"}
    assert "NewImage" not in remove["dynamodb"]
    assert {k: v for k, v in insert.items() if k not in ("eventID", "dynamodb")} == {
        "eventName": "INSERT",
        "eventVersion": "1.0",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "eventSourceARN": stream_arn,
    }
    assert insert["eventID"]


async def test_poison_change_goes_to_the_failure_destination_with_ddb_stream_batch_info(
    moto_endpoint: str, tmp_path: Path
) -> None:
    table, stream_arn = create_table(moto_endpoint)
    client = dynamodb(moto_endpoint)
    for i in range(6):
        client.put_item(TableName=table, Item={"Id": {"N": str(i)}, "Poison": {"BOOL": i == 3}})
    destination = MemoryDestination()
    handled: list[int] = []
    app = App()

    @app.consume(
        ddb_source(moto_endpoint, stream_arn, tmp_path),
        batch_size=6,
        maximum_batching_window=1,
        bisect_batch_on_function_error=True,
        maximum_retry_attempts=0,
        on_failure=destination,
        **FAST_RETRY,
    )
    async def handler(batch: Batch, context: Context) -> None:
        changes = [r.json() for r in batch]
        if any(c["NewImage"]["Poison"]["BOOL"] for c in changes):
            raise ValueError("poison")
        handled.extend(int(c["Keys"]["Id"]["N"]) for c in changes)

    async with app.running():
        [failure] = await destination.wait_for(1)
        await wait_until(lambda: len(handled) == 5)
    info = failure["DDBStreamBatchInfo"]
    assert info["batchSize"] == 1 and info["streamArn"] == stream_arn
    assert info["startSequenceNumber"] == info["endSequenceNumber"]
    assert info["shardId"].startswith("shardId-")
    assert sorted(handled) == [0, 1, 2, 4, 5]


async def test_event_size_bounds_each_change_of_the_lambda_event(
    moto_endpoint: str, tmp_path: Path
) -> None:
    """The payload cap of Lambda-format events counts ``event_size``: at least what a change
    adds to its event, which is no base64 but the change's DynamoDB JSON."""
    table, _ = create_table(moto_endpoint)
    client = dynamodb(moto_endpoint)
    client.put_item(TableName=table, Item={"Id": {"N": "1"}, "Note": {"S": 'say "hi"\n' * 50}})
    client.put_item(TableName=table, Item={"Id": {"N": "1"}, "Blob": {"B": bytes(range(256))}})
    client.delete_item(TableName=table, Key={"Id": {"N": "1"}})
    source = ddb_source(moto_endpoint, table, tmp_path)
    records: list[Record] = []
    app = App()

    @app.consume(source, batch_size=3, maximum_batching_window=1)
    async def handler(batch: Batch, context: Context) -> None:
        records.extend(batch)

    await run_until(app, lambda: len(records) == 3)
    shard = records[0].partition
    envelope = len(orjson.dumps(source.lambda_event(shard, [])))
    for record in records:
        alone = len(orjson.dumps(source.lambda_event(shard, [record]))) - envelope
        assert alone < source.event_size(record) <= alone + 128
    whole = len(orjson.dumps(source.lambda_event(shard, records)))
    assert whole <= envelope + sum(source.event_size(r) for r in records)


async def test_filter_criteria_see_the_change_record(moto_endpoint: str, tmp_path: Path) -> None:
    table, _ = create_table(moto_endpoint)
    client = dynamodb(moto_endpoint)
    client.put_item(TableName=table, Item={"Id": {"N": "1"}})
    client.put_item(TableName=table, Item={"Id": {"N": "1"}, "V": {"S": "x"}})
    client.put_item(TableName=table, Item={"Id": {"N": "2"}})
    names: list[str] = []
    source = ddb_source(moto_endpoint, table, tmp_path)
    app = App()

    @app.consume(
        source,
        event_format="lambda",
        filter_criteria={"Filters": [{"Pattern": '{"eventName": ["INSERT"]}'}]},
    )
    async def handler(event: dict[str, Any], context: Any) -> None:
        names.extend(r["dynamodb"]["Keys"]["Id"]["N"] for r in event["Records"])

    await run_until(app, lambda: names == ["1", "2"])


async def test_a_table_without_a_stream_is_a_clear_source_error(
    moto_endpoint: str, tmp_path: Path
) -> None:
    table, _ = create_table(moto_endpoint, stream=False)
    for name, message in [
        (table, f"DynamoDB table {table!r} has no stream enabled"),
        ("missing-table", "DynamoDB table 'missing-table' does not exist"),
    ]:
        app = App()
        app.consume(ddb_source(moto_endpoint, name, tmp_path), name="noop")(lambda b, c: None)
        mapping = app.mappings[0]
        async with app.running():  # the mapping is disabled; the app goes on
            await wait_until(lambda: mapping.error is not None)  # noqa: B023
        error = mapping.error
        assert isinstance(error, SourceError) and message in str(error)


async def test_at_timestamp_is_refused_for_dynamodb_streams(
    moto_endpoint: str, tmp_path: Path
) -> None:
    table, _ = create_table(moto_endpoint)
    app = App()
    app.consume(
        ddb_source(moto_endpoint, table, tmp_path),
        name="noop",
        starting_position="AT_TIMESTAMP",
        starting_position_timestamp=1.0,
    )(lambda b, c: None)
    with pytest.raises(ExceptionGroup) as caught:
        async with app.running():
            await wait_until(lambda: False)
    error = leaf(caught.value)
    assert isinstance(error, ConfigError) and "TRIM_HORIZON or LATEST" in str(error)
