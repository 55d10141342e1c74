"""Queue outcome policy (SQS semantics): delete on success, failed messages come back, partial
batch responses release only the listed messages, filtered-out messages are deleted."""

from __future__ import annotations

from typing import Any

import pytest

from streamfn import App, Batch, ConfigError, Context
from streamfn.testing import MemoryDestination, MemoryQueue, wait_until


async def test_successful_batch_is_deleted() -> None:
    queue = MemoryQueue()
    for i in range(25):
        queue.send(b"%d" % i)
    app = App()

    @app.consume(queue)
    async def handler(batch: Batch, context: Context) -> None:
        assert len(batch) <= 10

    async with app.running():
        await wait_until(lambda: len(queue.deleted) == 25)
    assert not queue.visible and not queue.in_flight


async def test_raised_error_returns_the_whole_batch_to_the_queue() -> None:
    queue = MemoryQueue()
    queue.send(b"a")
    queue.send(b"b")
    calls = 0
    app = App()

    @app.consume(queue, batch_size=2, maximum_batching_window=1)
    async def handler(batch: Batch, context: Context) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("bad")

    async with app.running():
        await wait_until(lambda: len(queue.deleted) == 2)
    assert queue.receives == {0: 2, 1: 2}


async def test_partial_batch_response_releases_only_listed_messages() -> None:
    queue = MemoryQueue()
    for i in range(4):
        queue.send(b"%d" % i)
    batches: list[list[int]] = []
    app = App()

    @app.consume(
        queue,
        batch_size=4,
        maximum_batching_window=1,
        function_response_types=["ReportBatchItemFailures"],
    )
    async def handler(batch: Batch, context: Context) -> dict[str, Any]:
        batches.append([r.offset for r in batch])
        if len(batches) == 1:
            return {"batchItemFailures": [{"itemIdentifier": "msg-1"}, {"itemIdentifier": "msg-3"}]}
        return {"batchItemFailures": []}

    async with app.running():
        await wait_until(lambda: len(queue.deleted) == 4)
    assert batches == [[0, 1, 2, 3], [1, 3]]


@pytest.mark.parametrize(
    "failures",
    [
        [{"itemIdentifier": ""}],
        [{"itemIdentifier": None}],
        [{"itemIdentifier": "msg-99"}],
        # One invalid entry returns the whole batch, whatever the others name.
        [{"itemIdentifier": "msg-1"}, {"itemIdentifier": "msg-99"}],
        [{"itemIdentifier": "msg-1"}, {"itemIdentifier": None}],
        [{"itemIdentifier": "msg-1"}, {"messageId": "msg-0"}],
        ["msg-1"],  # a bare messageId, not an object with an itemIdentifier
        [{"itemIdentifier": "msg-1"}, "msg-0"],
    ],
)
async def test_invalid_item_identifier_returns_the_whole_batch(failures: list[Any]) -> None:
    queue = MemoryQueue()
    queue.send(b"a")
    queue.send(b"b")
    calls = 0
    app = App()

    @app.consume(
        queue,
        batch_size=2,
        maximum_batching_window=1,
        function_response_types=["ReportBatchItemFailures"],
    )
    async def handler(batch: Batch, context: Context) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return {"batchItemFailures": failures if calls == 1 else []}

    async with app.running():
        await wait_until(lambda: len(queue.deleted) == 2)
    assert queue.receives == {0: 2, 1: 2}


async def test_messages_matching_no_filter_are_deleted_without_invocation() -> None:
    queue = MemoryQueue()
    queue.send(b'{"type": "order"}')
    queue.send(b"plain text")
    queue.send(b'{"type": "ping"}')
    seen: list[bytes] = []
    app = App()

    @app.consume(queue, filter_criteria=[{"body": {"type": ["order"]}}])
    async def handler(batch: Batch, context: Context) -> None:
        seen.extend(r.value for r in batch)

    async with app.running():
        await wait_until(lambda: len(queue.deleted) == 3)
    assert seen == [b'{"type": "order"}']


async def test_several_pollers_share_the_queue() -> None:
    queue = MemoryQueue(pollers=4)
    for i in range(200):
        queue.send(b"%d" % i)
    pollers: set[str] = set()
    app = App()

    @app.consume(queue, batch_size=5)
    async def handler(batch: Batch, context: Context) -> None:
        pollers.add(batch.partition)

    async with app.running():
        await wait_until(lambda: len(queue.deleted) == 200)
    assert sorted({r.offset for r in queue.deleted}) == list(range(200))


def test_on_failure_is_refused_for_queue_sources() -> None:
    app = App()
    with pytest.raises(ConfigError, match="redrive policy"):
        app.consume(MemoryQueue(), on_failure=MemoryDestination(), name="f")(lambda e, c: None)
