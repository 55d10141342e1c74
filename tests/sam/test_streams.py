"""Kinesis and DynamoDB Streams from SAM templates, against moto: bisect isolates the poison
record and its failure record reaches the on-failure SQS queue; a DynamoDB stream's filter
lets only matching records reach the handler."""

from __future__ import annotations

import json
from pathlib import Path

import boto3

from streamfn.testing import wait_until

from .support import DEADLINE, RECORDER, build, records, write_app

KINESIS = """\
    Transform: AWS::Serverless-2016-10-31
    Parameters:
      Suffix: {Type: String}
      Records: {Type: String}
    Resources:
      Clicks:
        Type: AWS::Kinesis::Stream
        Properties: {Name: !Sub "clicks-${Suffix}", ShardCount: 1}
      Failures:
        Type: AWS::SQS::Queue
        Properties: {QueueName: !Sub "click-failures-${Suffix}"}
      ClickFunction:
        Type: AWS::Serverless::Function
        Properties:
          Runtime: python3.12
          CodeUri: src/
          Handler: clicks.handle
          Environment: {Variables: {RECORDS: !Ref Records}}
          Events:
            Stream:
              Type: Kinesis
              Properties:
                Stream: !GetAtt Clicks.Arn
                StartingPosition: TRIM_HORIZON
                BatchSize: 8
                MaximumBatchingWindowInSeconds: 1
                BisectBatchOnFunctionError: true
                MaximumRetryAttempts: 0
                DestinationConfig:
                  OnFailure: {Destination: !GetAtt Failures.Arn}
"""
KINESIS_CODE = {
    "src/recorder.py": RECORDER,
    "src/clicks.py": """\
        import base64
        import json

        from recorder import record

        def handle(event, context):
            data = [base64.b64decode(r["kinesis"]["data"]) for r in event["Records"]]
            values = [json.loads(d)["n"] for d in data]
            record(values=values)
            if 5 in values:
                raise ValueError("poison")
    """,
}


async def test_kinesis_bisect_isolates_poison_and_sends_it_to_the_sqs_destination(
    tmp_path: Path, aws_endpoint: str
) -> None:
    path = write_app(tmp_path, KINESIS, KINESIS_CODE)
    suffix = tmp_path.name[-20:].replace("_", "-")
    out = tmp_path / "records.jsonl"
    built = build(path, create=True, parameter_overrides={"Suffix": suffix, "Records": str(out)})
    (mapping,) = built.app.mappings
    assert mapping.config.bisect_batch_on_function_error
    assert mapping.config.maximum_retry_attempts == 0
    assert mapping.config.batch_size == 8
    kinesis = boto3.client("kinesis", endpoint_url=aws_endpoint)
    for n in range(8):
        kinesis.put_record(
            StreamName=f"clicks-{suffix}", Data=json.dumps({"n": n}).encode(), PartitionKey="k"
        )
    sqs = boto3.client("sqs", endpoint_url=aws_endpoint)
    url = sqs.get_queue_url(QueueName=f"click-failures-{suffix}")["QueueUrl"]
    failures: list[dict[str, object]] = []

    def failed() -> bool:
        answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
        failures.extend(json.loads(m["Body"]) for m in answer.get("Messages", []))
        return bool(failures)

    async with built.app.running(*built.servers):
        await wait_until(
            lambda: any(item["values"] == [5] for item in records(out)), timeout=DEADLINE
        )
        await wait_until(failed, timeout=DEADLINE, interval=0.2)
        succeeded = {v for item in records(out) if 5 not in item["values"] for v in item["values"]}
        await wait_until(
            lambda: (
                {v for i in records(out) if 5 not in i["values"] for v in i["values"]}
                == {0, 1, 2, 3, 4, 6, 7}
            ),
            timeout=DEADLINE,
        )
    (failure,) = failures
    info = failure["KinesisBatchInfo"]
    assert isinstance(info, dict) and info["batchSize"] == 1
    assert succeeded <= {0, 1, 2, 3, 4, 6, 7}


DYNAMODB = """\
    Transform: AWS::Serverless-2016-10-31
    Parameters:
      Suffix: {Type: String}
      Records: {Type: String}
    Resources:
      Orders:
        Type: AWS::DynamoDB::Table
        Properties:
          TableName: !Sub "orders-${Suffix}"
          AttributeDefinitions: [{AttributeName: id, AttributeType: S}]
          KeySchema: [{AttributeName: id, KeyType: HASH}]
          BillingMode: PAY_PER_REQUEST
          StreamSpecification: {StreamViewType: NEW_IMAGE}
      Shipper:
        Type: AWS::Serverless::Function
        Properties:
          Runtime: python3.12
          CodeUri: src/
          Handler: ship.handle
          Environment: {Variables: {RECORDS: !Ref Records}}
          Events:
            Table:
              Type: DynamoDB
              Properties:
                Stream: !GetAtt Orders.StreamArn
                StartingPosition: TRIM_HORIZON
                FilterCriteria:
                  Filters:
                    - Pattern: '{"dynamodb": {"NewImage": {"status": {"S": ["PAID"]}}}}'
"""
DYNAMODB_CODE = {
    "src/recorder.py": RECORDER,
    "src/ship.py": """\
        from recorder import record

        def handle(event, context):
            for r in event["Records"]:
                record(id=r["dynamodb"]["NewImage"]["id"]["S"], source=r["eventSource"])
    """,
}


async def test_dynamodb_stream_filter_passes_only_matching_records(
    tmp_path: Path, aws_endpoint: str
) -> None:
    path = write_app(tmp_path, DYNAMODB, DYNAMODB_CODE)
    suffix = tmp_path.name[-20:].replace("_", "-")
    out = tmp_path / "records.jsonl"
    built = build(path, create=True, parameter_overrides={"Suffix": suffix, "Records": str(out)})
    (mapping,) = built.app.mappings
    assert mapping.config.filter_criteria is not None
    table = boto3.resource("dynamodb", endpoint_url=aws_endpoint).Table(f"orders-{suffix}")
    for i, status in enumerate(["NEW", "PAID", "NEW", "PAID", "PAID"]):
        table.put_item(Item={"id": str(i), "status": status})
    async with built.app.running(*built.servers):
        await wait_until(lambda: len(records(out)) >= 3, timeout=DEADLINE)
        table.put_item(Item={"id": "last", "status": "PAID"})
        await wait_until(
            lambda: records(out)[-1:] == [{"id": "last", "source": "aws:dynamodb"}],
            timeout=DEADLINE,
        )
    assert [item["id"] for item in records(out)] == ["1", "3", "4", "last"]
