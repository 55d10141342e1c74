"""Running asynchronous (``Event``) invocations from the event queue, with Lambda's rules.

Function errors (raised, timed out) are retried ``maximum_retry_attempts`` times (0-2), one
minute then two minutes apart. Throttles (reserved concurrency in use) are retried apart from that
count, with a backoff growing from 1 second to 5 minutes. An event older than
``maximum_event_age`` is given up as ``EventAgeExceeded``; reserved concurrency 0 sends it on
at once as ``ZeroReservedConcurrency``. Final outcomes go to the ``on_success`` /
``on_failure`` destinations as Lambda's invocation record, and failures to the dead-letter store.
``time_scale`` shrinks every one of these durations alike, so tests run them in milliseconds.

A full queue refuses an event (429, :class:`~streamfn.errors.TooManyRequests`); each refusal is
counted (``streamfn_async_queue_refused_total``), and logged at a bounded rate: the first in
full, then a summary at most once a minute while refusals go on, and one line when the queue
takes events again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol

import orjson

from . import tracing
from .asyncq import DeadLetter, EventQueue, QueuedEvent
from .backoff import retry_delay
from .destinations import Destination, iso_timestamp
from .dispatch import Function, InvocationResult
from .errors import FunctionNotFound, TooManyRequests
from .metrics import AppMetrics

log = logging.getLogger("streamfn.async")

#: Seconds before the second and the third attempt, as AWS documents.
RETRY_DELAYS = (60.0, 120.0)
THROTTLE_BASE_DELAY = 1.0
THROTTLE_MAX_DELAY = 300.0
#: Attempts at handing a record to a destination before counting a delivery failure.
DELIVERY_ATTEMPTS = 3
#: Seconds between two lines about a full queue while it keeps refusing events.
REFUSAL_LOG_INTERVAL = 60.0

SUCCESS = "Success"
RETRIES_EXHAUSTED = "RetriesExhausted"
EVENT_AGE_EXCEEDED = "EventAgeExceeded"
ZERO_RESERVED_CONCURRENCY = "ZeroReservedConcurrency"
FUNCTION_NOT_FOUND = "ResourceNotFound"


def invocation_record(
    event: QueuedEvent,
    function_arn: str,
    condition: str,
    request_payload: Any,
    result: InvocationResult | None,
) -> dict[str, Any]:
    """Lambda's record for asynchronous invocation destinations; no ``responseContext`` when the
    function did not run this time (expired, or reserved concurrency 0)."""
    record: dict[str, Any] = {
        "version": "1.0",
        "timestamp": iso_timestamp(),
        "requestContext": {
            "requestId": event.request_id,
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": event.attempts,
        },
        "requestPayload": request_payload,
    }
    if result is not None:
        response: dict[str, Any] = {"statusCode": 200, "executedVersion": result.executed_version}
        if result.error is not None:
            response["functionError"] = "Unhandled"
        record["responseContext"] = response
        record["responsePayload"] = result.error if result.error is not None else result.value
    return record


class FunctionResolver(Protocol):
    """What the invoker needs of the app (``streamfn.App`` is one): the version an event runs,
    drawn per attempt as a weighted alias routes, and the ARN of a name that no longer resolves.
    Declared here, not taken as the App, so the app depends on the invoker and not back."""

    def resolve(self, name: str, qualifier: str | None = None) -> Function:
        """The function version one invocation runs; raises
        :class:`~streamfn.errors.FunctionNotFound`."""

    def arn(self, name: str, qualifier: str | None = None) -> str: ...


class _Refusals:
    """The log lines of a full queue, at a bounded rate: the first refusal in full (type,
    message, what happens next), the next ones counted into a summary written at most every
    ``interval`` seconds, and one line when the queue takes events again, with the refusals not
    written yet (``repeated``). ``interval`` and ``clock`` may be changed to pin this in a test."""

    def __init__(
        self, interval: float = REFUSAL_LOG_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self.clock = clock
        self.refusing = False  # a refusal was written and no event accepted since
        self._written = -math.inf
        self._count = 0  # refusals since the last line

    def refused(self, function: str, exc: TooManyRequests) -> None:
        now = self.clock()
        fields = {
            "function": function,
            "errorType": exc.error_type,
            "errorMessage": str(exc),
            "reason": exc.reason,
        }
        then = "Event invocations are refused with 429 until it drains"
        if not self.refusing:
            log.warning(f"asynchronous event queue full; {then}", extra=fields)
            self.refusing, self._written, self._count = True, now, 0
            return
        self._count += 1
        if now >= self._written + self.interval:
            seconds = now - self._written
            log.warning(
                f"asynchronous event queue full; {then} [{self._count} times in {seconds:.0f} s]",
                extra={**fields, "repeated": self._count, "seconds": round(seconds, 1)},
            )
            self._written, self._count = now, 0

    def accepted(self) -> None:
        log.info("asynchronous event queue takes events again", extra={"repeated": self._count})
        self.refusing, self._count = False, 0


class AsyncInvoker:
    """Takes due events from the queue and runs each in its own task, at most ``max_in_flight``
    at a time; the queue keeps every event until its outcome is final."""

    def __init__(
        self,
        functions: FunctionResolver,
        queue: EventQueue,
        metrics: AppMetrics,
        *,
        time_scale: float = 1.0,
        max_in_flight: int = 256,
        shutdown_timeout: float = 30.0,
    ) -> None:
        self.functions = functions
        self.queue = queue
        self.time_scale = time_scale
        self.max_in_flight = max_in_flight
        self.shutdown_timeout = shutdown_timeout
        self._in_flight = 0
        self._room = asyncio.Event()
        self._retries = metrics.async_retries
        self._dead = metrics.dead_letters
        self._undelivered = metrics.destination_failures
        self._refused = metrics.async_refused
        self.refusals = _Refusals()

    async def submit(
        self, function: str, qualifier: str | None, payload: bytes, request_id: str
    ) -> None:
        """Queue an accepted event; returns once the queue has made it durable, or raises
        :class:`~streamfn.errors.TooManyRequests` (counted and logged) when it is full. It keeps
        the current trace context, the request's, for its runs."""
        now = time.time()
        event = QueuedEvent(
            request_id, function, qualifier, payload, now, due_at=now, trace=tracing.traceparent()
        )
        try:
            await self.queue.put(event)
        except TooManyRequests as exc:
            self._refused.labels(function).inc()
            self.refusals.refused(function, exc)
            raise
        if self.refusals.refusing:
            self.refusals.accepted()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[AsyncInvoker]:
        """Open the queue and run events until the block exits; then give in-flight invocations
        ``shutdown_timeout`` seconds to finish (the rest stay queued) and close the queue."""
        stop = asyncio.Event()
        async with self.queue, asyncio.TaskGroup() as tg:
            tg.create_task(self._run(stop))
            try:
                yield self
            finally:
                stop.set()

    async def _run(self, stop: asyncio.Event) -> None:
        stopped = asyncio.ensure_future(stop.wait())
        try:
            async with asyncio.timeout(None) as deadline, asyncio.TaskGroup() as tg:
                while await self._room_for_more(stopped):
                    events = await _unless(stopped, self.queue.receive(self._free()))
                    if events is None:
                        break
                    for event in events:
                        self._in_flight += 1
                        tg.create_task(self._process(event))
                deadline.reschedule(asyncio.get_running_loop().time() + self.shutdown_timeout)
        except TimeoutError:
            log.warning("async invocations still running at shutdown stay queued")
        finally:
            stopped.cancel()

    def _free(self) -> int:
        return self.max_in_flight - self._in_flight

    async def _room_for_more(self, stopped: asyncio.Future[Any]) -> bool:
        while self._free() <= 0:
            self._room.clear()
            if await _unless(stopped, self._room.wait()) is None:
                return False
        return not stopped.done()

    async def _process(self, event: QueuedEvent) -> None:
        try:
            with tracing.resume(event.trace):
                await self._attempt(event)
        except Exception:
            log.exception(
                "async invocation crashed; retrying later",
                extra={"function": event.function, "requestId": event.request_id},
            )
            # Not durable: nothing to write, so nothing to fail; the stored event is unchanged.
            await self.queue.retry(event, self._scaled(THROTTLE_MAX_DELAY), durable=False)
        finally:
            self._in_flight -= 1
            self._room.set()

    def _scaled(self, seconds: float) -> float:
        return seconds * self.time_scale

    async def _attempt(self, event: QueuedEvent) -> None:
        payload = orjson.loads(event.payload) if event.payload else None
        try:
            function = self.functions.resolve(event.function, event.qualifier)
        except FunctionNotFound as exc:
            await self._give_up(event, None, FUNCTION_NOT_FOUND, payload, None, str(exc))
            return
        cfg = function.config
        if time.time() - event.enqueued_at > self._scaled(cfg.maximum_event_age):
            await self._give_up(event, function, EVENT_AGE_EXCEEDED, payload, None)
            return
        if function.concurrency.limit == 0:
            await self._give_up(event, function, ZERO_RESERVED_CONCURRENCY, payload, None)
            return
        if not function.try_reserve():
            event.throttles += 1
            self._retries.labels(event.function, "throttle").inc()
            delay = min(THROTTLE_MAX_DELAY, THROTTLE_BASE_DELAY * 2.0 ** (event.throttles - 1))
            await self.queue.retry(event, self._scaled(delay), durable=False)
            return
        event.attempts += 1
        result = await function.invoke(
            payload,
            request_id=event.request_id,
            invoked_arn=self._invoked_arn(function, event),
            reserved=True,
        )
        if result.error is None:
            if cfg.on_success is not None:
                record = self._record(event, function, SUCCESS, payload, result)
                await self._deliver(cfg.on_success, record, event)
            await self.queue.delete(event)
            return
        log.warning(
            "async invocation failed",
            extra={
                "function": event.function,
                "requestId": event.request_id,
                "attempt": event.attempts,
                "errorType": result.error.get("errorType"),
                "errorMessage": result.error.get("errorMessage"),
            },
        )
        if event.attempts <= cfg.maximum_retry_attempts:
            self._retries.labels(event.function, "error").inc()
            delay = RETRY_DELAYS[min(event.attempts, len(RETRY_DELAYS)) - 1]
            await self.queue.retry(event, self._scaled(delay))
            return
        await self._give_up(event, function, RETRIES_EXHAUSTED, payload, result)

    @staticmethod
    def _invoked_arn(function: Function, event: QueuedEvent) -> str:
        arn = function.config.arn
        return f"{arn}:{event.qualifier}" if event.qualifier else arn

    def _record(
        self,
        event: QueuedEvent,
        function: Function,
        condition: str,
        payload: Any,
        result: InvocationResult | None,
    ) -> dict[str, Any]:
        arn = f"{function.config.arn}:{event.qualifier or '$LATEST'}"
        return invocation_record(event, arn, condition, payload, result)

    async def _give_up(
        self,
        event: QueuedEvent,
        function: Function | None,
        condition: str,
        payload: Any,
        result: InvocationResult | None,
        reason: str | None = None,
    ) -> None:
        """Send the failure record on and move the event to the dead-letter store (always when
        the on_failure destination refused it, so a failed event is never lost silently)."""
        if function is None:
            arn = f"{self.functions.arn(event.function)}:{event.qualifier or '$LATEST'}"
            record = invocation_record(event, arn, condition, payload, None)
            record["responsePayload"] = {"errorMessage": reason}
            delivered, keep = False, True
        else:
            cfg = function.config
            record = self._record(event, function, condition, payload, result)
            delivered = cfg.on_failure is None or await self._deliver(cfg.on_failure, record, event)
            keep = cfg.dead_letter
        if keep or not delivered:
            letter = DeadLetter(
                event.request_id,
                event.function,
                event.qualifier,
                event.payload or b"",
                event.enqueued_at,
                event.attempts,
                time.time(),
                condition,
                record,
            )
            await self.queue.dead_letter(event, letter)
        else:
            await self.queue.delete(event)
        self._dead.labels(event.function, condition).inc()

    async def _deliver(
        self, destination: Destination, record: Mapping[str, Any], event: QueuedEvent
    ) -> bool:
        """Hand ``record`` to ``destination``, retrying a refusal with backoff; False when it
        kept refusing (counted in the delivery-failures metric, as Lambda's
        DestinationDeliveryFailures)."""
        key = event.request_id.encode()
        for attempt in range(DELIVERY_ATTEMPTS):
            try:
                await destination.send(record, key=key)
                return True
            except Exception as exc:  # whatever a destination raises, it did not store it
                error = exc
            if attempt + 1 < DELIVERY_ATTEMPTS:
                await asyncio.sleep(self._scaled(retry_delay(attempt, 1.0, 10.0)))
        self._undelivered.labels(event.function).inc()
        log.error(
            "destination refused an invocation record",
            extra={
                "function": event.function,
                "requestId": event.request_id,
                "destination": destination.describe(),
                "error": repr(error),
            },
        )
        return False


async def _unless(stopped: asyncio.Future[Any], work: Awaitable[Any]) -> Any:
    """Await ``work`` unless ``stopped`` completes first (then cancel it and return None)."""
    task = asyncio.ensure_future(work)
    await asyncio.wait((task, stopped), return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None
