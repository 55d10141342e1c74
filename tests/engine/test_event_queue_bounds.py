"""The local event queues (memory and SQLite) are bounded in events and in payload bytes: a full
queue refuses with Lambda's 429 and a Retry-After, the refusal is counted and logged at a bounded
rate, and the queue takes events again once it drains."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from streamfn import App, ConfigError, Context, TooManyRequests, asyncq
from streamfn.asyncq import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_EVENTS,
    QUEUE_FULL_REASON,
    RETRY_AFTER,
    DeadLetter,
    MemoryEventQueue,
    QueuedEvent,
    SQLiteEventQueue,
)
from streamfn.testing import wait_until

MakeQueue = Callable[..., MemoryEventQueue | SQLiteEventQueue]


@pytest.fixture(params=["memory", "sqlite"])
def make_queue(request: pytest.FixtureRequest, tmp_path: Path) -> MakeQueue:
    """A queue of either kind with the given bounds; SQLite ones share one state directory."""

    def make(**bounds: int) -> MemoryEventQueue | SQLiteEventQueue:
        if request.param == "memory":
            return MemoryEventQueue(**bounds)
        return SQLiteEventQueue(tmp_path / "state", **bounds)

    return make


def event(n: int, size: int = 10) -> QueuedEvent:
    """An event whose payload (a JSON string) is ``size`` bytes long."""
    now = time.time()
    return QueuedEvent(f"r{n}", "f", None, b'"' + b"x" * (size - 2) + b'"', now, due_at=now)


async def receive(queue: MemoryEventQueue | SQLiteEventQueue, count: int) -> list[QueuedEvent]:
    events: list[QueuedEvent] = []
    async with asyncio.timeout(10):
        while len(events) < count:
            events += await queue.receive(count - len(events))
    return events


async def test_a_full_queue_refuses_with_429_and_a_retry_after(make_queue: MakeQueue) -> None:
    async with make_queue(max_events=3) as queue:
        for n in range(3):
            await queue.put(event(n))
        with pytest.raises(TooManyRequests) as refused:
            await queue.put(event(3))
        assert queue.depth() == 3
    error = refused.value
    assert (error.status, error.error_type) == (429, "TooManyRequestsException")
    assert error.reason == QUEUE_FULL_REASON
    assert error.retry_after == RETRY_AFTER
    assert "asynchronous event queue is full (3 events" in str(error)


async def test_the_byte_bound_counts_payload_bytes(make_queue: MakeQueue) -> None:
    async with make_queue(max_bytes=1000) as queue:
        for n in range(4):
            await queue.put(event(n, size=250))
        assert queue.size() == 1000
        with pytest.raises(TooManyRequests, match="1000 bytes"):
            await queue.put(event(4, size=2))
        assert (queue.depth(), queue.size()) == (4, 1000)


async def test_an_empty_queue_takes_an_event_larger_than_the_byte_bound(
    make_queue: MakeQueue,
) -> None:
    async with make_queue(max_bytes=100) as queue:
        await queue.put(event(0, size=500))
        with pytest.raises(TooManyRequests):
            await queue.put(event(1, size=2))


async def test_a_drained_queue_takes_events_again(make_queue: MakeQueue) -> None:
    async with make_queue(max_events=2) as queue:
        await queue.put(event(0))
        await queue.put(event(1))
        first, second = await receive(queue, 2)
        await queue.retry(first, 0.0)  # retried: still queued, still counted
        with pytest.raises(TooManyRequests):
            await queue.put(event(2))
        await queue.delete(second)
        await queue.put(event(2))
        with pytest.raises(TooManyRequests):
            await queue.put(event(3))
        (again,) = await receive(queue, 1)
        letter = DeadLetter(again.request_id, "f", None, b'""', 0.0, 1, 0.0, "X", {})
        await queue.dead_letter(again, letter)
        await queue.put(event(3))
        assert queue.depth() == 2


async def test_sqlite_counts_the_events_it_reopens_with_even_beyond_the_bounds(
    tmp_path: Path,
) -> None:
    async with SQLiteEventQueue(tmp_path) as queue:
        for n in range(3):
            await queue.put(event(n, size=100))
    async with SQLiteEventQueue(tmp_path, max_events=2) as queue:
        assert (queue.depth(), queue.size()) == (3, 300)  # stored: none is dropped
        with pytest.raises(TooManyRequests):
            await queue.put(event(3))
        for queued in await receive(queue, 3):
            await queue.delete(queued)
        assert (queue.depth(), queue.size()) == (0, 0)
        await queue.put(event(3))


async def test_a_failed_write_gives_its_room_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = asyncq.transaction

    def full_disk(conn: sqlite3.Connection, statements: Any) -> None:
        monkeypatch.setattr(asyncq, "transaction", real)
        raise sqlite3.OperationalError("database or disk is full")

    async with SQLiteEventQueue(tmp_path, max_events=1) as queue:
        monkeypatch.setattr(asyncq, "transaction", full_disk)
        with pytest.raises(sqlite3.OperationalError):
            await queue.put(event(0, size=50))
        assert (queue.depth(), queue.size()) == (0, 0)
        await queue.put(event(1))
        assert queue.depth() == 1


def test_the_defaults_and_the_app_settings() -> None:
    assert (DEFAULT_MAX_EVENTS, DEFAULT_MAX_BYTES) == (100_000, 256 * 1024 * 1024)
    app = App(async_queue_max_events=5, async_queue_max_bytes=4096)
    queue = app._event_queue()
    assert isinstance(queue, MemoryEventQueue)
    assert (queue.max_events, queue.max_bytes) == (5, 4096)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"async_queue_max_events": 0}, "async_queue_max_events=0 is invalid"),
        ({"async_queue_max_bytes": -1}, "async_queue_max_bytes=-1 is invalid"),
        ({"async_queue_max_events": 1.5}, "async_queue_max_events=1.5 is invalid"),
    ],
)
def test_bounds_are_validated_at_construction(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        App(**settings)
    with pytest.raises(ConfigError, match="max_events=0 is invalid"):
        MemoryEventQueue(max_events=0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def held_app() -> AsyncIterator[tuple[App, asyncio.Event]]:
    """An app whose queue holds two events, with a function that waits for the gate."""
    app = App("bounded", async_queue_max_events=2)
    gate = asyncio.Event()

    @app.function()
    async def f(event: Any, context: Context) -> None:
        await gate.wait()

    async with app.running():
        yield app, gate
        gate.set()


async def test_refusals_are_counted_logged_once_summarised_and_the_recovery_said(
    held_app: tuple[App, asyncio.Event], caplog: pytest.LogCaptureFixture
) -> None:
    app, gate = held_app
    clock = Clock()
    app.invoker.refusals.clock = clock
    caplog.set_level(logging.INFO, logger="streamfn.async")
    await app.invoke_async("f", {"n": 0})
    await app.invoke_async("f", {"n": 1})
    for _ in range(3):
        with pytest.raises(TooManyRequests):
            await app.invoke_async("f", {"n": 2})
    assert 'streamfn_async_queue_refused_total{function="f"} 3' in app.metrics.render()
    lines = [r for r in caplog.records if r.name == "streamfn.async"]
    assert [r.getMessage() for r in lines] == [
        "asynchronous event queue full; Event invocations are refused with 429 until it drains"
    ]
    assert lines[0].levelno == logging.WARNING
    assert lines[0].__dict__["errorType"] == "TooManyRequestsException"
    assert "queue is full" in lines[0].__dict__["errorMessage"]

    clock.now = 61.0
    with pytest.raises(TooManyRequests):
        await app.invoke_async("f", {"n": 2})
    summary = [r for r in caplog.records if r.name == "streamfn.async"][-1]
    assert summary.getMessage().endswith("[3 times in 61 s]")
    assert summary.__dict__["repeated"] == 3

    gate.set()
    await wait_until(lambda: app.invoker.queue.depth() == 0, timeout=10)
    await app.invoke_async("f", {"n": 3})
    recovered = [r for r in caplog.records if r.name == "streamfn.async"][-1]
    assert recovered.getMessage() == "asynchronous event queue takes events again"
    assert recovered.levelno == logging.INFO
    assert 'streamfn_async_queue_refused_total{function="f"} 4' in app.metrics.render()
