"""Lambda code as Powertools' documentation writes it: a module-level ``BatchProcessor`` per
handler module and ``process_partial_response`` in a plain ``def`` handler. The processor
holds the running batch's state, so it is correct only when a process runs one invocation at a
time, as Lambda's execution environments do (and streamfn's by default for this code).

Records carry ``{"id": ..., "fail": bool}``. A ``fail`` record fails the first time any
environment sees it (a marker file in ``PT_MARKERS`` remembers, whichever process retries it).
Each invocation appends one JSON line to ``PT_OUT``: the source, the ids of its batch and the
ids its response reports failed."""

from __future__ import annotations

import json
import os
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)

sqs_processor = BatchProcessor(event_type=EventType.SQS)
kinesis_processor = BatchProcessor(event_type=EventType.KinesisDataStreams)
kafka_processor = BatchProcessor(event_type=EventType.Kafka)


class Poison(Exception):
    pass


def _body(record: Any) -> dict[str, Any]:
    if hasattr(record, "json_body"):
        body: dict[str, Any] = record.json_body
    elif hasattr(record, "kinesis"):
        body = record.kinesis.data_as_json()
    else:
        body = record.json_value
    return body


def record_handler(record: Any) -> None:
    body = _body(record)
    if body["fail"]:
        try:
            os.close(
                os.open(os.path.join(os.environ["PT_MARKERS"], body["id"]), os.O_CREAT | os.O_EXCL)
            )
        except FileExistsError:
            return
        raise Poison(body["id"])


def _handle(source: str, event: dict[str, Any], processor: BatchProcessor, context: Any) -> Any:
    response = process_partial_response(event, record_handler, processor, context)
    ids, by_identifier = [], {}
    for raw in _raw_records(event):
        body = json.loads(_raw_data(source, raw))
        ids.append(body["id"])
        by_identifier[json.dumps(_identifier(source, raw), sort_keys=True)] = body["id"]
    failed = [
        by_identifier.get(json.dumps(f["itemIdentifier"], sort_keys=True), "?")
        for f in response["batchItemFailures"]
    ]
    with open(os.environ["PT_OUT"], "a") as out:
        out.write(json.dumps({"source": source, "ids": ids, "failed": failed}) + "\n")
    return response


def _raw_records(event: dict[str, Any]) -> list[dict[str, Any]]:
    if "Records" in event:
        records: list[dict[str, Any]] = event["Records"]
        return records
    return [r for part in event["records"].values() for r in part]


def _raw_data(source: str, raw: dict[str, Any]) -> bytes:
    import base64

    if source == "sqs":
        return str(raw["body"]).encode()
    if source == "kinesis":
        return base64.b64decode(raw["kinesis"]["data"])
    return base64.b64decode(raw["value"])


def _identifier(source: str, raw: dict[str, Any]) -> Any:
    if source == "sqs":
        return raw["messageId"]
    if source == "kinesis":
        return raw["kinesis"]["sequenceNumber"]
    return {"partition": f"{raw['topic']}-{raw['partition']}", "offset": raw["offset"]}


def sqs_handler(event: dict[str, Any], context: Any) -> Any:
    return _handle("sqs", event, sqs_processor, context)


def kinesis_handler(event: dict[str, Any], context: Any) -> Any:
    return _handle("kinesis", event, kinesis_processor, context)


def kafka_handler(event: dict[str, Any], context: Any) -> Any:
    return _handle("kafka", event, kafka_processor, context)
