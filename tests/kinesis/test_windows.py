"""Tumbling windows: state carried between invocations, the final invocation (next window,
idle shard, stopped shard), a response without state counting as a failure, the 1 MB early
end, and the Lambda event fields, in-memory and over Kinesis."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from streamfn import App
from streamfn.testing import MemorySource, wait_until
from streamfn.windows import STATE_LIMIT, WindowBatch, WindowedOutcome

from . import FAST_RETRY, create_stream, kinesis_source, put

WIDTH = 60


def future_window(offset: int = 0) -> float:
    """The start of a window far enough ahead that no idle timer closes it during a test."""
    return (time.time() // WIDTH + 10 + offset) * WIDTH


class Calls:
    """A counting window handler that records what every invocation saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, Any, bool, bool, list[str]]] = []

    def finals(self) -> list[tuple[float, Any, bool, bool, list[str]]]:
        return [call for call in self.seen if call[2]]

    async def handle(self, batch: WindowBatch, context: Any) -> dict[str, Any]:
        values = [r.text for r in batch]
        self.seen.append(
            (
                batch.window.start,
                batch.state,
                batch.is_final_invoke_for_window,
                batch.is_window_terminated_early,
                values,
            )
        )
        return {"state": {"n": batch.state.get("n", 0) + len(values)}}


async def test_state_is_carried_and_the_next_window_triggers_the_final_invocation() -> None:
    source = MemorySource()
    first, second = future_window(), future_window(1)
    for i in range(5):
        source.append("p0", f"a{i}".encode(), timestamp=first + i)
    source.append("p0", b"b0", timestamp=second)
    calls = Calls()
    app = App()
    app.consume(source, name="count", batch_size=2, tumbling_window=WIDTH)(calls.handle)
    async with app.running():
        await wait_until(lambda: source.committed.get("p0") == 6)
    assert calls.seen[:5] == [  # (a stopping shard may then end the second window early)
        (first, {}, False, False, ["a0", "a1"]),
        (first, {"n": 2}, False, False, ["a2", "a3"]),
        (first, {"n": 4}, False, False, ["a4"]),
        (first, {"n": 5}, True, False, []),
        (second, {}, False, False, ["b0"]),
    ]


async def test_a_stopped_shard_ends_its_window_early_with_its_state() -> None:
    source = MemorySource()
    start = future_window()
    source.append("p0", b"x", timestamp=start)
    calls = Calls()
    app = App()
    app.consume(source, name="count", tumbling_window=WIDTH)(calls.handle)
    async with app.running():
        await wait_until(lambda: source.committed.get("p0") == 1)
    await wait_until(lambda: bool(calls.finals()))
    assert calls.finals() == [(start, {"n": 1}, True, True, [])]


async def test_response_without_state_is_a_failure_and_is_retried() -> None:
    source = MemorySource()
    source.append("p0", b"x", timestamp=future_window())
    states: list[Any] = []
    app = App()

    @app.consume(source, tumbling_window=WIDTH, **FAST_RETRY)
    async def forgetful(batch: WindowBatch, context: Any) -> dict[str, Any]:
        states.append(batch.state)
        if len(states) == 1:
            return {"batchItemFailures": []}  # no state: Lambda counts this as a failure
        return {"state": {"done": True}}

    async with app.running():
        await wait_until(lambda: source.committed.get("p0") == 1)
    assert states[:2] == [{}, {}]
    assert app.mappings[0].outcome.errors >= 1


async def test_state_over_one_megabyte_terminates_the_window_early() -> None:
    source = MemorySource()
    start = future_window()
    for i in range(3):
        source.append("p0", f"r{i}".encode(), timestamp=start + i)
    seen: list[tuple[bool, bool, int, list[str]]] = []
    app = App()

    @app.consume(source, batch_size=1, tumbling_window=WIDTH)
    async def hoarder(batch: WindowBatch, context: Any) -> dict[str, Any]:
        values = [r.text for r in batch]
        seen.append(
            (
                batch.is_final_invoke_for_window,
                batch.is_window_terminated_early,
                len(batch.state.get("blob", "")),
                values,
            )
        )
        return {"state": {"blob": "x" * (STATE_LIMIT if values == ["r1"] else 10)}}

    async with app.running():
        await wait_until(lambda: source.committed.get("p0") == 3)
    assert seen[:4] == [
        (False, False, 0, ["r0"]),
        (False, False, 10, ["r1"]),
        (True, True, STATE_LIMIT, []),  # the window ends early, with the state it reached
        (False, False, 0, ["r2"]),  # and its remaining records start afresh
    ]


async def test_idle_window_gets_its_final_invocation_after_its_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(WindowedOutcome, "idle_grace", 0.05)
    source = MemorySource()
    source.append("p0", b"x")  # arrives now; the 1 s window ends within a second
    calls = Calls()
    app = App()
    app.consume(source, name="count", tumbling_window=1)(calls.handle)
    async with app.running():
        await wait_until(lambda: bool(calls.finals()), timeout=5)
        [(start, state, _, early, records)] = calls.finals()
    assert (state, early, records) == ({"n": 1}, False, [])
    assert start + 1 <= time.time()  # after the window's end, not before


async def test_lambda_event_carries_the_window_fields() -> None:
    source = MemorySource()
    start = future_window()
    source.append("p0", b"x", timestamp=start + 1)
    events: list[dict[str, Any]] = []
    app = App()

    @app.consume(source, event_format="lambda", tumbling_window=WIDTH)
    async def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        events.append(event)
        return {"state": {"seen": len(event["Records"])}}

    async with app.running():
        await wait_until(lambda: source.committed.get("p0") == 1)
    event = events[0]
    assert len(event.pop("Records")) == 1
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + WIDTH))
    assert event == {
        "window": {"start": iso, "end": end},
        "state": {},
        "shardId": "p0",
        "eventSourceARN": "memory://p0",
        "isFinalInvokeForWindow": False,
        "isWindowTerminatedEarly": False,
    }


async def test_tumbling_window_over_kinesis(
    moto_endpoint: str, tmp_path: Path, aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(WindowedOutcome, "idle_grace", 0.05)
    stream = create_stream(moto_endpoint, 1)
    put(moto_endpoint, stream, [str(i) for i in range(20)])
    events: list[dict[str, Any]] = []
    app = App()

    @app.consume(
        kinesis_source(moto_endpoint, stream, tmp_path),
        batch_size=5,
        event_format="lambda",
        tumbling_window=1,
    )
    async def total(event: dict[str, Any], context: Any) -> dict[str, Any]:
        events.append(event)
        return {"state": {"n": event["state"].get("n", 0) + len(event["Records"])}}

    def finals() -> list[dict[str, Any]]:
        return [e for e in events if e["isFinalInvokeForWindow"]]

    async with app.running():
        await wait_until(lambda: sum(e["state"].get("n", 0) for e in finals()) == 20, timeout=10)
    assert all(e["eventSourceARN"].endswith(f":stream/{stream}") for e in events)
    assert all(e["shardId"] == events[0]["shardId"] for e in events)
    assert all(not e["Records"] for e in finals())
