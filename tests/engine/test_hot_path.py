"""The per-invocation fast paths (issue 16): the partition's wake-up signal, a lane handing over
a whole piece as its batch, the pooled request ids, and timeouts that still cut a handler when
every batch is one record."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

from streamfn import App, Batch, Context
from streamfn.batcher import Lane, Signal
from streamfn.checkpoint import Checkpoint
from streamfn.dispatch import new_request_id
from streamfn.record import Record
from streamfn.testing import MemoryDestination, MemorySource, wait_until


async def test_signal_set_wakes_every_waiter_and_a_cancelled_one_wakes_no_other() -> None:
    signal = Signal()
    first, second, third = (asyncio.ensure_future(signal.wait()) for _ in range(3))
    await asyncio.sleep(0)
    second.cancel()
    await asyncio.sleep(0)
    assert not first.done() and not third.done()
    signal.set()
    await asyncio.wait_for(asyncio.gather(first, third), 1)
    assert second.cancelled()
    assert signal.is_set()
    await asyncio.wait_for(signal.wait(), 1)  # set: done at once
    signal.clear()
    late = asyncio.ensure_future(signal.wait())
    await asyncio.sleep(0.01)
    assert not late.done()
    signal.set()
    await asyncio.wait_for(late, 1)


def _records(n: int, size: int = 10) -> list[Record]:
    return [Record("p0", i, b"x" * size) for i in range(n)]


async def test_lane_hands_over_a_piece_of_batch_size_as_its_batch() -> None:
    checkpoint = Checkpoint()
    lane = Lane(2, 60.0, 1000)
    records = _records(2)
    chunk = checkpoint.add(records)
    piece = list(records)
    lane.put(chunk, piece, (0, 2))
    batch, portions = await asyncio.wait_for(lane.next_batch(), 1)  # full: no window wait
    assert batch is piece  # handed over, not copied
    assert portions == [(chunk, (0, 2))]
    assert lane.buffered == 0
    assert checkpoint.settle(portions) and checkpoint.position is records[-1]


async def test_lane_fast_path_leaves_a_piece_over_the_cap_to_the_cut() -> None:
    """A piece of batch_size records over the payload cap is cut as before; a lone record over
    the cap still comes back alone, for the caller to reject."""
    checkpoint = Checkpoint()
    lane = Lane(2, 0.0, 25)
    records = _records(2, size=20)
    lane.put(checkpoint.add(records), list(records), (0, 2))
    first, _ = await lane.next_batch()
    second, _ = await lane.next_batch()
    assert [first, second] == [records[:1], records[1:]]
    oversized = _records(1, size=30)
    lane = Lane(1, 0.0, 25)
    lane.put(checkpoint.add(oversized), list(oversized), (0, 1))
    batch, _ = await lane.next_batch()
    assert batch == oversized


def test_request_ids_are_distinct_random_uuids() -> None:
    ids = [new_request_id() for _ in range(2000)]  # several reads of os.urandom
    assert len(set(ids)) == len(ids)
    for rid in ids:
        parsed = uuid.UUID(rid)
        assert str(parsed) == rid
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_a_forked_child_makes_request_ids_of_its_own() -> None:
    new_request_id()  # the pool holds ids the child must not hand out again
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids and leave at once
        os.write(write, " ".join(new_request_id() for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    parent = [new_request_id() for _ in range(300)]
    assert len(child) == 5
    assert not set(child) & set(parent)


async def test_timeout_cuts_a_handler_at_batch_size_one_and_later_records_run() -> None:
    source = MemorySource()
    source.extend("p0", [b"ok", b"stuck", b"ok", b"ok"])
    dest = MemoryDestination()
    seen: list[bytes] = []
    app = App()

    @app.consume(source, batch_size=1, timeout=0.05, maximum_retry_attempts=0, on_failure=dest)
    async def handler(batch: Batch, context: Context) -> None:
        value = batch[0].value
        if value == b"stuck":
            await asyncio.sleep(10)
        seen.append(value)

    async with app.running():
        records = await dest.wait_for(1)
        await wait_until(lambda: source.committed.get("p0") == 4)
    assert seen == [b"ok", b"ok", b"ok"]
    assert records[0]["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert records[0]["responseContext"]["functionError"] == "Unhandled"
    assert not app.resolve("handler")._watchdog.running


async def test_invoke_with_tail_still_collects_the_invocation_log() -> None:
    app = App()

    @app.function()
    async def talk(event: Any, context: Context) -> str:
        print("hello from the handler")
        return context.aws_request_id

    result = await app.resolve("talk").invoke({}, tail=True)
    assert result.value == result.request_id
    assert result.log is not None
    assert f"START RequestId: {result.request_id}" in result.log
    assert "hello from the handler" in result.log
    assert f"REPORT RequestId: {result.request_id}" in result.log
