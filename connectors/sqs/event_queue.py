"""An SQS queue as the event queue of asynchronous invocations, shared by several workers.

Each event is one message in the wire format of :mod:`streamfn.connectors._eventq`. ``put``
returns once SQS stored the message (the durability point before the 202); concurrent puts share
SendMessageBatch calls (group commit: whatever arrived while the previous calls were in
flight goes out together, ten entries a call). A received event stays invisible to the other
workers while this one holds it: its visibility is extended every third of
``visibility_timeout`` until it is deleted, so a run of any length causes no duplicate, and a
worker that dies gives its events back within ``visibility_timeout``.

A retry re-sends the event with its new attempt count and due time (DelaySeconds, at most
SQS's 900 s, rounded down) and then deletes the old message, so a crash in between duplicates
rather than loses it. A message received before it is due waits in the worker when it is due
within a couple of seconds, and is otherwise hidden again with ChangeMessageVisibility until
its time (up to 12 hours a hop): that is how a delay over 900 s works. Throttled events wait
in the worker, as the invoker asks (``durable=False``).

Dead letters go to the dead-letter queue: ``dead_letter_queue`` when given, else the target of
the queue's redrive policy. Each is the event as it failed plus the invocation record, with
Lambda's ``RequestID``, ``ErrorCode`` and ``ErrorMessage`` message attributes. A message that
is not an event is moved there as it is, logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import orjson

from streamfn.asyncq import DeadLetter, QueuedEvent
from streamfn.backoff import retry_delay
from streamfn.errors import ConfigError, InvocationError, SourceError

from .._eventq import HeldEvents, MalformedEvent, decode, encode, encode_letter, letter_error
from ._client import (
    MAX_RECEIVE,
    MAX_VISIBILITY,
    MAX_WAIT,
    BatchCall,
    Connection,
    QueueRef,
    call_by_ten,
    fatal_error,
    resolve_url,
    summary,
)
from .depth import ATTRIBUTES as DEPTH_ATTRIBUTES
from .depth import QueueDepth
from .visibility import VisibilityHeartbeat, release_now_entry

log = logging.getLogger("streamfn.async.sqs")

MAX_DELAY = 900  # seconds: SQS's longest DelaySeconds
#: A message received at most this many seconds before it is due waits in the worker; one due
#: later is hidden again until its time (DelaySeconds are whole seconds, rounded down).
HOLD_AHEAD = 2.0
CLOSE_TIMEOUT = MAX_WAIT + 5.0  # seconds to collect the last receive and release what is held


@dataclass(slots=True)
class _Message(QueuedEvent):
    """An event as received: its receipt handle deletes it or extends its visibility."""

    receipt: str = ""


@dataclass(slots=True, eq=False)
class _Entry:
    fields: dict[str, Any]
    stored: asyncio.Future[str | None]  # None once SQS took it, else the error code


class _GroupCall:
    """Group commit for one SQS batch action (SendMessageBatch, DeleteMessageBatch): entries
    that arrive while a round of calls is in flight go out together in the next round, ten a
    call, all calls of a round at once."""

    def __init__(self, action: str, queue: str) -> None:
        self._action = action
        self._queue = queue
        self._pending: list[_Entry] = []
        self._more = asyncio.Event()
        self._closing = False

    async def __call__(self, fields: dict[str, Any]) -> str | None:
        """None once SQS accepted the entry, else the error code it failed with."""
        entry = _Entry(fields, asyncio.get_running_loop().create_future())
        self._pending.append(entry)
        self._more.set()
        return await entry.stored

    def close(self) -> None:
        """Stop once what is pending has been sent."""
        self._closing = True
        self._more.set()

    async def run(self, call: BatchCall, url: str) -> None:
        while True:
            if not self._closing:
                await self._more.wait()
            self._more.clear()
            batch, self._pending = self._pending, []
            if not batch:
                if self._closing:
                    return
                continue
            failures = await call_by_ten(call, url, batch, _entry)
            codes = dict(failures)
            for entry in batch:
                if not entry.stored.done():
                    entry.stored.set_result(codes.get(entry))
            if failures:
                log.warning(
                    f"SQS {self._action} failed for some entries",
                    extra={"queue": self._queue, "errors": summary(failures)},
                )


def _entry(entry_id: str, entry: _Entry) -> dict[str, Any]:
    return {"Id": entry_id, **entry.fields}


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError.out_of_range(name, value, f"an integer {low}-{high}")


def _standard(ref: QueueRef, field: str) -> None:
    if ref.fifo:
        raise ConfigError(
            f"{field}={ref.name!r} is invalid: must be a standard queue (Lambda's event queue "
            "is unordered, and FIFO queues take no per-message delay)"
        )


class SQSEventQueue:
    """The event queue of asynchronous invocations on an SQS standard queue, so that several
    workers share it: ``App(event_queue=SQSEventQueue(...))`` in each.

    ``queue`` and ``dead_letter_queue`` are queue URLs, ARNs or names; without a
    ``dead_letter_queue``, the target of the queue's redrive policy takes dead letters, and a
    queue with neither refuses to start (:class:`~streamfn.errors.ConfigError`), so a failed
    event is never dropped. ``visibility_timeout`` (seconds) is how long a worker that died
    keeps its events from the others. ``wait_time`` is the long poll (1-20 s): an idle worker
    makes one ReceiveMessage call per ``wait_time``, and closing waits for the last one.
    ``max_held`` bounds the events waiting in this worker for their time. ``depth()`` is read
    from the queue's attributes every ``depth_interval`` seconds.
    """

    def __init__(
        self,
        queue: str,
        *,
        dead_letter_queue: str | None = None,
        visibility_timeout: int = 60,
        wait_time: int = 10,
        max_held: int = 1000,
        depth_interval: float = 15.0,
        max_connections: int = 50,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        profile_name: str | None = None,
    ) -> None:
        self.ref = QueueRef.parse(queue)
        _standard(self.ref, "queue")
        self._dead_letter_ref: QueueRef | None = None
        if dead_letter_queue is not None:
            self._dead_letter_ref = QueueRef.parse(dead_letter_queue)
            _standard(self._dead_letter_ref, "dead_letter_queue")
        _check_int("visibility_timeout", visibility_timeout, 1, MAX_VISIBILITY)
        _check_int("wait_time", wait_time, 1, MAX_WAIT)
        _check_int("max_held", max_held, 1, 1_000_000)
        _check_int("max_connections", max_connections, 1, 1000)
        if (
            isinstance(depth_interval, bool)
            or not isinstance(depth_interval, int | float)
            or depth_interval <= 0
        ):
            raise ConfigError.out_of_range("depth_interval", depth_interval, "seconds > 0")
        self.queue = queue
        self.visibility_timeout = visibility_timeout
        self.wait_time = wait_time
        self.max_held = max_held
        self.depth_interval = float(depth_interval)
        self.max_connections = max_connections
        self._connection = Connection(
            region_name or self.ref.region,
            endpoint_url,
            aws_access_key_id,
            aws_secret_access_key,
            aws_session_token,
            profile_name,
        )
        self.dead_letter_url = ""
        self._url = ""
        self._client: Any = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._reset()

    def _reset(self) -> None:
        """The state of one run, from opening to closing."""
        self._held: dict[str, _Message] = {}  # receipt handle -> event received, not settled
        self._holding = HeldEvents(self._fetch, self.max_held)
        self._send = _GroupCall("send", self.queue)
        self._bury = _GroupCall("dead-letter send", self.queue)
        self._delete = _GroupCall("delete", self.queue)
        self._depth: QueueDepth | None = None  # while open
        self._closing = False

    def describe(self) -> str:
        return f"sqs://{self.ref.name}"

    # -- opening and closing -------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._reset()
        async with contextlib.AsyncExitStack() as stack:
            client = await stack.enter_async_context(self._connection.client(self.max_connections))
            await self._open(client)
            self._client = client
            self._heartbeat = heartbeat = VisibilityHeartbeat(
                client,
                self._url,
                self.visibility_timeout,
                lambda: self._held,
                queue=self.ref.name,
                log=log,
                lost="could not extend the visibility of events; they may run twice",
            )
            tasks = await stack.enter_async_context(asyncio.TaskGroup())
            tasks.create_task(self._send.run(client.send_message_batch, self._url))
            tasks.create_task(self._bury.run(client.send_message_batch, self.dead_letter_url))
            tasks.create_task(self._delete.run(client.delete_message_batch, self._url))
            assert self._depth is not None
            self._loops = [
                tasks.create_task(heartbeat.run()),
                tasks.create_task(self._depth.run()),
            ]
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Collect the last receive, make every event not settled visible again at once (for
        the other workers, or this one's next start), flush the writers, close the client."""
        stack, self._stack = self._stack, None
        if stack is None:
            return
        self._closing = True
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await self._holding.close(cancel=False)  # its events are in _held
                    await self._release([*self._held])
            self._held.clear()
        finally:
            for writer in (self._send, self._bury, self._delete):
                writer.close()
            for loop in self._loops:
                loop.cancel()
            self._client = None
            await stack.aclose()

    async def _open(self, client: Any) -> None:
        endpoint = self._connection.endpoint
        try:
            self._url = await resolve_url(client, self.ref)
            response = await client.get_queue_attributes(
                QueueUrl=self._url, AttributeNames=["RedrivePolicy", *DEPTH_ATTRIBUTES]
            )
        except Exception as exc:
            raise fatal_error(exc, self.queue, endpoint) or SourceError(
                f"cannot open SQS event queue {self.queue!r}: {exc}"
            ) from exc
        attributes = response["Attributes"]
        self._depth = QueueDepth(
            client, self._url, self.depth_interval, queue=self.ref.name, log=log
        )
        self._depth.update(attributes)
        ref = self._dead_letter_ref
        if ref is None and "RedrivePolicy" in attributes:
            ref = QueueRef.parse(orjson.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"])
            _standard(ref, "the redrive policy's deadLetterTargetArn")
        if ref is None:
            raise ConfigError(
                f"SQS event queue {self.ref.name!r} has no dead-letter queue: pass "
                "dead_letter_queue=... or give the queue a redrive policy"
            )
        try:
            self.dead_letter_url = await resolve_url(client, ref)
        except Exception as exc:
            name = ref.url or ref.name
            raise fatal_error(exc, name, endpoint) or SourceError(
                f"cannot open SQS dead-letter queue {name!r}: {exc}"
            ) from exc

    # -- the invoker's side --------------------------------------------------------------

    async def put(self, event: QueuedEvent) -> None:
        assert self._client is not None, "the queue is not open"
        error = await self._send({"MessageBody": encode(event).decode()})
        if error is not None:
            raise InvocationError(
                f"SQS event queue {self.ref.name!r} did not store the event ({error})"
            )

    async def receive(self, max_events: int) -> list[QueuedEvent]:
        return await self._holding.receive(max_events)

    async def retry(self, event: QueuedEvent, delay: float, *, durable: bool = True) -> None:
        assert isinstance(event, _Message)
        event.due_at = time.time() + delay
        if not durable:
            self._holding.hold(event)
            return
        body = encode(event).decode()
        error = await self._send({"MessageBody": body, "DelaySeconds": min(MAX_DELAY, int(delay))})
        if error is not None:
            raise SourceError(
                f"SQS event queue {self.ref.name!r} did not store the retried event ({error})"
            )
        await self.delete(event)

    async def delete(self, event: QueuedEvent) -> None:
        """Never raises for SQS: a message that could not be deleted comes back (at least
        once), and the writer logged why."""
        assert isinstance(event, _Message)
        self._held.pop(event.receipt, None)
        await self._delete({"ReceiptHandle": event.receipt})

    async def dead_letter(self, event: QueuedEvent, letter: DeadLetter) -> None:
        status, message = letter_error(letter)
        attributes = {
            "RequestID": {"DataType": "String", "StringValue": letter.request_id},
            "ErrorMessage": {"DataType": "String", "StringValue": message},
        }
        if status is not None:
            attributes["ErrorCode"] = {"DataType": "Number", "StringValue": str(status)}
        body = encode_letter(event, letter).decode()
        error = await self._bury({"MessageBody": body, "MessageAttributes": attributes})
        if error is not None:
            raise SourceError(
                f"SQS dead-letter queue of {self.ref.name!r} did not store the event ({error})"
            )
        await self.delete(event)

    def depth(self) -> int:
        """Every event of the queue not deleted yet (visible, in flight and delayed), as read
        every ``depth_interval`` seconds."""
        return self._depth.total if self._depth is not None else 0

    def oldest(self) -> float | None:
        """The oldest event this worker holds: SQS does not say how old its oldest is."""
        return min((event.enqueued_at for event in self._held.values()), default=None)

    # -- receiving -----------------------------------------------------------------------

    async def _fetch(self, max_events: int) -> list[QueuedEvent]:
        """Long-poll until events come (or the queue closes); back off on transient errors."""
        failures = 0
        while not self._closing:
            try:
                response = await self._client.receive_message(
                    QueueUrl=self._url,
                    MaxNumberOfMessages=min(MAX_RECEIVE, max_events),
                    WaitTimeSeconds=self.wait_time,
                    VisibilityTimeout=self.visibility_timeout,
                )
            except Exception as exc:
                fatal = fatal_error(exc, self.queue, self._connection.endpoint)
                if fatal is not None:
                    raise fatal from exc
                delay = retry_delay(failures, 0.5, 20.0)
                failures += 1
                log.warning(
                    "cannot receive from the SQS event queue; retrying",
                    extra={"queue": self.ref.name, "retry_in": round(delay, 2), "error": repr(exc)},
                )
                await asyncio.sleep(delay)
                continue
            failures = 0
            events = await self._accept(response.get("Messages", ()))
            if events:
                return events
        return []

    async def _accept(self, messages: list[dict[str, Any]]) -> list[QueuedEvent]:
        """Hold the events of ``messages`` that are due (or nearly); hide the others again
        until their time, and move malformed ones to the dead-letter queue."""
        now = time.time()
        events: list[QueuedEvent] = []
        later: list[tuple[str, float]] = []
        for message in messages:
            try:
                event = decode(message["Body"].encode(), _Message)
            except MalformedEvent as exc:
                await self._bury_malformed(message, exc)
                continue
            event.receipt = message["ReceiptHandle"]
            if event.due_at - now > HOLD_AHEAD:
                later.append((event.receipt, event.due_at - now))
                continue
            self._held[event.receipt] = event
            events.append(event)
        if later:
            failures = await call_by_ten(
                self._client.change_message_visibility_batch, self._url, later, _hide_entry
            )
            if failures:
                log.warning(
                    "could not hide events until they are due; they come back sooner",
                    extra={"queue": self.ref.name, "errors": summary(failures)},
                )
        return events

    async def _bury_malformed(self, message: dict[str, Any], error: MalformedEvent) -> None:
        reason = f"malformed event: {error}"
        attributes = {"ErrorMessage": {"DataType": "String", "StringValue": reason}}
        stored = await self._bury({"MessageBody": message["Body"], "MessageAttributes": attributes})
        if stored is None:
            await self._delete({"ReceiptHandle": message["ReceiptHandle"]})
        log.error(
            "malformed message on the SQS event queue"
            + ("; moved to the dead-letter queue" if stored is None else "; left in the queue"),
            extra={"queue": self.ref.name, "messageId": message["MessageId"], "error": reason},
        )

    async def _release(self, receipts: list[str]) -> None:
        """Make ``receipts`` visible at once, after any running extension: one that landed
        after the release would hide the events for another visibility timeout."""
        if not receipts:
            return
        failures = await self._heartbeat.change(receipts, release_now_entry)
        if failures:
            log.warning(
                "could not release unsettled events; they come back after the visibility timeout",
                extra={"queue": self.ref.name, "errors": summary(failures)},
            )


def _hide_entry(entry_id: str, item: tuple[str, float]) -> dict[str, Any]:
    receipt, seconds = item
    return {
        "Id": entry_id,
        "ReceiptHandle": receipt,
        "VisibilityTimeout": min(MAX_VISIBILITY, math.ceil(seconds)),
    }
