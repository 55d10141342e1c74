"""The thread mode's guarantees once a ``def`` handler outlives its timeout: its thread keeps
its concurrency slot and shows in the concurrency gauge until it returns, a mapping retries its
batch only after that, and hung threads never make a healthy function wait for a thread."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from streamfn import App, Context
from streamfn.dispatch import FunctionError
from streamfn.testing import MemoryDestination, MemorySource, wait_until

from . import handlers


def _lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()]


async def test_a_timed_out_thread_holds_its_slot_and_shows_until_it_returns() -> None:
    release = threading.Event()
    app = App(max_threads=2)

    @app.function(timeout=0.05, reserved_concurrency=3)
    def stuck(event: Any, context: Any) -> None:
        release.wait(30)

    @app.function(timeout=5)
    def healthy(event: Any, context: Any) -> str:
        return "fine"

    function = app.functions["stuck"]
    assert function.execution == "thread"  # defined in a function: no environment can load it
    errors = []
    for _ in range(3):  # as the Invoke API calls it: the caller does not wait for the thread
        assert function.try_reserve()
        try:
            await function.call(None, Context(function.info, f"r{_}"))
        except FunctionError as failure:
            errors.append(failure.error["errorType"])
    assert errors == ["Sandbox.Timedout"] * 3
    assert function.running == 3  # streamfn_concurrent_executions counts the hung threads
    assert not function.try_reserve()  # and they hold the reserved slots
    assert (await app.invoke("healthy", None)).value == "fine"  # 3 hung, 2 threads: not full
    release.set()
    await wait_until(lambda: function.running == 0)
    assert function.try_reserve()


async def test_a_timed_out_batch_in_a_thread_is_retried_only_once_its_thread_returned(
    tmp_path: Path,
) -> None:
    log, lock = tmp_path / "log", tmp_path / "lock"
    source = MemorySource()
    failed = MemoryDestination()
    app = App()
    app.consume(
        source,
        name="slow",
        timeout=0.1,
        execution="thread",
        maximum_retry_attempts=1,
        retry_base_delay=0.001,
        retry_max_delay=0.001,
        on_failure=failed,
    )(handlers.sleepy)
    source.append("p0", json.dumps({"log": str(log), "lock": str(lock), "sleep": 0.5}).encode())
    async with app.running():
        await failed.wait_for(1)
    kinds = [line[0] for line in _lines(log)]
    assert kinds == ["start", "stop", "start", "stop"]  # never two copies at once
    assert app.functions["slow"].running == 0
