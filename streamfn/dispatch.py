"""Calling a handler: the Lambda context, the timeout that cancels it, reserved concurrency, the
error object Lambda's Python runtime reports when it raises, and the log tail of one invocation.
Where the handler runs (the loop, a worker thread, an execution environment) is the function's
execution mode (:mod:`streamfn.execution`); every invocation path comes through here."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import concurrent.futures.thread
import contextlib
import contextvars
import functools
import io
import logging
import os
import resource
import sys
import time
import traceback
from asyncio import current_task, get_running_loop
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import orjson

from . import tracing
from .config import FunctionConfig
from .context import ClientContext, Context, FunctionInfo
from .destinations import iso_timestamp
from .errors import ConfigError, TooManyRequests
from .execution.modes import address, is_async
from .execution.pool import EnvironmentPool
from .execution.process import Environment, Reply
from .execution.python_env import PythonEnvironment
from .execution.runtime_api import Command, RuntimeApiEnvironment
from .execution.threads import HandlerThreads
from .metrics import AppMetrics
from .record import BatchResult

Handler = Callable[[Any, Context], Any]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
#: Where the worker thread that runs a plain ``def`` handler starts: its first frame.
_WORKER_THREAD = concurrent.futures.thread.__file__
#: The threads of ``def`` handlers of a Function built without an executor (tests, embedding).
_THREADS = HandlerThreads()

#: The request id of the invocation running in this task, for log lines.
current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "streamfn_request_id", default=None
)
#: Log lines of the running invocation, collected only when its caller asked for the tail.
_tail_lines: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "streamfn_tail_lines", default=None
)
#: What an execution environment adds to the REPORT line of the invocation collecting a tail.
_tail_report: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar(
    "streamfn_tail_report", default=None
)
TAIL_BYTES = 4096  # X-Amz-Log-Result carries the last 4 KB of the invocation's log
#: Names this process in log stream names, as a sandbox's id does on Lambda.
_INSTANCE = os.urandom(16).hex()

#: Request ids not handed out yet; see :func:`new_request_id`.
_request_ids: list[str] = []
#: Request ids made per read of ``os.urandom``.
_IDS_PER_READ = 256
#: Where the 32 random hex digits go in a UUID's 36 characters: every place but the four
#: dashes (8, 13, 18, 23), the version digit (14, always 4) and the variant digit (19).
_UUID_DIGITS = [
    (d, d - (d > 8) - (d > 13) - (d > 18) - (d > 23))
    for d in range(36)
    if d not in (8, 13, 14, 18, 19, 23)
]
#: A random hex digit to the variant digit of RFC 4122 (8, 9, a or b), keeping its low bits.
_VARIANT = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")


def _fresh_request_ids(n: int) -> list[str]:
    """``n`` version 4 UUID strings from one ``os.urandom`` read. Each character column is
    copied for all ``n`` at once (a strided slice of the hex digits), and one ``split`` cuts
    the text into ids: Python code per id costs ~8,000 instructions, this ~1,700."""
    hexes = os.urandom(16 * n).hex().encode()
    text = bytearray(b"-" * (37 * n))  # 36 characters and a separator per id
    for column, digit in _UUID_DIGITS:
        text[column::37] = hexes[digit::32]
    text[14::37] = b"4" * n
    text[19::37] = hexes[16::32].translate(_VARIANT)
    text[36::37] = b" " * n
    return text.decode().split()


def new_request_id() -> str:
    """A random (version 4) UUID string, as Lambda names each invocation.
    ``str(uuid.uuid4())`` costs about 2 us, as much as the rest of a no-op invocation's
    dispatch, mostly in one ``os.urandom`` call per id and the ``UUID`` object; here one read
    makes 256 ids. ``list.pop`` is atomic, so threads may share the pool, and a forked child
    empties it (:func:`os.register_at_fork`): it must not hand out its parent's ids."""
    try:
        return _request_ids.pop()
    except IndexError:
        _request_ids.extend(_fresh_request_ids(_IDS_PER_READ))
        return _request_ids.pop()


os.register_at_fork(after_in_child=_request_ids.clear)

log = logging.getLogger("streamfn.dispatch")

#: What asyncio says when a handler starts an event loop inside streamfn's running one (as
#: Powertools' ``async_process_partial_response`` does in an ``async def`` handler).
_NESTED = (
    "asyncio.run() cannot be called from a running event loop",
    "This event loop is already running",
)


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


class FunctionError(Exception):
    """The handler raised or timed out; ``error`` is Lambda's error object for it."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error["errorMessage"])
        self.error = error


def error_object(exc: BaseException, request_id: str) -> dict[str, Any]:
    """Lambda's Python runtime error payload: errorMessage, errorType, requestId, stackTrace."""
    frames = traceback.extract_tb(exc.__traceback__)
    # Drop streamfn's own frames, as the Lambda runtime drops bootstrap.py's, and the worker
    # thread's entry that ran a plain ``def`` handler: the trace starts at the handler, as on
    # AWS.
    user = [f for f in frames if not f.filename.startswith(_PACKAGE_DIR)]
    if user and user[0].filename == _WORKER_THREAD:
        del user[0]
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": request_id,
        "stackTrace": traceback.format_list(user),
    }


def timeout_object(timeout: float, request_id: str) -> dict[str, Any]:
    """Lambda's error payload for an invocation cut at its timeout, as AWS answers it today:
    only ``errorType`` and ``errorMessage`` (the platform reports it, not the runtime, so there
    is no ``requestId`` or ``stackTrace``). The same object is the mapping paths' error and the
    failure logs', so every consumer reads ``stackTrace`` as optional."""
    return {
        "errorType": "Sandbox.Timedout",
        "errorMessage": (
            f"RequestId: {request_id} Error: Task timed out after {timeout:.2f} seconds"
        ),
    }


def marshal_error(exc: Exception, request_id: str) -> dict[str, Any]:
    """Lambda's Python runtime error payload for a value it cannot serialise to JSON: the
    handler has returned, so there is no stack trace."""
    return {
        "errorMessage": f"Unable to marshal response: {exc}",
        "errorType": "Runtime.MarshalError",
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


def _add_to_tail(lines: list[str], reply: Reply, error: dict[str, Any] | None) -> None:
    """An environment's share of the log tail: its output, and for the REPORT line its peak
    memory and, on a cold start, its init duration. A runtime that logs its own errors
    (awslambdaric) has written the error line already."""
    if reply.log:
        lines.append(reply.log)
    extras = _tail_report.get()
    if extras is None:
        return
    if reply.max_memory_mb is not None:
        extras["memory_mb"] = reply.max_memory_mb
    if reply.init_duration is not None:
        extras["init_ms"] = reply.init_duration * 1000
    if error is not None and f"[ERROR] {error.get('errorType')}:" in (reply.log or ""):
        extras["error_logged"] = 1.0


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


class _Watchdog:
    """Cuts a function's invocations at its timeout with one loop timer for all of them. They
    share one timeout, so deadlines arrive in the order invocations start: ``running`` (a dict,
    so insertion-ordered) holds them oldest first, and the timer only ever waits for the oldest
    one. A timer per invocation is the largest cost of a no-op invoke. A cut counts as the
    timeout only if no one else asked to cancel the task meanwhile (``asyncio.timeout``'s
    rule), so the task's cancel count is kept from the start."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        #: Invocations being timed, by context, with their task and its cancel count at start.
        #: Function.call adds and removes its own entry, without a call (the hot path).
        self.running: dict[Context, tuple[asyncio.Task[Any], int]] = {}
        self.expired: dict[Context, int] = {}  # cut, with the cancel count they started with
        self.loop: asyncio.AbstractEventLoop | None = None
        self.timer: asyncio.TimerHandle | None = None

    def arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Start the timer for ``deadline``; a watcher calls this when no timer runs on its
        loop. A new event loop means nothing of the old one can still run."""
        if loop is not self.loop:
            self.loop = loop
            self.running.clear()
            self.expired.clear()
        self.timer = loop.call_at(deadline, self._fire)

    def timed_out(self, ctx: Context) -> bool:
        """After a CancelledError: whether it was this watchdog's cut, which it then absorbs."""
        cancelling = self.expired.pop(ctx, None)
        task = asyncio.current_task()
        return cancelling is not None and task is not None and task.uncancel() <= cancelling

    def _fire(self) -> None:
        """Cut every invocation past its deadline (loop.time() may be a coarser clock than the
        deadlines' ``time.monotonic()``: uvloop's is, and it never runs ahead of it)."""
        self.timer = None
        now = time.monotonic()
        due = []
        for ctx in self.running:
            if ctx.deadline > now:
                break
            due.append(ctx)
        for ctx in due:
            task, cancelling = self.running.pop(ctx)
            self.expired[ctx] = cancelling
            task.cancel()
        if self.running and self.loop is not None:
            self.timer = self.loop.call_at(next(iter(self.running)).deadline, self._fire)


class Function:
    """A registered handler (one version of a function) and its settings; every invocation path
    goes through :meth:`invoke`, or through :meth:`run` with a fresh ``Context(function.info,
    ...)`` when the caller has taken the concurrency slot itself."""

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
        self.version = config.version
        self.timeout = config.timeout
        self.is_async = is_async(handler)
        #: Where invocations run; an App has chosen it (:mod:`streamfn.execution.modes`), a
        #: bare Function falls back to the handler's kind.
        self.execution = config.execution or ("loop" if self.is_async else "thread")
        self._executor = executor or _THREADS
        #: Threads of timed-out invocations still running, by request id: see :meth:`invoke`.
        self._lingering: dict[str, concurrent.futures.Future[Any]] = {}
        self._hinted = False
        self._warned_lingering = False
        self.concurrency = concurrency or Concurrency(config.reserved_concurrency)
        metrics = metrics or AppMetrics()
        self._errors = metrics.errors.labels(config.name, config.version)
        self._duration = metrics.duration.labels(config.name, config.version)
        self._throttles = metrics.throttles.labels(config.name)
        self.info = FunctionInfo(
            config.name,
            config.version,
            config.arn,
            str(config.memory_size),
            f"/aws/lambda/{config.name}",
            f"{time.strftime('%Y/%m/%d')}/[{config.version}]{_INSTANCE}",
            config.timeout,
        )
        self._watchdog = _Watchdog(config.timeout)
        self.environments: EnvironmentPool | None = None
        if self.execution == "environment":
            self.environments = EnvironmentPool(
                f"{config.name}:{config.version}",
                self._environment_factory(),
                config.environments,
                config.timeout,
            )

    def _environment_factory(self) -> Callable[[], Environment]:
        """How this function's execution environments are made: a :class:`Command` speaks the
        Runtime API, any other handler runs in streamfn's own Python environment."""
        handler, config, info = self.handler, self.config, self.info
        if isinstance(handler, Command):
            command = handler
            return lambda: RuntimeApiEnvironment(command, info, config.region, config.memory_size)
        where = address(handler)
        if where is None:
            raise ConfigError(
                f"function {self.name!r}: execution='environment' needs a handler defined at "
                "module level of an importable module"
            )
        module, qualname = where
        return lambda: PythonEnvironment(module, qualname, info, config.region, config.memory_size)

    @property
    def running(self) -> int:
        """Invocations in flight across every version of the function."""
        return self.concurrency.running

    def try_reserve(self) -> bool:
        """Take a concurrency slot without waiting (the synchronous Invoke path); a refusal is
        counted as a throttle."""
        concurrency = self.concurrency
        if concurrency.limit is None or concurrency.try_acquire():
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
        concurrency = self.concurrency
        if not reserved and concurrency.limit is not None and not concurrency.try_acquire():
            await concurrency.acquire()
        ctx = Context(self.info, request_id or new_request_id(), invoked_arn, client_context)
        result = await (self.run_with_tail(event, ctx) if tail else self.run(event, ctx))
        if self._lingering:
            thread = self._lingering.pop(ctx.aws_request_id, None)
            if thread is not None and not reserved:
                await self._outlived(thread)
        return result

    async def _outlived(self, thread: concurrent.futures.Future[Any]) -> None:
        """Wait for the thread of a timed-out invocation to return. Every caller but a
        synchronous client's (which takes its slot itself: ``reserved``) waits, so a mapping
        retries a timed-out batch only once its first copy has stopped: a thread cannot be
        stopped, and two copies of one batch must never run at once."""
        if not thread.done():
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(thread)

    async def run_with_tail(self, event: Any, ctx: Context) -> InvocationResult:
        """:meth:`run`, with the invocation's log lines collected into ``result.log``."""
        _capture_tail()
        request_id = ctx.aws_request_id
        lines = [f"START RequestId: {request_id} Version: {self.version}\n"]
        extras: dict[str, float] = {}
        token = _tail_lines.set(lines)
        report_token = _tail_report.set(extras)
        start = time.perf_counter()
        try:
            result = await self.run(event, ctx)
        finally:
            _tail_lines.reset(token)
            _tail_report.reset(report_token)
        elapsed = time.perf_counter() - start
        if result.error is not None and not extras.get("error_logged"):
            lines.append(_error_line(result.error))
        result.log = "".join(lines) + self._report(request_id, elapsed, extras)
        return result

    def _report(self, request_id: str, elapsed: float, extras: dict[str, float]) -> str:
        """Lambda's END and REPORT lines. Every REPORT field ends with a tab, the last one
        too, as AWS writes it. In an execution environment, memory is the environment's peak,
        and its first invocation adds ``Init Duration``, as on AWS; in the loop or a thread
        there is no init phase (the module was imported when the app loaded) and memory is
        the worker's."""
        ms = elapsed * 1000
        rss_mb = extras.get("memory_mb")
        if rss_mb is None:
            rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        init = extras.get("init_ms")
        return (
            f"END RequestId: {request_id}\n"
            f"REPORT RequestId: {request_id}\tDuration: {ms:.2f} ms\t"
            f"Billed Duration: {max(1, round(ms + 0.5))} ms\t"
            f"Memory Size: {self.config.memory_size} MB\tMax Memory Used: {int(rss_mb)} MB\t"
            + (f"Init Duration: {init:.2f} ms\t" if init is not None else "")
            + "\n"
        )

    async def run(self, event: Any, ctx: Context) -> InvocationResult:
        """:meth:`call`, with the outcome as a result rather than an exception. Lambda's runtime
        serialises every value a handler returns, so one that is not JSON is a function error
        (``Runtime.MarshalError``) whoever invoked it: a mapping retries the batch, an
        asynchronous invocation is retried. ``None`` is returned as is, at no cost; so is a
        :class:`~streamfn.record.BatchResult`, the native partial batch response that a
        mapping turns into Lambda's dict itself."""
        request_id = ctx.aws_request_id
        try:
            value = await self.call(event, ctx)
        except FunctionError as failure:
            return InvocationResult(request_id, None, failure.error, self.version)
        if value is not None and not isinstance(value, BatchResult):
            try:
                # Lambda's runtime uses json.dumps, which accepts int (and other scalar) keys.
                orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
            except TypeError as exc:
                self._errors.inc()
                return InvocationResult(
                    request_id, None, marshal_error(exc, request_id), self.version
                )
        return InvocationResult(request_id, value, None, self.version)

    def _hint_nested_loop(self) -> None:
        """Say once per function how to fix a handler that starts its own event loop; the
        invocation's error stays the one Lambda would report."""
        if self._hinted:
            return
        self._hinted = True
        log.warning(
            f"function {self.name}: its async def handler started an event loop of its own "
            "(asyncio.run or run_until_complete, as Powertools' async_process_partial_response "
            "does) inside streamfn's running loop; write the handler as def (streamfn runs def "
            "handlers in a worker thread, as Lambda calls handlers synchronously) or call it "
            "with await asyncio.to_thread(...)",
            extra={"function": self.name},
        )

    def _linger(
        self,
        thread: concurrent.futures.Future[Any],
        request_id: str,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """The invocation gave up on its thread (timeout, cancellation), which runs on: it keeps
        the concurrency slot, and counts in ``streamfn_concurrent_executions``, until it
        returns; the thread pool counts it no more (:class:`HandlerThreads`)."""
        self._lingering[request_id] = thread
        if isinstance(self._executor, HandlerThreads):
            self._executor.write_off(thread)
        self._warn_lingering()

        def ended(_: concurrent.futures.Future[Any]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to release
                loop.call_soon_threadsafe(self._thread_ended, request_id)

        thread.add_done_callback(ended)

    def _thread_ended(self, request_id: str) -> None:
        self.concurrency.running -= 1
        if self.concurrency.limit is not None:
            self.concurrency.release()
        self._lingering.pop(request_id, None)

    def _warn_lingering(self) -> None:
        """Say once per function why its slots stay taken after a timeout, and the fix."""
        if self._warned_lingering:
            return
        self._warned_lingering = True
        log.warning(
            f"function {self.name}: a def handler ran past its timeout in a worker thread, "
            "which cannot be stopped: it keeps its concurrency slot until it returns, and a "
            "mapping retries its batch only then; register the function with "
            "execution='environment' to have a timed-out invocation killed",
            extra={"function": self.name},
        )

    async def _call_environment(self, event: Any, ctx: Context) -> Any:
        """:meth:`call` for ``execution="environment"``: the pool applies the timeout (after
        the environment's init phase, as Lambda does) and kills the environment on it; the
        concurrency slot is held until that environment's process is gone."""
        assert self.environments is not None
        request_id = ctx.aws_request_id
        concurrency = self.concurrency
        token = (
            None if current_request_id.get() == request_id else current_request_id.set(request_id)
        )
        traced = tracing.invocation(self.info, ctx) if tracing.enabled else None
        lines = _tail_lines.get()
        error: dict[str, Any] | None = None
        concurrency.running += 1
        started = time.monotonic()
        try:
            reply = await self.environments.invoke(event, ctx, lines is not None)
            error = timeout_object(self.timeout, request_id) if reply.timed_out else reply.error
            if lines is not None:
                _add_to_tail(lines, reply, error)
            if error is not None:
                self._errors.inc()
                raise FunctionError(error)
            return reply.value
        finally:
            self._duration.observe(time.monotonic() - started)
            concurrency.running -= 1
            if concurrency.limit is not None:
                concurrency.release()
            if token is not None:
                current_request_id.reset(token)
            if traced is not None:
                traced.end(error)

    async def call(self, event: Any, ctx: Context) -> Any:
        """Call the handler under the function timeout, holding (then releasing) the concurrency
        slot the caller took, and return its value. A handler error or timeout raises
        FunctionError with Lambda's error object; only cancellation propagates as itself. With
        tracing on, the invocation's span is current while the handler runs."""
        if self.environments is not None:
            return await self._call_environment(event, ctx)
        request_id = ctx.aws_request_id
        concurrency = self.concurrency
        watchdog = self._watchdog
        thread: concurrent.futures.Future[Any] | None = None
        # The HTTP adapter has set it already for the whole request; setting it again costs.
        token = (
            None if current_request_id.get() == request_id else current_request_id.set(request_id)
        )
        traced = tracing.invocation(self.info, ctx) if tracing.enabled else None
        error: dict[str, Any] | None = None
        concurrency.running += 1
        loop = get_running_loop()
        task = current_task(loop)
        assert task is not None
        if watchdog.timer is None or watchdog.loop is not loop:
            watchdog.arm(loop, ctx.deadline)
        watchdog.running[ctx] = (task, task.cancelling())
        try:
            if self.is_async:
                return await self.handler(event, ctx)
            call = functools.partial(contextvars.copy_context().run, self.handler, event, ctx)
            thread = self._executor.submit(call)
            return await asyncio.wrap_future(thread, loop=loop)
        except asyncio.CancelledError:
            if not watchdog.timed_out(ctx):
                raise
            self._errors.inc()
            error = timeout_object(self.timeout, request_id)
            raise FunctionError(error) from None
        except Exception as exc:
            self._errors.inc()
            error = error_object(exc, request_id)
            if self.is_async and isinstance(exc, RuntimeError) and str(exc).startswith(_NESTED):
                self._hint_nested_loop()
            raise FunctionError(error) from None
        finally:
            # The context was made as the invocation started: its deadline says when.
            self._duration.observe(time.monotonic() - ctx.deadline + self.timeout)
            watchdog.running.pop(ctx, None)
            if watchdog.expired:  # cut, but the handler swallowed the cancellation
                watchdog.expired.pop(ctx, None)
            if thread is not None and not thread.done():
                self._linger(thread, request_id, loop)
            else:
                concurrency.running -= 1
                if concurrency.limit is not None:
                    concurrency.release()
            if token is not None:
                current_request_id.reset(token)
            if traced is not None:
                traced.end(error)
