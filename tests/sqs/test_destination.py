"""SQSDestination: records arrive as JSON messages, one at a time or ten a call; FIFO keeps
the key as MessageGroupId and deduplicates a retried send; failures are DestinationErrors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from streamfn.connectors.sqs import SQSDestination
from streamfn.destinations import Destination
from streamfn.errors import DestinationError

from . import counts, create_queue, sqs_client


@pytest.fixture
async def sqs(moto_endpoint: str, aws_env: None) -> AsyncIterator[Any]:
    async with sqs_client(moto_endpoint) as client:
        yield client


async def receive_all(sqs: Any, url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while True:
        response = await sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
        )
        if not response.get("Messages"):
            return messages
        messages.extend(response["Messages"])


async def test_send_stores_the_record_as_json(sqs: Any, moto_endpoint: str) -> None:
    url = await create_queue(sqs)
    destination = SQSDestination(url, endpoint_url=moto_endpoint)
    assert isinstance(destination, Destination)
    assert destination.describe() == f"sqs://{url.rsplit('/', 1)[-1]}"
    try:
        await destination.send({"requestContext": {"condition": "RetryAttemptsExhausted"}})
    finally:
        await destination.close()
    (message,) = await receive_all(sqs, url)
    assert orjson.loads(message["Body"]) == {
        "requestContext": {"condition": "RetryAttemptsExhausted"}
    }


async def test_send_many_sends_ten_a_call_and_reopens_after_close(
    sqs: Any, moto_endpoint: str
) -> None:
    url = await create_queue(sqs)
    name = url.rsplit("/", 1)[-1]
    async with SQSDestination(name, endpoint_url=moto_endpoint) as destination:
        await destination.send_many([{"n": i} for i in range(23)])
    await destination.send({"n": 23})  # a closed destination opens a new client
    await destination.close()
    bodies = [orjson.loads(m["Body"])["n"] for m in await receive_all(sqs, url)]
    assert sorted(bodies) == list(range(24))


async def test_fifo_groups_by_key_and_deduplicates_a_retried_send(
    sqs: Any, moto_endpoint: str
) -> None:
    url = await create_queue(sqs, fifo=True)
    async with SQSDestination(url, endpoint_url=moto_endpoint) as destination:
        await destination.send({"n": 1}, key=b"order-7")
        await destination.send({"n": 1}, key=b"order-7")  # a retry after a lost response
        await destination.send({"n": 2}, key=b"\x00binary key")
    messages = await receive_all(sqs, url)
    groups = [m["Attributes"]["MessageGroupId"] for m in messages]
    assert [orjson.loads(m["Body"])["n"] for m in messages] == [1, 2]
    assert groups[0] == "order-7"
    assert len(groups[1]) == 64  # a key SQS would refuse becomes its SHA-256


async def test_a_missing_queue_is_a_destination_error(moto_endpoint: str, aws_env: None) -> None:
    destination = SQSDestination("no-such-queue", endpoint_url=moto_endpoint)
    with pytest.raises(DestinationError, match="SQS queue 'no-such-queue' does not exist"):
        await destination.send({"n": 1})


async def test_a_refused_record_is_a_destination_error(sqs: Any, moto_endpoint: str) -> None:
    url = await create_queue(sqs, MaximumMessageSize="1024")
    async with SQSDestination(url, endpoint_url=moto_endpoint) as destination:
        with pytest.raises(DestinationError, match="refused the record"):
            await destination.send({"blob": "x" * 2048})
        with pytest.raises(DestinationError, match=r"refused [12] of 2 records"):
            await destination.send_many([{"n": 1}, {"blob": "x" * 2048}])
        await destination.send({"n": 2})
    assert (await counts(sqs, url))[0] >= 1
