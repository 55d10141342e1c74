"""SQS to Lambda from a SAM template: the template's queue, created on moto, feeds the
function with the template's batch size, and a partial batch failure sends back only the
failed message."""

from __future__ import annotations

import json
from pathlib import Path

import boto3

from streamfn.testing import wait_until

from .support import DEADLINE, RECORDER, build, records, write_app

TEMPLATE = """\
    AWSTemplateFormatVersion: "2010-09-09"
    Transform: AWS::Serverless-2016-10-31
    Parameters:
      Suffix: {Type: String}
      Records: {Type: String}
    Globals:
      Function:
        Runtime: python3.12
        CodeUri: src/
        Timeout: 2
        Environment: {Variables: {RECORDS: !Ref Records}}
    Resources:
      Orders:
        Type: AWS::SQS::Queue
        Properties:
          QueueName: !Sub "orders-${Suffix}"
          VisibilityTimeout: 2
      OrderFunction:
        Type: AWS::Serverless::Function
        Properties:
          Handler: orders.handle
          Environment:
            Variables:
              ORDERS_QUEUE: !GetAtt Orders.QueueName
          Events:
            Queue:
              Type: SQS
              Properties:
                Queue: !GetAtt Orders.Arn
                BatchSize: 2
                FunctionResponseTypes: [ReportBatchItemFailures]
"""
CODE = {
    "src/recorder.py": RECORDER,
    "src/orders.py": """\
        import json
        import os

        from recorder import record

        def handle(event, context):
            ids = [json.loads(r["body"])["id"] for r in event["Records"]]
            seen = os.path.exists(os.environ["RECORDS"] + ".failed")
            record(ids=ids, queue=os.environ["ORDERS_QUEUE"], function=context.function_name)
            failures = []
            for r in event["Records"]:
                if json.loads(r["body"])["id"] == 3 and not seen:
                    open(os.environ["RECORDS"] + ".failed", "w").close()
                    failures.append({"itemIdentifier": r["messageId"]})
            return {"batchItemFailures": failures}
    """,
}


async def test_sqs_messages_reach_the_handler_with_the_templates_batch_size(
    tmp_path: Path, aws_endpoint: str
) -> None:
    path = write_app(tmp_path, TEMPLATE, CODE)
    suffix = tmp_path.name[-20:].replace("_", "-")
    out = tmp_path / "records.jsonl"
    built = build(path, create=True, parameter_overrides={"Suffix": suffix, "Records": str(out)})
    (mapping,) = built.app.mappings
    assert mapping.config.batch_size == 2
    assert mapping.config.report_batch_item_failures
    sqs = boto3.client("sqs", endpoint_url=aws_endpoint)
    url = sqs.get_queue_url(QueueName=f"orders-{suffix}")["QueueUrl"]
    for i in range(1, 6):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"id": i}))

    def ids() -> list[int]:
        return sorted(i for item in records(out) for i in item["ids"])

    async with built.app.running(*built.servers):
        await wait_until(lambda: ids() == [1, 2, 3, 3, 4, 5], timeout=DEADLINE)
    seen = records(out)
    assert all(len(item["ids"]) <= 2 for item in seen)
    assert {item["queue"] for item in seen} == {f"orders-{suffix}"}
    assert {item["function"] for item in seen} == {"OrderFunction"}
