"""Shared helpers for engine tests against the in-memory source."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

FAST_RETRY = {"retry_base_delay": 0.001, "retry_max_delay": 0.01}


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for ``condition`` to hold, failing the test after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.002)
