"""The records a partition holds settled but not committed are bounded
(``max_uncommitted_records``, default one batch): while a commit is on its way the next
invocation waits, so a crash re-delivers at most the batches in flight plus the bound. With
-1 the commit trails freely."""

from __future__ import annotations

import asyncio

import pytest

from streamfn import App, Batch, ConfigError, Context, MappingConfig
from streamfn.record import Record
from streamfn.testing import MemorySource, wait_until


class SlowCommits(MemorySource):
    """A memory source whose commits wait until the test lets them through."""

    def __init__(self) -> None:
        super().__init__(("p0",))
        self.gate = asyncio.Event()
        self.waiting = 0

    async def commit(self, partition: str, record: Record) -> None:
        self.waiting += 1
        await self.gate.wait()
        self.waiting -= 1
        await super().commit(partition, record)


async def settle_the_loop() -> None:
    """Let every ready task run to its next wait (all in memory: a few loop turns)."""
    for _ in range(50):
        await asyncio.sleep(0)


def app_on(source: SlowCommits, batches: list[int], **settings: object) -> App:
    app = App("bound")

    @app.consume(source, batch_size=10, **settings)  # type: ignore[arg-type]
    async def handler(batch: Batch, context: Context) -> None:
        batches.append(len(batch))

    return app


async def test_the_next_batch_waits_while_a_batch_of_settled_records_is_not_committed() -> None:
    source, batches = SlowCommits(), []
    source.extend("p0", [b"%d" % i for i in range(50)])
    app = app_on(source, batches)
    async with asyncio.timeout(10), app.running():
        await wait_until(lambda: source.waiting == 1)
        await settle_the_loop()
        assert batches == [10]  # 10 settled, none committed: the lane waits for the commit
        source.gate.set()
        await wait_until(lambda: source.committed.get("p0") == 50)
    assert batches == [10] * 5


async def test_a_larger_bound_lets_that_many_settled_records_wait() -> None:
    source, batches = SlowCommits(), []
    source.extend("p0", [b"%d" % i for i in range(50)])
    app = app_on(source, batches, max_uncommitted_records=30)
    async with asyncio.timeout(10), app.running():
        await wait_until(lambda: len(batches) == 3 and source.waiting == 1)
        await settle_the_loop()
        assert batches == [10, 10, 10]
        source.gate.set()
        await wait_until(lambda: source.committed.get("p0") == 50)


async def test_without_a_bound_the_commit_trails_freely() -> None:
    source, batches = SlowCommits(), []
    source.extend("p0", [b"%d" % i for i in range(50)])
    app = app_on(source, batches, max_uncommitted_records=-1)
    async with asyncio.timeout(10), app.running():
        await wait_until(lambda: len(batches) == 5)  # all invoked, the first commit still held
        assert source.committed == {}
        source.gate.set()
        await wait_until(lambda: source.committed.get("p0") == 50)


@pytest.mark.parametrize("value", [0, -2, 1_000_001, 1.5, True])
def test_max_uncommitted_records_is_checked(value: object) -> None:
    with pytest.raises(ConfigError, match="max_uncommitted_records"):
        MappingConfig(max_uncommitted_records=value)  # type: ignore[arg-type]


def test_the_default_bound_is_the_batch_size() -> None:
    assert MappingConfig().resolved(250, 0).max_uncommitted_records == 250
    assert MappingConfig(max_uncommitted_records=-1).resolved(250, 0).max_uncommitted_records == -1
