"""Leases: which worker reads which shard of a stream, and how far it got.

A lease per shard holds its owner, a counter that every renewal and change of owner bumps, and
the checkpoint. A :class:`LeaseStore` only stores leases with compare-and-set operations; the
policy every store shares lives in :class:`LeaseCoordinator`: renew held leases, take free and
expired ones, balance by claiming a lease from the worker holding most, hand a lease over only
after its shard is drained and checkpointed, and start a child shard only after all its parents
reached SHARD_END.

A lease may also carry a tumbling window's state (``window``: opaque bytes the engine encodes),
written in the same conditional write as the checkpoint it goes with, so a new owner resumes the
window exactly where the checkpoint says the records stop. Listing leaves it out (it can be
hundreds of kilobytes and every worker lists every lease each renew interval); taking a lease
(``acquire``, ``renew``) returns it.

Expiry follows KCL: a lease is expired when its counter has not moved for ``lease_duration`` as
seen by this worker's own clock, so workers need no synchronised clocks. Stealing is graceful
(KCL 3's handoff): the thief only *claims* a lease; the owner drains the shard, writes its
checkpoint and releases the lease to the claimant, so two workers never read a shard at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import socket
import sqlite3
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson

from .errors import ConfigError

log = logging.getLogger("streamfn.leases")

#: Checkpoint of a shard read and checkpointed to its end: its children may start.
SHARD_END = "SHARD_END"
#: Checkpoint of a child shard created after its parents: read it from its first record.
TRIM_HORIZON = "TRIM_HORIZON"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Lease:
    """One shard's lease. ``checkpoint`` is None (use the mapping's starting position),
    TRIM_HORIZON, SHARD_END, or the decimal sequence number of the last record done;
    ``window`` is the open tumbling window as it stood after that record (None: none), left
    out by :meth:`LeaseStore.list`."""

    key: str
    owner: str | None = None
    counter: int = 0
    checkpoint: str | None = None
    parents: tuple[str, ...] = ()
    claimant: str | None = None
    window: bytes | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.checkpoint == SHARD_END


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """A shard as the stream lists it."""

    id: str
    parents: tuple[str, ...] = ()
    closed: bool = False


class LeaseStore(Protocol):
    """Durable leases with compare-and-set writes; a failed condition returns False/None."""

    #: The largest ``window`` a lease keeps, in bytes.
    window_limit: int

    async def open(self) -> None:
        """Connect, and create the table when it is missing."""

    async def close(self) -> None: ...

    async def list(self) -> list[Lease]:
        """Every lease, read consistently, without its ``window``."""

    async def create(self, lease: Lease) -> bool:
        """Insert ``lease`` unless one with its key exists."""

    async def acquire(self, lease: Lease, owner: str) -> Lease | None:
        """Make ``owner`` the owner if the counter is still ``lease.counter`` (a free, expired
        or handed-over lease); clears any claim and bumps the counter. The lease returned
        carries its ``window``."""

    async def renew(self, lease: Lease) -> Lease | None:
        """Bump the counter if ``lease.owner`` still owns it at ``lease.counter``."""

    async def claim(self, lease: Lease, claimant: str) -> bool:
        """Ask ``lease.owner`` to hand the lease over (stealing), if it still owns it and
        nobody else claimed it."""

    async def checkpoint(
        self, key: str, owner: str, checkpoint: str, window: bytes | None = None
    ) -> bool:
        """Store a checkpoint and the window that goes with it (None removes it), in one
        write, if ``owner`` still owns the lease."""

    async def release(
        self, lease: Lease, checkpoint: str | None, successor: str | None = None
    ) -> bool:
        """Store the final checkpoint and give the lease to ``successor`` (None: free), if
        ``lease.owner`` still owns it. The stored window stays with its checkpoint, unless
        ``checkpoint`` is None or SHARD_END (a finished shard's window is closed)."""

    async def delete(self, lease: Lease) -> bool:
        """Remove a retired lease if its counter is still ``lease.counter``."""


class LeaseHolder(Protocol):
    """Implemented by a stream source: starts and stops reading shards as leases come and go."""

    async def started(self, leases: Sequence[Lease]) -> None: ...

    async def stopped(self, keys: Sequence[str]) -> None:
        """Returns once the shards' in-flight work is drained or abandoned and checkpointed."""


# -- the embedded store --------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    key TEXT PRIMARY KEY,
    owner TEXT,
    counter INTEGER NOT NULL,
    checkpoint TEXT,
    parents TEXT NOT NULL,
    claimant TEXT,
    window_state BLOB
)
"""
_COLUMNS = "key, owner, counter, checkpoint, parents, claimant, window_state"
#: Listing leaves the window out: see the module docstring.
_LISTED = "key, owner, counter, checkpoint, parents, claimant, NULL"


def _lease(row: tuple[Any, ...]) -> Lease:
    key, owner, counter, checkpoint, parents, claimant, window = row
    return Lease(key, owner, counter, checkpoint, tuple(orjson.loads(parents)), claimant, window)


class SQLiteLeaseStore:
    """Leases in an SQLite file: the embedded default for one worker (several processes on one
    host may share the file). Statements run on one dedicated thread, so the event loop never
    waits on the disk and the connection is never shared between threads. A file written
    before windows were kept gets its ``window_state`` column when opened."""

    #: The largest window this store keeps with a checkpoint, in bytes (a 1 MB state with room
    #: to spare: SQLite itself takes blobs up to 1 GB).
    window_limit = 4 * 1024 * 1024

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

    def describe(self) -> str:
        return f"sqlite://{self.path}"

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="streamfn-leases")
        try:
            await self._run(self._connect)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the lease store {self.path}: {exc}") from exc

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(_SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(leases)")}
        if "window_state" not in columns:  # a file from before windows were kept
            db.execute("ALTER TABLE leases ADD COLUMN window_state BLOB")
        self._db = db

    async def close(self) -> None:
        if self._executor is None:
            return
        db, self._db = self._db, None
        if db is not None:
            await self._run(db.close)
        self._executor.shutdown()
        self._executor = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._executor is not None, "the lease store is not open"
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        assert self._db is not None, "the lease store is not open"
        return self._db.execute(sql, params).fetchall()

    async def _one(self, sql: str, *params: Any) -> Lease | None:
        rows = await self._run(self._query, sql + f" RETURNING {_COLUMNS}", *params)
        return _lease(rows[0]) if rows else None

    async def list(self) -> list[Lease]:
        return [_lease(r) for r in await self._run(self._query, f"SELECT {_LISTED} FROM leases")]

    async def create(self, lease: Lease) -> bool:
        return (
            await self._one(
                f"INSERT INTO leases ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(key) DO NOTHING",
                lease.key,
                lease.owner,
                lease.counter,
                lease.checkpoint,
                orjson.dumps(list(lease.parents)).decode(),
                lease.claimant,
                lease.window,
            )
            is not None
        )

    async def acquire(self, lease: Lease, owner: str) -> Lease | None:
        return await self._one(
            "UPDATE leases SET owner = ?, counter = counter + 1, claimant = NULL "
            "WHERE key = ? AND counter = ?",
            owner,
            lease.key,
            lease.counter,
        )

    async def renew(self, lease: Lease) -> Lease | None:
        return await self._one(
            "UPDATE leases SET counter = counter + 1 WHERE key = ? AND owner = ? AND counter = ?",
            lease.key,
            lease.owner,
            lease.counter,
        )

    async def claim(self, lease: Lease, claimant: str) -> bool:
        return (
            await self._one(
                "UPDATE leases SET claimant = ? WHERE key = ? AND owner = ? AND claimant IS NULL",
                claimant,
                lease.key,
                lease.owner,
            )
            is not None
        )

    async def checkpoint(
        self, key: str, owner: str, checkpoint: str, window: bytes | None = None
    ) -> bool:
        return (
            await self._one(
                "UPDATE leases SET checkpoint = ?, window_state = ? WHERE key = ? AND owner = ?",
                checkpoint,
                window,
                key,
                owner,
            )
            is not None
        )

    async def release(
        self, lease: Lease, checkpoint: str | None, successor: str | None = None
    ) -> bool:
        return (
            await self._one(
                "UPDATE leases SET owner = ?, checkpoint = ?, counter = counter + 1, "
                "claimant = NULL, window_state = CASE WHEN ? THEN NULL ELSE window_state END "
                "WHERE key = ? AND owner = ?",
                successor,
                checkpoint,
                checkpoint is None or checkpoint == SHARD_END,
                lease.key,
                lease.owner,
            )
            is not None
        )

    async def delete(self, lease: Lease) -> bool:
        rows = await self._run(
            self._query,
            "DELETE FROM leases WHERE key = ? AND counter = ? RETURNING key",
            lease.key,
            lease.counter,
        )
        return bool(rows)


# -- shard discovery -----------------------------------------------------------------------


def plan_leases(
    shards: Sequence[ShardInfo], leases: Sequence[Lease], *, skip_closed: bool
) -> tuple[list[Lease], list[Lease]]:
    """The leases to create and to retire for a fresh shard listing.

    Parents are created before their children; a shard gets no lease when a descendant already
    has one (its lease was retired). Children found after their parents start at TRIM_HORIZON so
    nothing between the parents' end and the child's start is skipped; on the very first sync of
    an empty table, ``skip_closed`` (LATEST) marks closed shards SHARD_END instead of reading
    them. A finished lease is retired once every child has a lease, or the shard is trimmed.
    """
    by_key = {lease.key: lease for lease in leases}
    listed = {shard.id for shard in shards}
    children: defaultdict[str, list[str]] = defaultdict(list)
    for shard in shards:
        for parent in shard.parents:
            children[parent].append(shard.id)

    def leased_descendant(key: str) -> bool:
        return any(c in by_key or leased_descendant(c) for c in children[key])

    first = not by_key
    creates = []
    for shard in _parents_first(shards):
        if shard.id in by_key or leased_descendant(shard.id):
            continue
        checkpoint: str | None = None
        if first and skip_closed and shard.closed:
            checkpoint = SHARD_END
        elif not first and any(p in listed or p in by_key for p in shard.parents):
            checkpoint = TRIM_HORIZON
        creates.append(Lease(shard.id, checkpoint=checkpoint, parents=shard.parents))
    retire = [
        lease
        for lease in leases
        if lease.finished
        and (
            lease.key not in listed
            or (children[lease.key] and all(c in by_key for c in children[lease.key]))
        )
    ]
    return creates, retire


def _parents_first(shards: Sequence[ShardInfo]) -> list[ShardInfo]:
    by_id = {s.id: s for s in shards}
    ordered: list[ShardInfo] = []
    seen: set[str] = set()

    def visit(shard: ShardInfo) -> None:
        if shard.id in seen:
            return
        seen.add(shard.id)
        for parent in shard.parents:
            if parent in by_id:
                visit(by_id[parent])
        ordered.append(shard)

    for shard in shards:
        visit(shard)
    return ordered


def parents_done(lease: Lease, by_key: dict[str, Lease]) -> bool:
    """A parent without a lease was retired (finished) or trimmed from the stream."""
    return all(p not in by_key or by_key[p].finished for p in lease.parents)


# -- the policy ----------------------------------------------------------------------------


def worker_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class LeaseCoordinator:
    """Keeps one worker's share of a stream's leases, through any :class:`LeaseStore`.

    Every ``renew_interval`` (a third of ``lease_duration`` by default) it renews the leases it
    holds, lists the table once, and takes free or expired leases up to its fair share; when
    none is free it claims one from the worker holding most. A holder that cannot renew for a
    whole ``lease_duration`` gives its shards up on its own, before another worker takes them.
    Shards are started and stopped through the :class:`LeaseHolder`.
    """

    def __init__(
        self,
        store: LeaseStore,
        holder: LeaseHolder,
        *,
        worker_id: str | None = None,
        lease_duration: float = 10.0,
        renew_interval: float | None = None,
    ) -> None:
        if not lease_duration > 0:
            raise ConfigError.out_of_range("lease_duration", lease_duration, "seconds > 0")
        self.store = store
        self.holder = holder
        self.worker_id = worker_id or worker_identity()
        self.lease_duration = lease_duration
        self.renew_interval = renew_interval or lease_duration / 3
        self.held: dict[str, Lease] = {}
        self._checkpoints: dict[str, str | None] = {}
        self._renewed: dict[str, float] = {}
        self._stopping: set[str] = set()
        self._finished: set[str] = set()
        self._seen: dict[str, tuple[int, str | None, float]] = {}
        self._wake = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None

    # -- called by the source -------------------------------------------------------------

    async def sync(self, shards: Sequence[ShardInfo], *, skip_closed: bool = False) -> None:
        """Create leases for new shards and retire finished ones (see :func:`plan_leases`)."""
        creates, retire = plan_leases(shards, await self.store.list(), skip_closed=skip_closed)
        for lease in creates:
            await self.store.create(lease)
        for lease in retire:
            await self.store.delete(lease)
        if creates or retire:
            self._wake.set()

    def checkpoint_of(self, key: str) -> str | None:
        """The checkpoint last written (or taken over) for a held lease."""
        return self._checkpoints.get(key)

    async def checkpoint(self, key: str, checkpoint: str, window: bytes | None = None) -> bool:
        """Write a checkpoint and its window; False when the lease is no longer this
        worker's."""
        if key not in self.held:
            return False
        if await self.store.checkpoint(key, self.worker_id, checkpoint, window):
            self._checkpoints[key] = checkpoint
            return True
        if key in self.held and key not in self._stopping:
            self._lose(key, "checkpoint refused")
        return False

    def finished(self, key: str) -> None:
        """The shard was read to its end and checkpointed: retire it, start its children."""
        if key in self.held:
            self._finished.add(key)
            self._wake.set()

    # -- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Coordinate until cancelled; then :meth:`shutdown` hands the leases back."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                while True:
                    try:
                        await self._cycle()
                    except Exception as exc:  # the store is unreachable: retry next period
                        log.warning(
                            "lease cycle failed",
                            extra={"worker": self.worker_id, "error": repr(exc)},
                        )
                    self._wake.clear()
                    try:
                        async with asyncio.timeout(self.renew_interval):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
            finally:
                self._tg = None

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Graceful handoff: stop every held shard (its final checkpoint is written through the
        holder), then release its lease with that checkpoint so another worker takes it at
        once instead of waiting for it to expire."""
        keys = list(self.held)
        if not keys:
            return
        try:
            async with asyncio.timeout(timeout):
                await self.holder.stopped(keys)
                await asyncio.gather(
                    *(self.store.release(self.held[k], self._final_checkpoint(k)) for k in keys),
                    return_exceptions=True,
                )
        except TimeoutError:
            log.warning("lease handoff timed out", extra={"worker": self.worker_id})
        for key in keys:
            self._forget(key)

    async def _cycle(self) -> None:
        for key in self._finished - self._stopping:
            self._hand_over(key, None)
        await self._renew_all()
        leases = await self.store.list()
        self._observe(leases)
        await self._balance(leases)

    async def _renew_all(self) -> None:
        keys = list(self.held)
        results = await asyncio.gather(
            *(self.store.renew(self.held[k]) for k in keys), return_exceptions=True
        )
        now = time.monotonic()
        for key, result in zip(keys, results, strict=True):
            if key not in self.held:
                continue  # released while the renewal was in flight
            if isinstance(result, BaseException):
                if now - self._renewed[key] >= self.lease_duration:
                    self._lose(key, f"not renewed for {self.lease_duration:g} s: {result!r}")
            elif result is None:
                self._lose(key, "taken by another worker")
            else:
                self.held[key] = result
                self._renewed[key] = now
                if result.claimant and key not in self._stopping:
                    self._hand_over(key, result.claimant)

    def _observe(self, leases: Iterable[Lease]) -> None:
        now = time.monotonic()
        seen = {}
        for lease in leases:
            before = self._seen.get(lease.key)
            state = (lease.counter, lease.owner)
            same = before is not None and before[:2] == state
            seen[lease.key] = before if same and before is not None else (*state, now)
        self._seen = seen

    def _expired(self, lease: Lease) -> bool:
        seen = self._seen.get(lease.key)
        return (
            lease.owner is not None
            and seen is not None
            and time.monotonic() - seen[2] >= self.lease_duration
        )

    async def _balance(self, leases: list[Lease]) -> None:
        by_key = {lease.key: lease for lease in leases}
        me = self.worker_id
        active = [lease for lease in leases if not lease.finished and parents_done(lease, by_key)]
        busy = set(self.held) | self._stopping
        handed = [lease for lease in active if lease.owner == me and lease.key not in busy]
        if handed:  # handed over to this worker, or held by an earlier life of its id
            renewed = await asyncio.gather(*(self.store.renew(lease) for lease in handed))
            adopted = [lease for lease in renewed if lease is not None]  # None: a stale listing
            if adopted:
                await self._start(adopted)
        counts = Counter(
            lease.owner
            for lease in active
            if lease.owner is not None and lease.owner != me and not self._expired(lease)
        )
        target = math.ceil(len(active) / (len(counts) + 1)) if active else 0
        free = [
            lease
            for lease in active
            if lease.key not in busy
            and lease.owner != me
            and (lease.owner is None or self._expired(lease))
        ]
        random.shuffle(free)  # workers starting together contend less
        taken = []
        for lease in free[: max(0, target - len(self.held))]:
            got = await self.store.acquire(lease, me)
            if got is not None:
                taken.append(got)
        if taken:
            await self._start(taken)
        elif not free and len(self.held) < target:
            await self._steal(active, counts)

    async def _steal(self, active: list[Lease], counts: Counter[str]) -> None:
        """Claim one lease from the worker holding most, when that evens the load out."""
        if not counts or any(lease.claimant == self.worker_id for lease in active):
            return  # one claim at a time
        victim, most = counts.most_common(1)[0]
        if most - len(self.held) < 2:
            return
        candidates = [lease for lease in active if lease.owner == victim and not lease.claimant]
        if candidates and await self.store.claim(random.choice(candidates), self.worker_id):
            log.info("claimed a lease", extra={"worker": self.worker_id, "from_worker": victim})

    async def _start(self, leases: list[Lease]) -> None:
        now = time.monotonic()
        for lease in leases:
            self.held[lease.key] = lease
            self._checkpoints[lease.key] = lease.checkpoint
            self._renewed[lease.key] = now
        log.info(
            "leases taken",
            extra={"worker": self.worker_id, "shards": sorted(lease.key for lease in leases)},
        )
        await self.holder.started(leases)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._tg is None:  # shutting down: shutdown() stops what is left
            coro.close()
            return
        self._tg.create_task(self._guarded(coro))

    async def _guarded(self, coro: Coroutine[Any, Any, None]) -> None:
        """A failed handoff must not end the coordinator: the lease expires or comes back."""
        try:
            await coro
        except Exception as exc:
            log.error("lease handoff failed", extra={"worker": self.worker_id, "error": repr(exc)})

    def _lose(self, key: str, reason: str) -> None:
        """Stop a shard whose lease is gone; its checkpoint writes are refused from now on."""
        log.warning("lease lost", extra={"worker": self.worker_id, "shard": key, "reason": reason})
        self._forget(key)
        self._stopping.add(key)
        self._spawn(self._stop_lost(key))

    async def _stop_lost(self, key: str) -> None:
        try:
            await self.holder.stopped([key])
        finally:
            self._stopping.discard(key)

    def _hand_over(self, key: str, successor: str | None) -> None:
        self._stopping.add(key)  # at once, so the next cycle does not start a second handoff
        self._spawn(self._release(key, successor))

    async def _release(self, key: str, successor: str | None) -> None:
        """Drain and checkpoint a shard, then hand its lease over (or mark it SHARD_END). If
        this is cancelled, the lease stays held for :meth:`shutdown` to release."""
        cancelled = False
        try:
            await self.holder.stopped([key])
            lease = self.held.get(key)
            if lease is not None:
                await self.store.release(lease, self._final_checkpoint(key), successor)
                log.info(
                    "lease released",
                    extra={"worker": self.worker_id, "shard": key, "to_worker": successor},
                )
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            self._stopping.discard(key)
            if not cancelled:  # on a failed release the lease expires, or comes back to us
                self._forget(key)
                self._wake.set()

    def _final_checkpoint(self, key: str) -> str | None:
        return SHARD_END if key in self._finished else self._checkpoints.get(key)

    def _forget(self, key: str) -> None:
        self.held.pop(key, None)
        self._checkpoints.pop(key, None)
        self._renewed.pop(key, None)
        self._finished.discard(key)
