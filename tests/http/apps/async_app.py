"""Asynchronous invocation under ``streamfn run``, for the kill -9 and ``streamfn dlq`` tests.

Environment: ``TEST_OUT`` is a file each completed invocation appends its event's ``id`` to;
``TEST_HOLD=1`` makes ``record`` block, so accepted events stay queued; ``fails`` raises until
the file ``TEST_HEALTHY`` exists."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from streamfn import App, Context

app = App("async-cli", async_time_scale=0.001)


def _done(event: dict[str, Any]) -> None:
    with open(os.environ["TEST_OUT"], "a") as out:
        out.write(f"{event['id']}\n")


@app.function(timeout=900, reserved_concurrency=4)
async def record(event: dict[str, Any], context: Context) -> None:
    if os.environ.get("TEST_HOLD") == "1":
        await asyncio.Event().wait()
    _done(event)


@app.function(maximum_retry_attempts=0)
def fails(event: dict[str, Any], context: Context) -> None:
    if not Path(os.environ["TEST_HEALTHY"]).exists():
        raise ValueError(f"unhealthy {event['id']}")
    _done(event)
