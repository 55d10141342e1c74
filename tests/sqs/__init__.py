"""SQS connector tests against moto's server (the session's ``moto_endpoint``); shared helpers.

moto's SQS slows down as a queue grows, so every test uses its own small queue."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

from aiobotocore.session import AioSession

from streamfn import App
from streamfn.testing import wait_until


@contextlib.asynccontextmanager
async def sqs_client(endpoint: str) -> AsyncIterator[Any]:
    """A plain aiobotocore client on the test endpoint, for setting up and checking queues."""
    async with AioSession().create_client("sqs", endpoint_url=endpoint) as client:
        yield client


async def create_queue(
    client: Any, *, fifo: bool = False, visibility: int = 30, **attributes: str
) -> str:
    """A new uniquely named queue; returns its URL."""
    name = f"t-{uuid.uuid4().hex[:16]}" + (".fifo" if fifo else "")
    attrs = {"VisibilityTimeout": str(visibility), **attributes}
    if fifo:
        attrs["FifoQueue"] = "true"
    url: str = (await client.create_queue(QueueName=name, Attributes=attrs))["QueueUrl"]
    return url


async def send(
    client: Any,
    url: str,
    bodies: Iterable[str],
    *,
    group: Callable[[str], str] | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> None:
    """Send ``bodies`` in order, ten a call; ``group`` names each body's MessageGroupId."""
    items = list(bodies)
    for start in range(0, len(items), 10):
        entries = []
        for i, body in enumerate(items[start : start + 10], start):
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": body}
            if group is not None:
                entry["MessageGroupId"] = group(body)
                entry["MessageDeduplicationId"] = uuid.uuid4().hex
            if attributes:
                entry["MessageAttributes"] = dict(attributes)
            entries.append(entry)
        response = await client.send_message_batch(QueueUrl=url, Entries=entries)
        assert not response.get("Failed"), response["Failed"]


async def counts(client: Any, url: str) -> tuple[int, int]:
    """(visible, in flight) messages of the queue."""
    attrs = (
        await client.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
            ],
        )
    )["Attributes"]
    return (
        int(attrs["ApproximateNumberOfMessages"]),
        int(attrs["ApproximateNumberOfMessagesNotVisible"]),
    )


async def wait_empty(client: Any, url: str, timeout: float = 15.0) -> None:
    """Wait until the queue holds no message, visible or in flight."""
    async with asyncio.timeout(timeout):
        while await counts(client, url) != (0, 0):
            await asyncio.sleep(0.05)


async def failure_of(app: App, timeout: float = 10.0) -> BaseException:
    """The error that disabled ``app``'s first mapping, or the first that stopped the app,
    unwrapped from its task groups."""
    mapping = app.mappings[0]
    try:
        async with asyncio.timeout(timeout), app.running():
            await wait_until(lambda: mapping.error is not None, timeout)
    except BaseExceptionGroup as group:
        error: BaseException = group
        while isinstance(error, BaseExceptionGroup):
            error = error.exceptions[0]
        return error
    assert mapping.error is not None
    return mapping.error
