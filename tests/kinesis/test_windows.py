"""Tumbling windows: state carried between invocations, the final invocation (next window,
idle shard, stopped shard), a response without state counting as a failure, the 1 MB early
end, and the Lambda event fields, in-memory and over Kinesis; over Kinesis the window kept in
the shard's lease, resumed after a worker is killed (SQLite lease file) and by the next owner
(DynamoDB lease table)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from streamfn import App
from streamfn.connectors.kinesis import KinesisSource
from streamfn.connectors.kinesis.leases import DynamoDBLeaseStore
from streamfn.record import Record
from streamfn.testing import MemorySource, wait_until
from streamfn.windows import STATE_LIMIT, Window, WindowBatch, WindowedOutcome, decode_window

from . import FAST_READ, FAST_RETRY, create_stream, kinesis_source, put, unique

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


# -- the window kept with the checkpoint ----------------------------------------------------


class Shifted(KinesisSource):
    """Every record arrives at ``start`` (``next``: a window later): moto stamps arrival with
    the wall clock, and a window boundary must not fall inside a test."""

    start = 0.0

    def _records(self, shard: str, raw: list[Any]) -> list[Record]:
        records = super()._records(shard, raw)
        for rec in records:
            rec.timestamp = self.start + (WIDTH if rec.value == b"next" else 0)
        return records


class Sums:
    """Sums the numeric values of a window into ``state["sum"]``; records every invocation as
    (window start, state in, final, values)."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, Any, bool, list[str]]] = []

    def finals(self) -> list[tuple[float, Any, bool, list[str]]]:
        return [call for call in self.seen if call[2]]

    async def handle(self, batch: WindowBatch, context: Any) -> dict[str, Any]:
        values = [r.text for r in batch]
        self.seen.append(
            (batch.window.start, batch.state, batch.is_final_invoke_for_window, values)
        )
        total = sum(int(v) for v in values if v.isdigit())
        return {"state": {"sum": batch.state.get("sum", 0) + total}}


def shifted(endpoint: str, stream: str, state: Path, start: float, **options: Any) -> Shifted:
    source = Shifted(stream, endpoint_url=endpoint, state_dir=state, **{**FAST_READ, **options})
    source.start = start
    return source


def stored_window(lease_file: Path) -> tuple[str, tuple[Window, Any] | None]:
    """(checkpoint, decoded window) of the only lease of an SQLite lease file."""
    with contextlib.closing(sqlite3.connect(lease_file)) as db:
        [(checkpoint, blob)] = db.execute("SELECT checkpoint, window_state FROM leases").fetchall()
    return checkpoint, decode_window(blob) if blob is not None else None


WINDOW_WORKER = """
import asyncio, json, os
from streamfn import App
from streamfn.connectors.kinesis import KinesisSource

START = float(os.environ["KX_START"])
out = open(os.environ["KX_OUT"], "a", buffering=1)


class Shifted(KinesisSource):
    def _records(self, shard, raw):
        records = super()._records(shard, raw)
        for rec in records:
            rec.timestamp = START + (60 if rec.value == b"next" else 0)
        return records


app = App("worker")
source = Shifted(
    os.environ["KX_STREAM"],
    endpoint_url=os.environ["KX_ENDPOINT"],
    state_dir=os.environ["KX_STATE"],
    idle_interval=0.05,
    shard_sync_interval=1.0,
)


@app.consume(source, batch_size=2, tumbling_window=60)
async def sums(batch, context):
    values = [r.text for r in batch]
    out.write(json.dumps([batch.state, batch.is_final_invoke_for_window, values]) + "\\n")
    if "hang" in values:  # in flight, never committed, when the worker is killed
        await asyncio.Event().wait()
    total = sum(int(v) for v in values if v.isdigit())
    return {"state": {"sum": batch.state.get("sum", 0) + total}}
"""


@contextlib.contextmanager
def killed_at_the_end(log: Path, script: Path, env: dict[str, str]) -> Iterator[None]:
    """``streamfn run script:app`` in a process of its own, killed with SIGKILL at the end."""
    with open(log, "wb") as errors:
        worker = subprocess.Popen(
            [sys.executable, "-m", "streamfn.cli", "run", f"{script}:app", "--no-http"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        try:
            yield
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)


async def test_a_worker_killed_mid_window_leaves_the_window_for_the_next_start(
    moto_endpoint: str, tmp_path: Path, aws_env: None
) -> None:
    stream = create_stream(moto_endpoint, 1)
    start = future_window()
    put(moto_endpoint, stream, [*map(str, range(1, 10)), "hang"])
    script, out, state = tmp_path / "worker.py", tmp_path / "worker.out", tmp_path / "state"
    script.write_text(WINDOW_WORKER)
    env = {
        **os.environ,
        "KX_START": repr(start),
        "KX_OUT": str(out),
        "KX_STREAM": stream,
        "KX_ENDPOINT": moto_endpoint,
        "KX_STATE": str(state),
    }
    with killed_at_the_end(tmp_path / "worker.log", script, env):
        await wait_until(lambda: out.exists() and "hang" in out.read_text(), timeout=30)
    before = [json.loads(line) for line in out.read_text().splitlines()]
    assert not any(final for _, final, _ in before)
    assert before[-1] == [{"sum": 36}, False, ["9", "hang"]]  # in flight when killed
    lease_file = state / f"kinesis-{stream}.leases.sqlite3"
    checkpoint, window = stored_window(lease_file)
    assert window == (Window(start, start + WIDTH), {"sum": 36})  # as committed with "8"

    put(moto_endpoint, stream, ["next"])
    sums = Sums()  # another worker: it takes the lease once the dead one's expired
    app = App()
    source = shifted(moto_endpoint, stream, state, start, lease_duration=1.0)
    app.consume(source, batch_size=2, tumbling_window=WIDTH)(sums.handle)
    async with app.running():
        await wait_until(lambda: bool(sums.finals()), timeout=20)
    assert sums.seen[:3] == [
        (start, {"sum": 36}, False, ["9", "hang"]),  # resumed; the uncommitted batch again
        (start, {"sum": 45}, True, []),  # every record of the window exactly once
        (start + WIDTH, {}, False, ["next"]),
    ]
    assert int(stored_window(lease_file)[0]) > int(checkpoint)


async def test_a_new_lease_owner_resumes_the_window_from_the_dynamodb_lease(
    moto_endpoint: str, tmp_path: Path, aws_env: None
) -> None:
    stream, table = create_stream(moto_endpoint, 1), unique("leases")
    start = future_window()
    put(moto_endpoint, stream, ["1", "2", "3", "4"])

    def run_as(worker: str) -> tuple[App, Sums]:
        sums = Sums()
        app = App(worker)
        store = DynamoDBLeaseStore(table, endpoint_url=moto_endpoint)
        source = shifted(
            moto_endpoint, stream, tmp_path, start, lease_store=store, worker_id=worker
        )
        app.consume(source, batch_size=3, tumbling_window=WIDTH)(sums.handle)
        return app, sums

    first, first_sums = run_as("a")
    async with first.running():
        await wait_until(lambda: sum(len(v) for *_, v in first_sums.seen) == 4, timeout=20)
    assert first_sums.finals() == []  # a graceful stop keeps the window: no early end
    [item] = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1").scan(
        TableName=table
    )["Items"]
    assert "leaseOwner" not in item  # released
    assert decode_window(item["windowState"]["B"]) == (Window(start, start + WIDTH), {"sum": 10})

    put(moto_endpoint, stream, ["5", "next"])
    second, second_sums = run_as("b")
    async with second.running():
        await wait_until(lambda: bool(second_sums.finals()), timeout=20)
    assert second_sums.seen[:2] == [
        (start, {"sum": 10}, False, ["5"]),
        (start, {"sum": 15}, True, []),
    ]
