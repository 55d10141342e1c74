"""Calling a handler: the Lambda context, the timeout that cancels it, reserved concurrency, and
the error object Lambda's Python runtime reports when it raises."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import os
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

Handler = Callable[[Any, Context], Any]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

#: The request id of the invocation running in this task, for log lines.
current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "streamfn_request_id", default=None
)


@dataclass(slots=True)
class InvocationResult:
    """What came back from one call: a value, or Lambda's error object in ``error``."""

    request_id: str
    value: Any = None
    error: dict[str, Any] | None = None
    executed_version: str = "$LATEST"


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


class Function:
    """A registered handler and its settings; every invocation path goes through :meth:`invoke`."""

    def __init__(
        self, handler: Handler, config: FunctionConfig, executor: Executor | None = None
    ) -> None:
        self.handler = handler
        self.config = config
        self.name = config.name
        self.is_async = inspect.iscoroutinefunction(handler)
        self._executor = executor
        limit = config.reserved_concurrency
        self._slots = asyncio.Semaphore(limit) if limit else None
        self._throttle_all = limit == 0
        self.running = 0

    def _context(
        self, request_id: str, client_context: ClientContext | None, invoked_arn: str | None
    ) -> Context:
        cfg = self.config
        return Context(
            function_name=cfg.name,
            function_version=cfg.version,
            invoked_function_arn=invoked_arn or cfg.arn,
            memory_limit_in_mb=str(cfg.memory_size),
            aws_request_id=request_id,
            log_group_name=f"/aws/lambda/{cfg.name}",
            log_stream_name=f"{time.strftime('%Y/%m/%d')}/[{cfg.version}]streamfn",
            deadline=time.monotonic() + cfg.timeout,
            client_context=client_context,
        )

    async def try_reserve(self) -> bool:
        """Take a concurrency slot without waiting (the synchronous Invoke path)."""
        if self._throttle_all:
            return False
        if self._slots is None:
            return True
        if self._slots.locked():
            return False
        await self._slots.acquire()  # a free slot and no waiters: returns at once
        return True

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
    ) -> InvocationResult:
        """Run the handler once. Waits for a concurrency slot unless ``reserved`` says the caller
        already took one with :meth:`try_reserve`. Handler errors and timeouts come back in the
        result; only cancellation propagates."""
        if not reserved and self._slots is not None:
            await self._slots.acquire()
        elif not reserved and self._throttle_all:
            await asyncio.Event().wait()  # reserved concurrency 0: never runs, like a stuck ESM
        request_id = request_id or str(uuid.uuid4())
        token = current_request_id.set(request_id)
        self.running += 1
        try:
            ctx = self._context(request_id, client_context, invoked_arn)
            return await self._call(event, ctx, request_id)
        finally:
            self.running -= 1
            current_request_id.reset(token)
            if self._slots is not None:
                self._slots.release()

    async def _call(self, event: Any, ctx: Context, request_id: str) -> InvocationResult:
        timeout = self.config.timeout
        try:
            async with asyncio.timeout(timeout) as scope:
                if self.is_async:
                    value = await self.handler(event, ctx)
                else:
                    loop = asyncio.get_running_loop()
                    call = functools.partial(
                        contextvars.copy_context().run, self.handler, event, ctx
                    )
                    value = await loop.run_in_executor(self._executor, call)
        except TimeoutError as exc:
            if scope.expired():
                return InvocationResult(request_id, error=timeout_object(timeout, request_id))
            return InvocationResult(request_id, error=error_object(exc, request_id))
        except Exception as exc:
            return InvocationResult(request_id, error=error_object(exc, request_id))
        return InvocationResult(request_id, value=value, executed_version=self.config.version)
