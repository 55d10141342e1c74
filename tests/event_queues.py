"""What the SQS and Kafka harnesses of the event-queue contract share: reading a dead letter
back from the broker, and what Lambda's attributes (SQS) or headers (Kafka) must say of it."""

from __future__ import annotations

import orjson

from streamfn.asyncq import DeadLetter


def letter_from_json(body: bytes) -> DeadLetter:
    """The dead letter a broker-backed queue wrote as ``body`` (its JSON wire format)."""
    fields = orjson.loads(body)
    return DeadLetter(
        fields["requestId"],
        fields["function"],
        fields["qualifier"],
        fields["payload"].encode(),
        fields["enqueuedAt"],
        fields["attempts"],
        fields["failedAt"],
        fields["condition"],
        fields["record"],
    )


def lambda_attributes(letter: DeadLetter) -> dict[str, str]:
    """Lambda's dead-letter attributes: the request id, the status code when the function ran,
    and the first 1 KB of the error message (the condition when there is none)."""
    attributes = {"RequestID": letter.request_id}
    status = letter.record.get("responseContext", {}).get("statusCode")
    if status is not None:
        attributes["ErrorCode"] = str(status)
    message = letter.record.get("responsePayload", {}).get("errorMessage")
    attributes["ErrorMessage"] = (message or letter.condition)[:1024]
    return attributes
