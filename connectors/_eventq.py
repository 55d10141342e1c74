"""What the SQS and Kafka event queues share: the wire format of a queued event, and the part
of a broker-backed queue that lives in the worker, where received events wait until due.

Wire format: one JSON object per message with every :class:`~streamfn.asyncq.QueuedEvent`
field; the payload is the invocation's JSON text as a string, so it is parsed once, by the
invoker::

    {"requestId": "...", "function": "orders", "qualifier": null, "payload": "{\\"n\\": 1}",
     "enqueuedAt": 1767225600.125, "attempts": 1, "throttles": 0, "dueAt": 1767225660.125}

plus ``traceparent``, the W3C trace context of the request that queued it, when tracing was on.
A message without it reads as an event without one, and a worker that predates it ignores it.

A dead letter is the same object plus ``failedAt``, ``condition`` and ``record`` (Lambda's
invocation record). Such a message put back on the event queue (SQS's dead-letter redrive,
or a copy from the dead-letter topic) starts over, as ``streamfn dlq redrive`` does: no
attempts yet, its age counted from when it is received again.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson

from streamfn.asyncq import DeadLetter, QueuedEvent

log = logging.getLogger("streamfn.async")

E = TypeVar("E", bound=QueuedEvent)

#: Lambda's dead-letter queue attributes carry the first 1 KB of the error message.
ERROR_MESSAGE_LIMIT = 1024


class MalformedEvent(ValueError):
    """A message on the event queue that is not an event in the wire format."""


def _fields(event: QueuedEvent) -> dict[str, Any]:
    assert event.payload is not None
    fields: dict[str, Any] = {
        "requestId": event.request_id,
        "function": event.function,
        "qualifier": event.qualifier,
        "payload": event.payload.decode(),
        "enqueuedAt": event.enqueued_at,
        "attempts": event.attempts,
        "throttles": event.throttles,
        "dueAt": event.due_at,
    }
    if event.trace is not None:
        fields["traceparent"] = event.trace
    return fields


def encode(event: QueuedEvent) -> bytes:
    return orjson.dumps(_fields(event))


def encode_letter(event: QueuedEvent, letter: DeadLetter) -> bytes:
    """The event as it failed, with when, why and Lambda's invocation record."""
    fields = _fields(event)
    fields["attempts"] = letter.attempts
    fields["failedAt"] = letter.failed_at
    fields["condition"] = letter.condition
    fields["record"] = letter.record
    return orjson.dumps(fields)


_NUMBER = (int, float)
_SCHEMA: tuple[tuple[str, tuple[type, ...]], ...] = (
    ("requestId", (str,)),
    ("function", (str,)),
    ("qualifier", (str, type(None))),
    ("payload", (str,)),
    ("enqueuedAt", _NUMBER),
    ("attempts", (int,)),
    ("throttles", (int,)),
    ("dueAt", _NUMBER),
)


def decode(data: bytes | None, cls: type[E]) -> E:
    """The event a message carries, as ``cls``; :class:`MalformedEvent` says what is wrong."""
    try:
        obj = orjson.loads(data or b"")
    except orjson.JSONDecodeError as exc:
        raise MalformedEvent(f"not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise MalformedEvent(f"a JSON {type(obj).__name__}, not an object")
    values: list[Any] = []
    for name, kinds in _SCHEMA:
        if name not in obj:
            raise MalformedEvent(f"no {name!r} field")
        value = obj[name]
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise MalformedEvent(f"field {name!r} is {value!r}")
        values.append(value)
    request_id, function, qualifier, payload, enqueued_at, attempts, throttles, due_at = values
    trace = obj.get("traceparent")
    if trace is not None and not isinstance(trace, str):
        raise MalformedEvent(f"field 'traceparent' is {trace!r}")
    if "condition" in obj:  # a dead letter moved back: it starts over
        enqueued_at = due_at = time.time()
        attempts = throttles = 0
    return cls(
        request_id,
        function,
        qualifier,
        payload.encode(),
        float(enqueued_at),
        attempts,
        throttles,
        float(due_at),
        trace,
    )


def letter_error(letter: DeadLetter) -> tuple[int | None, str]:
    """Lambda's ``ErrorCode`` (the status code, when the function ran) and ``ErrorMessage``
    (at most 1 KB; the condition when there is no error message) of a dead letter."""
    record = letter.record
    status = record.get("responseContext", {}).get("statusCode")
    response = record.get("responsePayload")
    message = response.get("errorMessage") if isinstance(response, dict) else None
    text = str(message) if message else letter.condition
    return status, text[:ERROR_MESSAGE_LIMIT]


class HeldEvents:
    """Events received from the broker that wait in this worker until they are due (a retry
    that arrived before its time, a throttled event), in due order.

    One fetch from the broker runs at a time, started only when the invoker asks for events and
    fewer than ``max_held`` are waiting, so a worker takes no more from a shared queue than it
    can run soon. The fetch outlives a cancelled :meth:`receive` (its messages are not lost
    with it) until the queue that owns it calls :meth:`close`.
    """

    def __init__(
        self,
        fetch: Callable[[int], Awaitable[list[QueuedEvent]]],
        max_held: int,
        keep: Callable[[QueuedEvent], bool] = lambda event: True,
    ) -> None:
        self._fetcher = fetch
        self._keep = keep
        self.max_held = max_held
        self._heap: list[tuple[float, int, QueuedEvent]] = []
        self._order = itertools.count()
        self._wake = asyncio.Event()
        self._fetch: asyncio.Future[list[QueuedEvent]] | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def hold(self, event: QueuedEvent) -> None:
        heapq.heappush(self._heap, (event.due_at, next(self._order), event))
        self._wake.set()

    async def receive(self, max_events: int) -> list[QueuedEvent]:
        while True:
            due = self._pop_due(max_events)
            if due:
                return due
            if self._fetch is None and len(self._heap) < self.max_held:
                self._fetch = asyncio.ensure_future(self._fetcher(max_events))
                self._fetch.add_done_callback(lambda _: self._wake.set())
            await self._wait()
            fetch = self._fetch
            if fetch is not None and fetch.done():
                self._fetch = None
                for event in fetch.result():
                    self.hold(event)

    def _pop_due(self, max_events: int) -> list[QueuedEvent]:
        now = time.time()
        heap = self._heap
        due: list[QueuedEvent] = []
        while heap and len(due) < max_events and heap[0][0] <= now:
            event = heapq.heappop(heap)[2]
            if self._keep(event):
                due.append(event)
        return due

    async def _wait(self) -> None:
        """Until the earliest event is due or the fetch finished."""
        self._wake.clear()
        if self._fetch is not None and self._fetch.done():
            return
        delay = self._heap[0][0] - time.time() if self._heap else None
        if delay is not None and delay <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

    async def close(self, *, cancel: bool) -> None:
        """Wait for the fetch still running, cancelled first when ``cancel`` (a broker that
        re-delivers what it had fetched) or not (one that must be told what it handed out)."""
        fetch, self._fetch = self._fetch, None
        if fetch is None:
            return
        if cancel:
            fetch.cancel()
        await asyncio.wait([fetch])
        if not fetch.cancelled() and fetch.exception() is not None:
            log.warning("the last fetch from the event queue failed", exc_info=fetch.exception())
