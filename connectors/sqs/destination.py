"""An SQS queue as a destination (on-success, on-failure, or a source's dead letter), on
aiobotocore: each record one JSON message, FIFO-aware, sent once SQS accepted it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from streamfn import tracing
from streamfn.errors import ConfigError, DestinationError

from ._client import (
    Connection,
    QueueRef,
    call_by_ten,
    fatal_error,
    queue_missing,
    resolve_url,
    summary,
)

_GROUP_ID = re.compile(rb"[!-~]{1,128}")  # SQS: 1-128 ASCII letters, digits, punctuation


def _group_id(key: bytes | None) -> str:
    """A MessageGroupId for a FIFO destination: the record's key when it is a valid one."""
    if key is None:
        return "streamfn"
    if _GROUP_ID.fullmatch(key):
        return key.decode("ascii")
    return hashlib.sha256(key).hexdigest()


class SQSDestination:
    """Sends each record as a JSON message to an SQS queue (SendMessage), returning only once
    SQS accepted it; :meth:`send_many` sends several with SendMessageBatch.

    For a FIFO queue the record's key (the source record's key) is the MessageGroupId, so
    records of one key stay in order, and the body's SHA-256 is the deduplication id, so a
    retried send within SQS's five-minute window is not stored twice. The client starts on the
    first send; whoever created the destination calls :meth:`close` (or uses ``async with``).
    """

    def __init__(
        self,
        queue: str,
        *,
        include_payload: bool = False,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        profile_name: str | None = None,
    ) -> None:
        self.ref = QueueRef.parse(queue)
        self.queue = queue
        self.include_payload = include_payload
        self._connection = Connection(
            region_name or self.ref.region,
            endpoint_url,
            aws_access_key_id,
            aws_secret_access_key,
            aws_session_token,
            profile_name,
        )
        self._lock = asyncio.Lock()
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self._url = ""

    def describe(self) -> str:
        return f"sqs://{self.ref.name}"

    async def _opened(self) -> Any:
        async with self._lock:
            if self._client is not None:
                return self._client
            async with contextlib.AsyncExitStack() as stack:
                try:
                    client = await stack.enter_async_context(self._connection.client(10))
                    self._url = await resolve_url(client, self.ref)
                except Exception as exc:
                    error = fatal_error(exc, self.queue, self._connection.endpoint)
                    raise DestinationError(str(error or exc)) from exc
                self._stack = stack.pop_all()
            self._client = client
            return client

    async def check(self) -> None:
        """Make sure the queue exists before the app runs, on a client of its own that is closed
        again: GetQueueUrl for a name or an ARN (what the first send calls anyway),
        GetQueueAttributes for a URL. A missing queue is a ConfigError; a refused call or an
        unreachable endpoint a DestinationError."""
        try:
            async with self._connection.client(1) as client:
                url = await resolve_url(client, self.ref)
                if self.ref.url is not None:
                    await client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        except ConfigError:
            raise
        except Exception as exc:
            endpoint = self._connection.endpoint
            if queue_missing(exc):
                raise ConfigError(
                    f"SQS queue {self.queue!r} does not exist (at {endpoint})"
                ) from exc
            error = fatal_error(exc, self.queue, endpoint)
            raise DestinationError(f"cannot check {self.describe()}: {error or exc}") from exc

    async def close(self) -> None:
        """Close the client; a later send opens a new one."""
        async with self._lock:
            stack, self._stack, self._client = self._stack, None, None
            if stack is not None:
                await stack.aclose()

    async def __aenter__(self) -> SQSDestination:
        await self._opened()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _message(self, record: Mapping[str, Any], key: bytes | None) -> dict[str, Any]:
        body = orjson.dumps(record).decode()
        message: dict[str, Any] = {"MessageBody": body}
        if self.ref.fifo:
            message["MessageGroupId"] = _group_id(key)
            message["MessageDeduplicationId"] = hashlib.sha256(body.encode()).hexdigest()
        # With tracing on, the message carries the trace context it was sent in.
        carrier = tracing.outgoing()
        if carrier:
            message["MessageAttributes"] = {
                name: {"DataType": "String", "StringValue": value}
                for name, value in carrier.items()
            }
        return message

    async def send(self, record: Mapping[str, Any], *, key: bytes | None = None) -> None:
        client = self._client or await self._opened()
        try:
            await client.send_message(QueueUrl=self._url, **self._message(record, key))
        except Exception as exc:
            raise DestinationError(f"{self.describe()} refused the record: {exc}") from exc

    async def send_many(
        self, records: Sequence[Mapping[str, Any]], *, key: bytes | None = None
    ) -> None:
        """Send ``records`` ten a call; raises DestinationError when any could not be sent
        (the others are stored: a retry may duplicate them, as with any at-least-once send)."""
        client = self._client or await self._opened()
        messages = [self._message(record, key) for record in records]
        failures = await call_by_ten(client.send_message_batch, self._url, messages, _entry)
        if failures:
            raise DestinationError(
                f"{self.describe()} refused {len(failures)} of {len(records)} records: "
                f"{summary(failures)}"
            )


def _entry(entry_id: str, message: dict[str, Any]) -> dict[str, Any]:
    return {"Id": entry_id, **message}
