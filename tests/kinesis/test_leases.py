"""Lease stores behind one protocol (SQLite and DynamoDB), shard discovery planning, and the
coordinator's policy: fair shares, graceful stealing, expiry takeover, handoff on shutdown,
children after parents."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from streamfn.connectors.kinesis.leases import DynamoDBLeaseStore
from streamfn.leases import (
    SHARD_END,
    TRIM_HORIZON,
    Lease,
    LeaseCoordinator,
    LeaseStore,
    ShardInfo,
    SQLiteLeaseStore,
    parents_done,
    plan_leases,
)
from streamfn.testing import wait_until

from . import unique

pytestmark = pytest.mark.usefixtures("aws_env")

LEASE = 0.6  # seconds: short leases keep the policy tests fast


@pytest.fixture(params=["sqlite", "dynamodb"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, moto_endpoint: str
) -> AsyncIterator[LeaseStore]:
    opened: LeaseStore = (
        SQLiteLeaseStore(tmp_path / "leases.sqlite3")
        if request.param == "sqlite"
        else DynamoDBLeaseStore(unique("leases"), endpoint_url=moto_endpoint)
    )
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


# -- the store protocol --------------------------------------------------------------------


async def test_create_inserts_once_and_list_returns_every_field(store: LeaseStore) -> None:
    assert await store.create(Lease("child", checkpoint=TRIM_HORIZON, parents=("a", "b")))
    assert not await store.create(Lease("child"))
    assert await store.create(Lease("root"))
    leases = {lease.key: lease for lease in await store.list()}
    assert leases == {
        "child": Lease("child", None, 0, TRIM_HORIZON, ("a", "b"), None),
        "root": Lease("root"),
    }


async def test_acquire_is_compare_and_set_on_the_counter(store: LeaseStore) -> None:
    await store.create(Lease("s"))
    [seen] = await store.list()
    won = await store.acquire(seen, "w1")
    assert won == Lease("s", "w1", 1)
    assert await store.acquire(seen, "w2") is None  # w2 acted on a stale view
    assert await store.acquire(won, "w2") == Lease("s", "w2", 2)  # e.g. an expired lease


async def test_renew_fails_once_another_worker_took_the_lease(store: LeaseStore) -> None:
    await store.create(Lease("s"))
    held = await store.acquire(Lease("s"), "w1")
    assert held is not None
    renewed = await store.renew(held)
    assert renewed is not None and renewed.counter == 2
    assert await store.acquire(renewed, "w2") is not None
    assert await store.renew(renewed) is None


async def test_checkpoint_is_refused_to_a_worker_that_lost_the_lease(store: LeaseStore) -> None:
    await store.create(Lease("s"))
    held = await store.acquire(Lease("s"), "w1")
    assert held is not None
    assert await store.checkpoint("s", "w1", "100")
    await store.acquire(held, "w2")
    assert not await store.checkpoint("s", "w1", "200")
    [lease] = await store.list()
    assert (lease.owner, lease.checkpoint) == ("w2", "100")


async def test_claim_then_release_hands_the_lease_over_with_its_checkpoint(
    store: LeaseStore,
) -> None:
    await store.create(Lease("s"))
    held = await store.acquire(Lease("s"), "w1")
    assert held is not None
    assert await store.claim(held, "w2")
    assert not await store.claim(held, "w3")  # one claim at a time
    [claimed] = await store.list()
    assert claimed.claimant == "w2" and claimed.owner == "w1"
    assert await store.release(claimed, "300", successor="w2")
    [handed] = await store.list()
    assert handed == Lease("s", "w2", 2, "300", (), None)
    assert not await store.release(claimed, "400")  # w1 no longer owns it
    assert await store.release(handed, SHARD_END)
    [finished] = await store.list()
    assert finished.owner is None and finished.finished


async def test_the_window_goes_with_its_checkpoint_and_comes_back_with_the_lease(
    store: LeaseStore,
) -> None:
    await store.create(Lease("s"))
    held = await store.acquire(Lease("s"), "w1")
    assert held is not None
    assert await store.checkpoint("s", "w1", "100", b"\x00window\xff")
    [listed] = await store.list()
    assert (listed.checkpoint, listed.window) == ("100", None)  # listing leaves it out
    assert await store.release(held, "100", successor="w2")  # a handoff keeps it
    [handed] = await store.list()
    taken = await store.acquire(handed, "w2")
    assert taken is not None and (taken.checkpoint, taken.window) == ("100", b"\x00window\xff")
    assert not await store.checkpoint("s", "w1", "200", b"stale")  # refused with its window
    assert await store.checkpoint("s", "w2", "300")  # no window: removed
    renewed = await store.renew(taken)
    assert renewed is not None and (renewed.checkpoint, renewed.window) == ("300", None)
    assert await store.checkpoint("s", "w2", "400", b"w")
    assert await store.release(renewed, SHARD_END)  # a finished shard's window is closed
    [finished] = await store.list()
    again = await store.acquire(finished, "w3")
    assert again is not None and (again.checkpoint, again.window) == (SHARD_END, None)


async def test_a_lease_holds_a_window_of_the_stores_window_limit(store: LeaseStore) -> None:
    window = os.urandom(store.window_limit)  # incompressible
    await store.create(Lease("s"))
    held = await store.acquire(Lease("s"), "w1")
    assert held is not None
    sequence = "49590338271490256608559692538361571095921575989136588898"  # as long as they get
    assert await store.checkpoint("s", "w1", sequence, window)
    renewed = await store.renew(held)
    assert renewed is not None and renewed.window == window


async def test_a_lease_file_from_before_windows_opens_and_gains_the_column(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(
            "CREATE TABLE leases (key TEXT PRIMARY KEY, owner TEXT, counter INTEGER NOT NULL, "
            "checkpoint TEXT, parents TEXT NOT NULL, claimant TEXT)"
        )
        db.execute("INSERT INTO leases VALUES ('s', 'w1', 3, '100', '[]', NULL)")
        db.commit()
    store = SQLiteLeaseStore(path)
    await store.open()
    try:
        assert await store.list() == [Lease("s", "w1", 3, "100")]
        assert await store.checkpoint("s", "w1", "200", b"window")
        taken = await store.acquire(Lease("s", "w1", 3), "w2")
        assert taken == Lease("s", "w2", 4, "200", window=b"window")
    finally:
        await store.close()
    reopened = SQLiteLeaseStore(path)  # the column is there now: opening again adds nothing
    await reopened.open()
    try:
        assert [lease.checkpoint for lease in await reopened.list()] == ["200"]
    finally:
        await reopened.close()


async def test_delete_is_conditional_on_the_counter(store: LeaseStore) -> None:
    await store.create(Lease("s"))
    held = await store.acquire(Lease("s"), "w1")
    assert not await store.delete(Lease("s"))
    assert held is not None and await store.delete(held)
    assert await store.list() == []


# -- planning from a shard listing ---------------------------------------------------------


def test_children_are_created_after_their_parents_and_wait_for_shard_end() -> None:
    shards = [
        ShardInfo("c1", ("p",)),
        ShardInfo("p", closed=True),
        ShardInfo("c2", ("p",)),
    ]
    creates, retire = plan_leases(shards, [], skip_closed=False)
    assert [lease.key for lease in creates] == ["p", "c1", "c2"]
    assert retire == []
    by_key = {lease.key: lease for lease in creates}
    assert not parents_done(by_key["c1"], by_key)
    by_key["p"] = Lease("p", checkpoint=SHARD_END)
    assert parents_done(by_key["c1"], by_key)


def test_children_found_later_start_at_trim_horizon() -> None:
    existing = [Lease("p")]
    shards = [ShardInfo("p", closed=True), ShardInfo("c1", ("p",)), ShardInfo("c2", ("p",))]
    creates, _ = plan_leases(shards, existing, skip_closed=False)
    assert {(lease.key, lease.checkpoint) for lease in creates} == {
        ("c1", TRIM_HORIZON),
        ("c2", TRIM_HORIZON),
    }


def test_latest_on_an_empty_table_skips_closed_shards() -> None:
    shards = [ShardInfo("p", closed=True), ShardInfo("c", ("p",))]
    creates, _ = plan_leases(shards, [], skip_closed=True)
    assert [(lease.key, lease.checkpoint) for lease in creates] == [("p", SHARD_END), ("c", None)]


def test_finished_parent_is_retired_once_children_have_leases_and_never_recreated() -> None:
    shards = [
        ShardInfo("p", closed=True),
        ShardInfo("c", ("p",), closed=True),
        ShardInfo("g", ("c",)),
    ]
    finished_parent = Lease("p", checkpoint=SHARD_END)
    _, retire = plan_leases(
        shards, [finished_parent, Lease("c", parents=("p",))], skip_closed=False
    )
    assert retire == [finished_parent]
    creates, _ = plan_leases(shards, [Lease("g", parents=("c",))], skip_closed=False)
    assert creates == []  # a descendant has a lease: p and c were read and retired


# -- the coordinator -----------------------------------------------------------------------


class Holder:
    """Records which shards a coordinator would be reading."""

    def __init__(self) -> None:
        self.shards: set[str] = set()
        self.checkpoints: dict[str, str | None] = {}

    async def started(self, leases: Sequence[Lease]) -> None:
        self.shards |= {lease.key for lease in leases}
        self.checkpoints.update({lease.key: lease.checkpoint for lease in leases})

    async def stopped(self, keys: Sequence[str]) -> None:
        self.shards -= set(keys)


@contextlib.asynccontextmanager
async def worker(
    store: LeaseStore, name: str, *, graceful: bool = True
) -> AsyncIterator[tuple[LeaseCoordinator, Holder]]:
    """A coordinator running on its own store connection; ``graceful=False`` dies silently."""
    holder = Holder()
    coordinator = LeaseCoordinator(store, holder, worker_id=name, lease_duration=LEASE)
    await store.open()
    task = asyncio.create_task(coordinator.run())
    try:
        yield coordinator, holder
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if graceful:
            await coordinator.shutdown()
        await store.close()


def sqlite(tmp_path: Path) -> SQLiteLeaseStore:
    return SQLiteLeaseStore(tmp_path / "shared.sqlite3")


FOUR = [ShardInfo(f"shardId-{i}") for i in range(4)]


async def test_second_worker_claims_its_share_without_overlap(tmp_path: Path) -> None:
    async with worker(sqlite(tmp_path), "a") as (a, ha):
        await a.sync(FOUR)
        await wait_until(lambda: len(ha.shards) == 4)
        async with worker(sqlite(tmp_path), "b") as (_, hb):

            def balanced() -> bool:
                assert ha.shards.isdisjoint(hb.shards), "a shard was read by two workers"
                return len(ha.shards) == len(hb.shards) == 2

            await wait_until(balanced, timeout=10 * LEASE)


async def test_expired_lease_is_taken_over_after_about_one_lease_duration(
    tmp_path: Path,
) -> None:
    async with worker(sqlite(tmp_path), "b") as (_, hb):
        async with worker(sqlite(tmp_path), "a", graceful=False) as (a, ha):
            await a.sync(FOUR)
            await wait_until(lambda: len(ha.shards) + len(hb.shards) == 4 and len(hb.shards) > 0)
            lost = set(ha.shards)
        died = time.monotonic()  # a stopped renewing without releasing anything
        await wait_until(lambda: hb.shards == {s.id for s in FOUR}, timeout=10 * LEASE)
    took = time.monotonic() - died
    assert lost and LEASE * 0.5 <= took <= LEASE * 3


async def test_graceful_shutdown_hands_leases_over_with_their_checkpoint(tmp_path: Path) -> None:
    async with worker(sqlite(tmp_path), "b") as (_, hb):
        async with worker(sqlite(tmp_path), "a") as (a, ha):
            await a.sync(FOUR)
            await wait_until(lambda: len(ha.shards) == 2 and len(hb.shards) == 2)
            mine = sorted(ha.shards)
            assert await a.checkpoint(mine[0], "12345")
        left = time.monotonic()
        await wait_until(lambda: len(hb.shards) == 4, timeout=10 * LEASE)
        assert time.monotonic() - left < LEASE  # released: no expiry to wait for
        assert hb.checkpoints[mine[0]] == "12345"


async def test_child_starts_only_after_its_parent_reached_shard_end(tmp_path: Path) -> None:
    shards = [ShardInfo("p", closed=True), ShardInfo("c1", ("p",)), ShardInfo("c2", ("p",))]
    async with worker(sqlite(tmp_path), "a") as (a, ha):
        await a.sync(shards)
        await wait_until(lambda: ha.shards == {"p"})
        await asyncio.sleep(LEASE)  # several cycles: the children must still wait
        assert ha.shards == {"p"}
        a.finished("p")
        await wait_until(lambda: ha.shards == {"c1", "c2"})
    [parent] = [lease for lease in await _list(sqlite(tmp_path)) if lease.key == "p"]
    assert parent.finished and parent.owner is None


async def test_worker_that_cannot_renew_gives_its_shards_up(tmp_path: Path) -> None:
    class Flaky(SQLiteLeaseStore):
        down = False

        async def renew(self, lease: Lease) -> Lease | None:
            if self.down:
                raise ConnectionError("store unreachable")
            return await super().renew(lease)

    flaky = Flaky(tmp_path / "flaky.sqlite3")
    async with worker(flaky, "a") as (a, ha):
        await a.sync(FOUR)
        await wait_until(lambda: len(ha.shards) == 4)
        flaky.down = True
        await wait_until(lambda: not ha.shards, timeout=5 * LEASE)


async def test_three_workers_share_a_dynamodb_lease_table(moto_endpoint: str) -> None:
    table = unique("leases")
    stores = [DynamoDBLeaseStore(table, endpoint_url=moto_endpoint) for _ in range(3)]
    async with contextlib.AsyncExitStack() as stack:
        workers = [
            await stack.enter_async_context(worker(s, f"w{i}")) for i, s in enumerate(stores)
        ]
        await workers[0][0].sync(FOUR)
        holders = [h for _, h in workers]

        def shared() -> bool:
            held = [h.shards for h in holders]
            assert sum(map(len, held)) == len(set().union(*held)), "a shard read twice"
            return sorted(map(len, held)) == [1, 1, 2]

        await wait_until(shared, timeout=20 * LEASE)
        before = [s.calls.copy() for s in stores]
        await asyncio.sleep(4 * workers[0][0].renew_interval)  # idle: measure the call rate
        for store, was in zip(stores, before, strict=True):
            made = store.calls - was
            assert set(made) <= {"scan", "update_item"}
            assert made["scan"] <= 6  # one Scan per renew interval


async def _list(store: LeaseStore) -> list[Lease]:
    await store.open()
    try:
        return await store.list()
    finally:
        await store.close()
