"""Dispatcher rules: timeouts, reserved concurrency, sync handlers, the context object."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from streamfn import App, Batch, Context
from streamfn.testing import MemoryDestination, MemorySource, wait_until

from .helpers import FAST_RETRY


async def test_timeout_cancels_handler_and_reports_task_timed_out() -> None:
    app = App()
    cancelled = asyncio.Event()

    @app.function(timeout=0.05)
    async def slow(event: Any, context: Context) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    result = await app.invoke("slow", {})
    assert result.error is not None
    assert result.error["errorMessage"].endswith("Task timed out after 0.05 seconds")
    assert cancelled.is_set()


async def test_timeouts_cut_each_invocation_at_its_own_deadline() -> None:
    """One timer serves all invocations of a function; each is still cut at its own deadline,
    and those that finish in time are left alone."""
    app = App()

    @app.function(timeout=0.2)
    async def sleeper(event: Any, context: Context) -> str:
        await asyncio.sleep(event)
        return "done"

    slow = asyncio.create_task(app.invoke("sleeper", 5))
    await asyncio.sleep(0.1)
    results = await asyncio.gather(
        slow, app.invoke("sleeper", 5), app.invoke("sleeper", 0), app.invoke("sleeper", 0.05)
    )
    assert [r.error is not None for r in results] == [True, True, False, False]
    assert not app.resolve("sleeper")._watchdog.running


async def test_handler_that_swallows_its_timeout_leaves_nothing_behind() -> None:
    app = App()

    @app.function(timeout=0.05)
    async def stubborn(event: Any, context: Context) -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "ignored the cut"
        return "slept"

    result = await app.invoke("stubborn", {})
    assert result.value == "ignored the cut"
    watchdog = app.resolve("stubborn")._watchdog
    assert not watchdog.running and not watchdog.expired


async def test_timeout_in_mapping_counts_as_function_error() -> None:
    source = MemorySource()
    source.append("p0", b"x")
    dest = MemoryDestination()
    app = App()

    @app.consume(source, timeout=0.05, maximum_retry_attempts=0, on_failure=dest)
    async def slow(batch: Batch, context: Context) -> None:
        await asyncio.sleep(10)

    async with app.running():
        records = await dest.wait_for(1)
    assert records[0]["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert records[0]["responseContext"]["functionError"] == "Unhandled"


async def test_reserved_concurrency_caps_concurrent_invocations_across_partitions() -> None:
    parts = [f"p{i}" for i in range(6)]
    source = MemorySource(parts)
    for p in parts:
        source.extend(p, [b"x"] * 5)
    running = peak = done = 0
    app = App()

    @app.consume(source, batch_size=1, reserved_concurrency=2, **FAST_RETRY)
    async def handler(batch: Batch, context: Context) -> None:
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        running -= 1
        done += 1

    async with app.running():
        await wait_until(lambda: done == 30)
    assert peak == 2


async def test_sync_handler_runs_in_a_thread() -> None:
    source = MemorySource()
    source.extend("p0", [b"a", b"b"])
    threads: list[str] = []
    app = App()

    @app.consume(source)
    def handler(batch: Batch, context: Context) -> None:
        threads.append(threading.current_thread().name)

    async with app.running():
        await wait_until(lambda: bool(threads))
    assert threads[0].startswith("streamfn-handler")


async def test_context_has_every_lambda_member() -> None:
    app = App("orders")
    seen: list[Context] = []

    @app.function(timeout=2, memory_size=256)
    async def greet(event: Any, context: Context) -> dict[str, Any]:
        seen.append(context)
        return {"remaining": context.get_remaining_time_in_millis()}

    result = await app.invoke("greet", {"name": "x"})
    ctx = seen[0]
    assert ctx.function_name == "greet"
    assert ctx.function_version == "$LATEST"
    assert ctx.invoked_function_arn.endswith(":function:greet")
    assert ctx.memory_limit_in_mb == "256"
    assert ctx.aws_request_id == result.request_id
    assert ctx.log_group_name == "/aws/lambda/greet"
    assert ctx.log_stream_name
    assert ctx.identity.cognito_identity_id is None
    assert ctx.client_context is None
    assert 0 < result.value["remaining"] <= 2000


async def test_handler_exception_becomes_lambda_error_object() -> None:
    app = App()

    @app.function()
    def boom(event: Any, context: Context) -> None:
        raise KeyError("action")

    result = await app.invoke("boom", {})
    assert result.error is not None
    assert result.error["errorType"] == "KeyError"
    assert result.error["errorMessage"] == "'action'"
    assert result.error["requestId"] == result.request_id
    assert any("boom" in line for line in result.error["stackTrace"])
