"""``streamfn run TEMPLATE --create-resources`` on the moto server: the template's queues,
stream and table are created where AWS_ENDPOINT_URL points, the redrive policy's dead-letter
queue first, with the properties that shape what the functions see; a second run leaves them
as they are; a template then runs with no other set-up; a refusal is one line naming the
resource."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from streamfn.cli import build_parser
from streamfn.errors import ConfigError
from streamfn.sam import LoadOptions, command, plan_template, prepare
from streamfn.testing import wait_until

from .support import DEADLINE, RECORDER, records, write_app

TEMPLATE = """\
    Transform: AWS::Serverless-2016-10-31
    Parameters:
      Suffix: {Type: String}
      Records: {Type: String}
    Resources:
      Orders:  # before its dead-letter queue: creation must reorder them
        Type: AWS::SQS::Queue
        Properties:
          QueueName: !Sub "orders-${Suffix}"
          VisibilityTimeout: 5
          RedrivePolicy:
            deadLetterTargetArn: !GetAtt OrdersDead.Arn
            maxReceiveCount: 3
      OrdersDead:
        Type: AWS::SQS::Queue
        Properties:
          QueueName: !Sub "orders-dead-${Suffix}"
          MessageRetentionPeriod: 1209600
      Events:
        Type: AWS::Kinesis::Stream
        Properties:
          Name: !Sub "events-${Suffix}"
          ShardCount: 2
      Items:
        Type: AWS::DynamoDB::Table
        Properties:
          TableName: !Sub "items-${Suffix}"
          AttributeDefinitions: [{AttributeName: pk, AttributeType: S}]
          KeySchema: [{AttributeName: pk, KeyType: HASH}]
          BillingMode: PAY_PER_REQUEST
          StreamSpecification: {StreamViewType: NEW_AND_OLD_IMAGES}
          TimeToLiveSpecification: {AttributeName: expires, Enabled: true}
      Accept:
        Type: AWS::Serverless::Function
        Properties:
          Runtime: python3.12
          CodeUri: src/
          Handler: accept.handle
          Timeout: 3
          Environment: {Variables: {RECORDS: !Ref Records}}
          Events:
            Queue:
              Type: SQS
              Properties: {Queue: !GetAtt Orders.Arn, BatchSize: 1}
"""
CODE = {
    "src/recorder.py": RECORDER,
    "src/accept.py": """\
        from recorder import record

        def handle(event, context):
            for r in event["Records"]:
                record(body=r["body"], source=r["eventSource"])
    """,
}
ALL = ["OrdersDead", "Orders", "Events", "Items"]


def _suffix(tmp_path: Path) -> str:
    return tmp_path.name[-20:].replace("_", "-").lower()


async def test_missing_resources_are_created_once_dead_letter_queue_first(
    tmp_path: Path, aws_endpoint: str
) -> None:
    suffix = _suffix(tmp_path)
    path = write_app(tmp_path, TEMPLATE, CODE)
    plan = plan_template(path, LoadOptions(parameter_overrides={"Suffix": suffix, "Records": "-"}))

    assert await prepare.create_resources(plan) == ALL
    assert await prepare.create_resources(plan) == []  # a second run leaves them alone

    sqs = boto3.client("sqs", endpoint_url=aws_endpoint)
    url = sqs.get_queue_url(QueueName=f"orders-{suffix}")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["VisibilityTimeout"] == "5"
    assert json.loads(attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": f"arn:aws:sqs:us-east-1:123456789012:orders-dead-{suffix}",
        "maxReceiveCount": 3,
    }
    stream = boto3.client("kinesis", endpoint_url=aws_endpoint).describe_stream_summary(
        StreamName=f"events-{suffix}"
    )["StreamDescriptionSummary"]
    assert (stream["StreamStatus"], stream["OpenShardCount"]) == ("ACTIVE", 2)
    table = boto3.client("dynamodb", endpoint_url=aws_endpoint).describe_table(
        TableName=f"items-{suffix}"
    )["Table"]
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert table["StreamSpecification"] == {
        "StreamEnabled": True,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }


async def test_creation_is_bounded_by_its_deadline(tmp_path: Path, aws_endpoint: str) -> None:
    path = write_app(tmp_path, TEMPLATE, CODE)
    overrides = {"Suffix": _suffix(tmp_path), "Records": "-"}
    plan = plan_template(path, LoadOptions(parameter_overrides=overrides))
    with pytest.raises(ConfigError, match=r"Resources\.OrdersDead: .* within 0 s$"):
        await prepare.create_resources(plan, timeout=0)


def test_run_with_create_resources_needs_no_other_set_up(
    tmp_path: Path, aws_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The CLI's own path: the option parsed, resources created by ``command.build`` before
    the handlers load (and logged), then a message sent to the new queue reaches the
    handler."""
    caplog.set_level(logging.INFO, "streamfn.sam")
    suffix, out = _suffix(tmp_path), tmp_path / "records.jsonl"
    path = write_app(tmp_path, TEMPLATE, CODE)
    args = build_parser().parse_args(
        ["run", str(path), "--create-resources", "--parameter-overrides",
         f"Suffix={suffix}", f"Records={out}"]
    )  # fmt: skip
    built = command.build(args, tmp_path / "state")
    (loaded,) = [r for r in caplog.records if r.getMessage() == "template loaded"]
    assert loaded.resourcesCreated == ALL
    sqs = boto3.client("sqs", endpoint_url=aws_endpoint)
    url = sqs.get_queue_url(QueueName=f"orders-{suffix}")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="order 1")

    async def run() -> None:
        async with built.app.running(*built.servers):
            await wait_until(lambda: records(out), timeout=DEADLINE)

    asyncio.run(run())
    assert records(out) == [{"body": "order 1", "source": "aws:sqs"}]


def test_a_refused_resource_is_one_line_naming_it(tmp_path: Path, aws_endpoint: str) -> None:
    suffix = _suffix(tmp_path)
    template = TEMPLATE.replace(
        "!GetAtt OrdersDead.Arn", f"arn:aws:sqs:us-east-1:123456789012:x{suffix}"
    )
    path = write_app(tmp_path, template, CODE)
    done = subprocess.run(
        [sys.executable, "-m", "streamfn.cli", "run", str(path), "--no-http",
         "--create-resources", "--log-level", "warning", "--state-dir", str(tmp_path / "state"),
         "--parameter-overrides", f"Suffix={suffix}", "Records=-"],
        capture_output=True, text=True, timeout=60, env=dict(os.environ), check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(
        f"streamfn: error: {path}: Resources.Orders: cannot create AWS::SQS::Queue "
        f"'orders-{suffix}' at {aws_endpoint}: AWS.SimpleQueueService.NonExistentQueue: "
    ), done.stderr
