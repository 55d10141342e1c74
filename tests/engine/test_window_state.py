"""Tumbling windows kept with the checkpoint (streamfn.source.KeepsWindowState), on an in-memory
source that keeps them as the Kinesis lease does: the commit of a position carries the window as
it stood after that batch, a restart or a crash resumes it, a window whose end passed gets its
final invocation, and one too large for the source stays in memory. Also: no window timer or
final invocation outlives the mapping."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Sequence
from typing import Any

import pytest

from streamfn import App
from streamfn.record import Record
from streamfn.source import KeepsWindowState
from streamfn.testing import MemorySource, wait_until
from streamfn.windows import Window, WindowBatch, WindowedOutcome, decode_window, encode_window

from .conftest import Line

WIDTH = 60


def future_window(offset: int = 0) -> float:
    """The start of a window far enough ahead that no idle timer closes it during a test."""
    return (time.time() // WIDTH + 10 + offset) * WIDTH


class KeptSource(MemorySource):
    """A MemorySource that keeps a window with each commit, as a shard's lease does. While
    ``frozen`` it stores nothing, as a process killed at that moment would."""

    window_limit = 1024 * 1024

    def __init__(self, partitions: Sequence[str] = ("p0",)) -> None:
        super().__init__(partitions)
        self.windows: dict[str, bytes] = {}
        #: (committed offset, window) of every write
        self.writes: list[tuple[int | None, bytes | None]] = []
        self.ended: set[str] = set()
        self.frozen = False
        self.gate: asyncio.Event | None = None

    async def commit_window(
        self, partition: str, record: Record | None, window: bytes | None
    ) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.frozen:
            return
        if record is not None:
            await self.commit(partition, record)
        if window is None:
            self.windows.pop(partition, None)
        else:
            self.windows[partition] = window
        self.writes.append((record.offset if record is not None else None, window))

    def window_state(self, partition: str) -> bytes | None:
        return self.windows.get(partition)

    def finished(self, partition: str) -> bool:
        return partition in self.ended

    def stored(self, partition: str = "p0") -> tuple[float, Any] | None:
        blob = self.windows.get(partition)
        if blob is None:
            return None
        window, state = decode_window(blob)
        return window.start, state


class Sums:
    """A window handler summing record values into ``state["sum"]``; records every call as
    (window start, state in, final, early, values)."""

    def __init__(self, final_work: float = 0.0) -> None:
        self.seen: list[tuple[float, Any, bool, bool, list[int]]] = []
        self.final_work = final_work

    def finals(self) -> list[tuple[float, Any, bool, bool, list[int]]]:
        return [call for call in self.seen if call[2]]

    async def handle(self, batch: WindowBatch, context: Any) -> dict[str, Any]:
        values = [int(r.text) for r in batch]
        self.seen.append(
            (
                batch.window.start,
                batch.state,
                batch.is_final_invoke_for_window,
                batch.is_window_terminated_early,
                values,
            )
        )
        if batch.is_final_invoke_for_window and self.final_work:
            await asyncio.sleep(self.final_work)  # a final invocation that takes a while
        return {"state": {"sum": batch.state.get("sum", 0) + sum(values)}}


def app_for(source: MemorySource, sums: Sums, **settings: Any) -> App:
    app = App()
    app.consume(source, name="sums", tumbling_window=WIDTH, **settings)(sums.handle)
    return app


def test_the_kinesis_sources_keep_window_state() -> None:
    from streamfn.connectors.kinesis import DynamoDBStreamSource, KinesisSource

    assert isinstance(KinesisSource("s"), KeepsWindowState)
    assert isinstance(DynamoDBStreamSource("s"), KeepsWindowState)
    assert not isinstance(MemorySource(), KeepsWindowState)


async def test_final_invocation_of_a_stopped_window_happens_before_running_exits() -> None:
    source = MemorySource()  # keeps no window: a stop ends it early
    start = future_window()
    source.append("p0", b"3", timestamp=start)
    sums = Sums(final_work=0.1)
    app = app_for(source, sums)
    async with app.running():
        await wait_until(lambda: source.committed.get("p0") == 1)
    assert sums.finals() == [(start, {"sum": 3}, True, True, [])]
    outcome = app.mappings[0].outcome
    assert isinstance(outcome, WindowedOutcome) and not outcome._timers


async def test_commit_carries_the_window_as_it_stood_after_the_committed_batch() -> None:
    source = KeptSource()
    first, second = future_window(), future_window(1)
    for value, at in ((1, first), (2, first), (3, first), (4, second)):
        source.append("p0", str(value).encode(), timestamp=at)
    seen: list[tuple[Any, bool, list[int]]] = []
    app = App()

    # batch [1, 2], then batch [3, 4]: 3 joins the first window, whose final invocation then
    # waits for the commit of the first batch, written while the state already counts 3
    @app.consume(source, batch_size=2, max_uncommitted_records=-1, tumbling_window=WIDTH)
    async def sums(batch: WindowBatch, context: Any) -> dict[str, Any]:
        values = [int(r.text) for r in batch]
        seen.append((batch.state, batch.is_final_invoke_for_window, values))
        if batch.is_final_invoke_for_window and batch.window.start == first:
            await wait_until(lambda: bool(source.writes), timeout=5)
        return {"state": {"sum": batch.state.get("sum", 0) + sum(values)}}

    async with app.running():
        await wait_until(lambda: source.committed.get("p0") == 4)
    assert seen[:4] == [
        ({}, False, [1, 2]),
        ({"sum": 3}, False, [3]),
        ({"sum": 6}, True, []),
        ({}, False, [4]),
    ]
    (position, blob), *_ = source.writes
    assert blob is not None
    assert (position, decode_window(blob)) == (1, (Window(first, first + WIDTH), {"sum": 3}))
    assert source.stored() == (second, {"sum": 4})
    assert [call for call in seen if call[1]] == [({"sum": 6}, True, [])]  # kept, not ended


async def test_a_restart_resumes_the_window_and_its_final_has_every_record_once() -> None:
    source = KeptSource()
    first, second = future_window(), future_window(1)
    for i in range(1, 4):
        source.append("p0", str(i).encode(), timestamp=first + i)
    sums = Sums()
    async with app_for(source, sums, batch_size=2).running():
        await wait_until(lambda: source.committed.get("p0") == 3)
    assert sums.finals() == [] and source.stored() == (first, {"sum": 6})

    source.append("p0", b"4", timestamp=first + 4)
    source.append("p0", b"100", timestamp=second)
    again = Sums()
    async with app_for(source, again, batch_size=2).running():
        await wait_until(lambda: source.committed.get("p0") == 5)
        await wait_until(lambda: source.stored() == (second, {"sum": 100}))
    assert again.seen == [
        (first, {"sum": 6}, False, False, [4]),  # resumed with the state committed
        (first, {"sum": 10}, True, False, []),  # its final at the next window: not early
        (second, {}, False, False, [100]),
    ]


async def test_after_a_crash_the_window_resumes_from_the_committed_state() -> None:
    source = KeptSource()
    start = future_window()
    for i in range(1, 5):
        source.append("p0", str(i).encode(), timestamp=start)
    sums = Sums()
    handle = sums.handle

    async def killed_after_the_second_batch(batch: WindowBatch, context: Any) -> Any:
        if [r.text for r in batch] == ["3", "4"]:
            source.frozen = True  # "killed": nothing from now on is stored
        return await handle(batch, context)

    sums.handle = killed_after_the_second_batch  # type: ignore[method-assign]
    async with app_for(source, sums, batch_size=2).running():
        await wait_until(lambda: len(sums.seen) == 2)
    assert source.committed["p0"] == 2 and source.stored() == (start, {"sum": 3})
    source.frozen = False
    source.append("p0", b"100", timestamp=start + WIDTH)
    again = Sums()
    async with app_for(source, again, batch_size=2).running():
        await wait_until(lambda: bool(again.finals()))
    assert again.seen[0] == (start, {"sum": 3}, False, False, [3, 4])  # replayed once more
    assert again.finals() == [(start, {"sum": 10}, True, False, [])]  # each record once


async def test_a_resumed_window_whose_end_passed_gets_its_final_invocation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(WindowedOutcome, "idle_grace", 0.05)
    source = KeptSource()
    past = (time.time() // WIDTH - 5) * WIDTH
    source.append("p0", b"7", timestamp=past)
    source.committed["p0"] = 1
    window = Window(past, past + WIDTH)
    source.windows["p0"] = zlib.compress(encode_window(window, b'{"sum":7}'))
    sums = Sums()
    async with app_for(source, sums).running():
        await wait_until(lambda: bool(sums.finals()) and "p0" not in source.windows)
    assert sums.seen == [(past, {"sum": 7}, True, False, [])]
    assert source.writes == [(None, None)]  # the checkpoint stays; the window is gone


async def test_a_window_too_large_for_the_source_stays_in_memory_and_ends_early_on_stop(
    lines: list[Line],
) -> None:
    source = KeptSource()
    source.window_limit = 10  # bytes: no window fits
    start = future_window()
    for i in range(1, 4):
        source.append("p0", str(i).encode(), timestamp=start)
    sums = Sums()
    async with app_for(source, sums, batch_size=1).running():
        await wait_until(lambda: source.committed.get("p0") == 3)
    assert source.windows == {}
    assert sums.finals() == [(start, {"sum": 6}, True, True, [])]  # as without a kept window
    warnings = [line for line in lines if "kept in memory only" in line["message"]]
    assert len(warnings) == 1  # once per window


async def test_a_partition_read_to_its_end_ends_its_window_on_stop() -> None:
    source = KeptSource()
    start = future_window()
    source.append("p0", b"5", timestamp=start)
    sums = Sums()
    async with app_for(source, sums).running():
        await wait_until(lambda: source.committed.get("p0") == 1)
        source.ended.add("p0")
    assert sums.finals() == [(start, {"sum": 5}, True, True, [])]


async def test_a_final_invocation_cut_short_by_a_stop_leaves_the_window_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(WindowedOutcome, "idle_grace", 0.05)
    source = KeptSource()
    past = (time.time() // WIDTH - 5) * WIDTH
    source.append("p0", b"7", timestamp=past)
    source.committed["p0"] = 1
    source.windows["p0"] = zlib.compress(encode_window(Window(past, past + WIDTH), b'{"sum":7}'))
    finals: list[Any] = []
    app = App()

    @app.consume(source, tumbling_window=WIDTH, retry_base_delay=60.0)
    async def failing(batch: WindowBatch, context: Any) -> dict[str, Any]:
        finals.append(batch.state)
        return {}  # no state: a failure, retried a minute later

    async with app.running():
        await wait_until(lambda: bool(finals))
    assert finals == [{"sum": 7}]
    assert source.stored() == (past, {"sum": 7})  # the next start makes the final again
    assert source.writes == []
