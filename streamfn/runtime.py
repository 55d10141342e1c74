"""Running a coroutine as the process's main loop: uvloop when it is installed."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def tune_gc() -> None:
    """A worker keeps thousands of records alive in buffers; with the default thresholds the
    young generation is collected every 700 allocations and each pass walks those survivors.
    Measured on the Kafka drain: 2.3x more collections than a raw client loop, ~0.3 s per 1M
    records. Objects alive at start-up (modules, the app) are frozen out of collection."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` as the process's event loop (uvloop when installed), GC tuned for a worker."""
    tune_gc()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
