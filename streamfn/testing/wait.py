"""Waiting on a condition with a deadline: the one way tests wait, never a bare sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait_until(
    condition: Callable[[], object], timeout: float = 15.0, *, interval: float = 0.005
) -> None:
    """Return once ``condition()`` is true; raise ``TimeoutError`` after ``timeout`` seconds.

    The condition is polled every ``interval`` seconds, so it must be cheap and must not
    block. Example::

        await wait_until(lambda: len(destination.records) == 3, timeout=5)
    """
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(interval)
