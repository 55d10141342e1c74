"""Accepts orders from SQS and publishes an event per order to Kinesis."""

import json
import os

import boto3

kinesis = boto3.client("kinesis")


def accept(event, context):
    failures = []
    for record in event["Records"]:
        try:
            order = json.loads(record["body"])
            kinesis.put_record(
                StreamName=os.environ["EVENTS_STREAM"],
                Data=json.dumps({"type": "accepted", "order": order}).encode(),
                PartitionKey=str(order["id"]),
            )
            print(json.dumps({"accepted": order["id"]}))
        except (ValueError, KeyError):
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}
