"""Calling a handler: the Lambda context, the timeout that cancels it, reserved concurrency, the
error object Lambda's Python runtime reports when it raises, and the log tail of one invocation."""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import inspect
import io
import logging
import os
import resource
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from .config import FunctionConfig
from .context import ClientContext, Context
from .destinations import iso_timestamp
from .errors import TooManyRequests
from .metrics import AppMetrics

Handler = Callable[[Any, Context], Any]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

#: The request id of the invocation running in this task, for log lines.
current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "streamfn_request_id", default=None
)
#: Log lines of the running invocation, collected only when its caller asked for the tail.
_tail_lines: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "streamfn_tail_lines", default=None
)
TAIL_BYTES = 4096  # X-Amz-Log-Result carries the last 4 KB of the invocation's log


@dataclass(slots=True)
class InvocationResult:
    """What came back from one call: a value, or Lambda's error object in ``error``."""

    request_id: str
    value: Any = None
    error: dict[str, Any] | None = None
    executed_version: str = "$LATEST"
    log: str | None = None  # the invocation's log, when the caller asked for its tail

    def log_tail(self) -> bytes:
        """The last 4 KB of the log, as Lambda returns it in X-Amz-Log-Result (before base64)."""
        return (self.log or "").encode()[-TAIL_BYTES:]


def error_object(exc: BaseException, request_id: str) -> dict[str, Any]:
    """Lambda's Python runtime error payload: errorMessage, errorType, requestId, stackTrace."""
    frames = traceback.extract_tb(exc.__traceback__)
    # Drop streamfn's own frames, as the Lambda runtime drops bootstrap.py's.
    user = [f for f in frames if not f.filename.startswith(_PACKAGE_DIR)]
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": request_id,
        "stackTrace": traceback.format_list(user),
    }


def timeout_object(timeout: float, request_id: str) -> dict[str, Any]:
    return {
        "errorMessage": (
            f"{iso_timestamp()} {request_id} Task timed out after {timeout:.2f} seconds"
        ),
        "errorType": "Sandbox.Timedout",
        "requestId": request_id,
        "stackTrace": [],
    }


class _TailHandler(logging.Handler):
    """Copies log records into the running invocation's tail, in Lambda's Python log format."""

    def emit(self, record: logging.LogRecord) -> None:
        lines = _tail_lines.get()
        if lines is None:
            return
        try:
            lines.append(
                f"[{record.levelname}]\t{iso_timestamp(record.created)}\t"
                f"{current_request_id.get()}\t{record.getMessage()}\n"
            )
        except Exception:
            self.handleError(record)


class _TailStdout(io.TextIOBase):
    """Stdout that also feeds the running invocation's tail: on Lambda ``print`` is logging."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        lines = _tail_lines.get()
        if lines is not None:
            lines.append(text)
        written: int = self._stream.write(text)
        return written

    def flush(self) -> None:
        self._stream.flush()

    def fileno(self) -> int:
        fd: int = self._stream.fileno()
        return fd

    def isatty(self) -> bool:
        return bool(self._stream.isatty())


_TAIL_HANDLER = _TailHandler()


def _capture_tail() -> None:
    """Hook the root logger and stdout, once and only when a caller first asks for a tail, so
    invocations without one pay nothing."""
    root = logging.getLogger()
    if _TAIL_HANDLER not in root.handlers:
        root.addHandler(_TAIL_HANDLER)
    if not isinstance(sys.stdout, _TailStdout):
        sys.stdout = _TailStdout(sys.stdout)


def _error_line(error: dict[str, Any]) -> str:
    """How Lambda's Python runtime logs an error: a timeout as a bare line, anything else as
    ``[ERROR] Type: message`` followed by the traceback."""
    if error["errorType"] == "Sandbox.Timedout":
        return f"{error['errorMessage']}\n"
    trace = "".join(error["stackTrace"])
    return f"[ERROR] {error['errorType']}: {error['errorMessage']}\n{trace}"


class Concurrency:
    """A function's reserved concurrency: one pool of slots shared by all its versions, as on
    Lambda. ``None`` is unlimited, 0 throttles everything. Taking a free slot is synchronous (the
    Invoke path must not wait); waiters are served first come, first served."""

    def __init__(self, limit: int | None = None) -> None:
        self.running = 0
        self.set_limit(limit)

    def set_limit(self, limit: int | None) -> None:
        """Set before the first invocation: a version may be registered before ``$LATEST``."""
        self.limit = limit
        self._held = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def try_acquire(self) -> bool:
        if self.limit is None:
            return True
        if self._held >= self.limit or self._waiters:
            return False
        self._held += 1
        return True

    async def acquire(self) -> None:
        """Wait for a slot (forever when the limit is 0, like a mapping whose function is off)."""
        if self.try_acquire():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over just as we gave up: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        if self.limit is None:
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes straight to the waiter
                return
        self._held -= 1


class _Cutoff:
    """One invocation's deadline; expiring cancels its task. A cancellation counts as the
    timeout only if no one else asked to cancel the task (``asyncio.timeout``'s rule)."""

    __slots__ = ("cancelling", "deadline", "expired", "finished", "task")

    def __init__(self, task: asyncio.Task[Any], deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.cancelling = task.cancelling()
        self.expired = False
        self.finished = False

    def expire(self) -> None:
        self.expired = True
        self.task.cancel()

    def timed_out(self) -> bool:
        """After a CancelledError: whether it was this cutoff's, which it then absorbs."""
        return self.expired and self.task.uncancel() <= self.cancelling


class _Watchdog:
    """Cuts a function's invocations at its timeout with one loop timer for all of them: they
    share one timeout, so their deadlines arrive in order and the timer only ever waits for the
    oldest unfinished one. A timer per invocation is the largest cost of a no-op invoke."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._queue: collections.deque[_Cutoff] = collections.deque()
        self._live = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, task: asyncio.Task[Any]) -> _Cutoff:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop: nothing of the old one can still run
            self._loop, self._timer, self._live = loop, None, 0
            self._queue.clear()
        cutoff = _Cutoff(task, loop.time() + self.timeout)
        self._queue.append(cutoff)
        self._live += 1
        if self._timer is None:
            self._timer = loop.call_at(cutoff.deadline, self._fire)
        elif len(self._queue) > 2 * self._live + 64:  # finished ones behind a long-running head
            self._queue = collections.deque(c for c in self._queue if not c.finished)
        return cutoff

    def done(self, cutoff: _Cutoff) -> None:
        cutoff.finished = True
        self._live -= 1

    def _fire(self) -> None:
        assert self._loop is not None
        self._timer = None
        now = self._loop.time()
        queue = self._queue
        while queue and (queue[0].finished or queue[0].deadline <= now):
            cutoff = queue.popleft()
            if not cutoff.finished:
                cutoff.expire()
        if queue:
            self._timer = self._loop.call_at(queue[0].deadline, self._fire)


class Function:
    """A registered handler (one version of a function) and its settings; every invocation path
    goes through :meth:`invoke`."""

    def __init__(
        self,
        handler: Handler,
        config: FunctionConfig,
        executor: Executor | None = None,
        *,
        concurrency: Concurrency | None = None,
        metrics: AppMetrics | None = None,
    ) -> None:
        self.handler = handler
        self.config = config
        self.name = config.name
        self.is_async = inspect.iscoroutinefunction(handler)
        self._executor = executor
        self.concurrency = concurrency or Concurrency(config.reserved_concurrency)
        metrics = metrics or AppMetrics()
        self._invocations = metrics.invocations.labels(config.name, config.version)
        self._errors = metrics.errors.labels(config.name, config.version)
        self._duration = metrics.duration.labels(config.name, config.version)
        self._throttles = metrics.throttles.labels(config.name)
        self._arn = config.arn
        self._memory = str(config.memory_size)
        self._log_group = f"/aws/lambda/{config.name}"
        self._stream_day = -1
        self._stream = ""
        self._watchdog = _Watchdog(config.timeout)

    @property
    def running(self) -> int:
        """Invocations in flight across every version of the function."""
        return self.concurrency.running

    def _context(
        self, request_id: str, client_context: ClientContext | None, invoked_arn: str | None
    ) -> Context:
        # Positional: this runs once per invocation, and keyword passing costs twice as much.
        ctx = Context(
            self.name,
            self.config.version,
            invoked_arn or self._arn,
            self._memory,
            request_id,
            self._log_group,
            self._log_stream(),
            time.monotonic() + self.config.timeout,
        )
        if client_context is not None:
            ctx.client_context = client_context
        return ctx

    def _log_stream(self) -> str:
        """``YYYY/MM/DD/[version]streamfn``, formatted once a day rather than per call."""
        day = int(time.time() // 86_400)
        if day != self._stream_day:
            self._stream_day = day
            self._stream = f"{time.strftime('%Y/%m/%d')}/[{self.config.version}]streamfn"
        return self._stream

    def try_reserve(self) -> bool:
        """Take a concurrency slot without waiting (the synchronous Invoke path); a refusal is
        counted as a throttle."""
        if self.concurrency.try_acquire():
            return True
        self._throttles.inc()
        return False

    def throttled(self) -> TooManyRequests:
        return TooManyRequests(
            "Rate Exceeded.", reason="ReservedFunctionConcurrentInvocationLimitExceeded"
        )

    async def invoke(
        self,
        event: Any,
        *,
        request_id: str | None = None,
        client_context: ClientContext | None = None,
        invoked_arn: str | None = None,
        reserved: bool = False,
        tail: bool = False,
    ) -> InvocationResult:
        """Run the handler once. Waits for a concurrency slot unless ``reserved`` says the caller
        already took one with :meth:`try_reserve`. Handler errors and timeouts come back in the
        result; only cancellation propagates. ``tail`` collects the invocation's log lines."""
        if not reserved and not self.concurrency.try_acquire():
            await self.concurrency.acquire()
        request_id = request_id or str(uuid.uuid4())
        ctx = self._context(request_id, client_context, invoked_arn)
        if tail:
            return await self._run_with_tail(event, ctx)
        return await self._run(event, ctx)

    async def _run_with_tail(self, event: Any, ctx: Context) -> InvocationResult:
        _capture_tail()
        request_id = ctx.aws_request_id
        lines = [f"START RequestId: {request_id} Version: {self.config.version}\n"]
        token = _tail_lines.set(lines)
        start = time.perf_counter()
        try:
            result = await self._run(event, ctx)
        finally:
            _tail_lines.reset(token)
        elapsed = time.perf_counter() - start
        if result.error is not None:
            lines.append(_error_line(result.error))
        result.log = "".join(lines) + self._report(request_id, elapsed)
        return result

    def _report(self, request_id: str, elapsed: float) -> str:
        ms = elapsed * 1000
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        return (
            f"END RequestId: {request_id}\n"
            f"REPORT RequestId: {request_id}\tDuration: {ms:.2f} ms\t"
            f"Billed Duration: {max(1, round(ms + 0.5))} ms\t"
            f"Memory Size: {self.config.memory_size} MB\tMax Memory Used: {rss_mb} MB\n"
        )

    async def _run(self, event: Any, ctx: Context) -> InvocationResult:
        """Call the handler under the function timeout, holding the slot the caller took."""
        request_id = ctx.aws_request_id
        version = self.config.version
        concurrency = self.concurrency
        task = asyncio.current_task()
        assert task is not None
        # The HTTP adapter has set it already for the whole request; setting it again costs.
        token = (
            None if current_request_id.get() == request_id else current_request_id.set(request_id)
        )
        concurrency.running += 1
        cutoff = self._watchdog.watch(task)
        start = time.perf_counter()
        try:
            if self.is_async:
                value = await self.handler(event, ctx)
            else:
                loop = asyncio.get_running_loop()
                call = functools.partial(contextvars.copy_context().run, self.handler, event, ctx)
                value = await loop.run_in_executor(self._executor, call)
            result = InvocationResult(request_id, value, None, version)
        except asyncio.CancelledError:
            if not cutoff.timed_out():
                raise
            error = timeout_object(self.config.timeout, request_id)
            result = InvocationResult(request_id, None, error, version)
        except Exception as exc:
            result = InvocationResult(request_id, None, error_object(exc, request_id), version)
        finally:
            self._duration.observe(time.perf_counter() - start)
            self._watchdog.done(cutoff)
            concurrency.running -= 1
            concurrency.release()
            if token is not None:
                current_request_id.reset(token)
        self._invocations.inc()
        if result.error is not None:
            self._errors.inc()
        return result
