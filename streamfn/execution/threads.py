"""The worker threads that run plain ``def`` handlers (``execution="thread"``).

A thread cannot be stopped, so a handler that outlives its timeout keeps running. Two things
keep that from harming anyone else, which a ``ThreadPoolExecutor`` gets wrong:

- a thread whose invocation timed out is *written off*: it stops counting towards the pool's
  size (another thread takes its place), so a healthy function never waits behind hung ones,
  and it exits as soon as its handler returns;
- the threads are daemon threads that nothing joins at exit (``ThreadPoolExecutor`` joins its
  threads in an ``atexit`` hook), so SIGTERM ends the process even with a handler hung.

Its invocation keeps its concurrency slot meanwhile (:mod:`streamfn.dispatch`), so the
thread shows in ``streamfn_concurrent_executions`` until it returns.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

_Item = tuple["Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class HandlerThreads(Executor):
    """At most ``max_threads`` threads not written off; threads start on demand."""

    def __init__(self, max_threads: int = 64, name: str = "streamfn-handler") -> None:
        self.max_threads = max_threads
        self.name = name
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)  # released by a thread when it finishes an item
        self._lock = threading.Lock()
        self._serving = 0  # threads counted towards max_threads
        self._started = 0
        self._written_off: set[Future[Any]] = set()
        self._shutdown = False

    @property
    def written_off(self) -> int:
        """Threads still running a handler whose invocation timed out."""
        return len(self._written_off)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._shutdown:
            raise RuntimeError("cannot run a handler after shutdown")
        future: Future[Any] = Future()
        self._queue.put((future, fn, args, kwargs))
        self._adjust()
        return future

    def _adjust(self) -> None:
        if self._idle.acquire(timeout=0):
            return  # a waiting thread will take it
        with self._lock:
            if self._serving >= self.max_threads:
                return
            self._serving += 1
            self._started += 1
            number = self._started
        threading.Thread(target=self._work, name=f"{self.name}_{number}", daemon=True).start()

    def write_off(self, future: Future[Any]) -> None:
        """``future``'s invocation gave up on it: its thread leaves the pool's count now and
        ends when the handler returns."""
        with self._lock:
            if future.done() or future in self._written_off:
                return
            self._written_off.add(future)
            self._serving -= 1
        if not self._queue.empty():
            self._adjust()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args, kwargs = item
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            with self._lock:
                if future in self._written_off:
                    self._written_off.discard(future)
                    return
            self._idle.release()  # waiting for work again (as ThreadPoolExecutor counts it)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work; threads end when idle. Never waits for a handler: a hung one
        would hold the process forever."""
        self._shutdown = True
        with self._lock:
            count = self._serving
        for _ in range(count):
            self._queue.put(None)
