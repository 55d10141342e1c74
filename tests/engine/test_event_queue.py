"""The event-queue contract (streamfn.testing.contracts) for the two queues in streamfn.asyncq:
the in-memory queue, and the durable SQLite queue, whose events outlive the queue object."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamfn.asyncq import DeadLetter, DeadLetterStore, MemoryEventQueue, SQLiteEventQueue
from streamfn.testing import wait_until
from streamfn.testing.contracts import DurableEventQueueContract, EventQueueContract


class MemoryQueues:
    """The one in-memory queue of a test: its storage is the object itself."""

    def __init__(self) -> None:
        self._queue = MemoryEventQueue()

    def queue(self) -> MemoryEventQueue:
        return self._queue

    async def dead_letters(self, count: int) -> list[DeadLetter]:
        await wait_until(lambda: len(self._queue.dead_letters) >= count)
        return self._queue.dead_letters[:count]


class SQLiteQueues:
    """Queues on one test's state directory, opened one at a time."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def queue(self) -> SQLiteEventQueue:
        return SQLiteEventQueue(self.state_dir)

    async def dead_letters(self, count: int) -> list[DeadLetter]:
        store = DeadLetterStore(self.state_dir)
        try:
            await wait_until(lambda: len(store.letters(limit=count)) == count)
            return store.letters(limit=count)
        finally:
            store.close()


class TestMemoryEventQueue(EventQueueContract):
    @pytest.fixture
    def event_queue_harness(self) -> MemoryQueues:
        return MemoryQueues()


class TestSQLiteEventQueue(DurableEventQueueContract):
    @pytest.fixture
    def event_queue_harness(self, tmp_path: Path) -> SQLiteQueues:
        return SQLiteQueues(tmp_path)
