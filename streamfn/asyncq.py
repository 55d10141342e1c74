"""Where asynchronous (``Event``) invocations wait: the event queue protocol, an in-memory queue
for embedding and tests, and the durable default, SQLite in WAL mode in a state directory.

The SQLite queue is built for "fsync before the 202" at a high request rate: every write goes
through one writer task that commits whatever arrived while the previous commit was in flight, so
many concurrent requests share one transaction and one fsync (group commit). Scheduling (which
event is due when) is kept in memory, so the database is only written, except at start-up and for
events whose payload did not fit the memory budget. One worker owns a state directory (a lock
file says so); several workers share a queue through a backend that implements
:class:`EventQueue` on a shared broker (an SQS queue or a Kafka topic) instead.

Both local queues are bounded, in events and in payload bytes (``max_events``, ``max_bytes``;
the App's ``async_queue_max_events`` and ``async_queue_max_bytes``): a consumer slower than its
callers would otherwise grow the queue, the memory and the disk without limit, and the callers
would learn nothing. When full, ``put`` refuses with Lambda's 429
``TooManyRequestsException`` and a ``Retry-After``, so callers back off. (The shared queues are
bounded by their brokers.)

The SQLite file is checked before it is used, since SQLite on its own would run on without the
events it held: a file that is not a database, malformed pages (``PRAGMA quick_check``), a
write-ahead log whose header or frames are damaged (SQLite would drop the transactions in it
without a word), or a file truncated to zero bytes, deleted or replaced while the marker file
written at its creation says it held this directory's queue. Each is refused with
:class:`~streamfn.errors.StoreCorrupted`, whose one line names the file and
``streamfn queue salvage`` (:mod:`streamfn.salvage`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import heapq
import itertools
import os
import shlex
import sqlite3
import struct
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import orjson

from .errors import ConfigError, StoreCorrupted, TooManyRequests, UnknownDeadLetter

DB_NAME = "async-events.sqlite3"
LOCK_NAME = "async-events.lock"
#: Written next to the database when it is created, with the store id the database also holds:
#: a database that is gone, empty or another one while this file exists lost the queue.
MARKER_NAME = "async-events.id"
#: Events a local queue holds (queued or running) before refusing more: at 1,000 Event/s,
#: 100 s of backlog, and about 50 MB of bookkeeping in memory (the payloads aside).
DEFAULT_MAX_EVENTS = 100_000
#: Payload bytes a local queue holds before refusing more: the memory queue's RAM, the SQLite
#: queue's disk (a multiple of the 64 MiB it keeps in memory), far above a 1 MB event.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
#: Whole seconds a refused caller is told to wait (``Retry-After``): a full queue drains at the
#: functions' pace, which a fixed, short wait neither hides nor overloads.
RETRY_AFTER = 1
#: Lambda's ThrottleReason for a refusal by a full queue: callers invoke faster than it drains.
QUEUE_FULL_REASON = "FunctionInvocationRateLimitExceeded"
#: Seconds between looks for events another process added (``streamfn dlq redrive``).
POLL_INTERVAL = 0.5
#: Payload bytes kept in memory; beyond it, payloads are read back from disk when due.
MEMORY_BUDGET = 64 * 1024 * 1024

Statement = tuple[str, Sequence[Any]]


@dataclass(slots=True)
class QueuedEvent:
    """One accepted asynchronous invocation and its progress (attempts and throttles so far)."""

    request_id: str
    function: str
    qualifier: str | None
    payload: bytes | None  # the JSON body as received; None while it is only on disk
    enqueued_at: float  # epoch seconds; the event's age is measured from here
    attempts: int = 0
    throttles: int = 0
    due_at: float = 0.0  # epoch seconds
    #: The W3C traceparent of the request that queued it, so its runs join that trace
    #: (:mod:`streamfn.tracing`); None when tracing was off.
    trace: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event that failed for good, with the invocation record that says why."""

    request_id: str
    function: str
    qualifier: str | None
    payload: bytes
    enqueued_at: float
    attempts: int
    failed_at: float
    condition: str
    record: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {
            "requestId": self.request_id,
            "function": self.function,
            "qualifier": self.qualifier,
            "condition": self.condition,
            "attempts": self.attempts,
            "enqueuedAt": self.enqueued_at,
            "failedAt": self.failed_at,
            "payloadBytes": len(self.payload),
        }


class EventQueue(Protocol):
    """What the async invoker needs from a queue. ``put`` returns once the event is durable (the
    202 is sent after it), or raises :class:`~streamfn.errors.TooManyRequests` when the queue is
    full; ``receive`` hands out due events, which stay owned by the caller until it calls
    ``retry``, ``delete`` or ``dead_letter`` for each."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def put(self, event: QueuedEvent) -> None: ...

    async def receive(self, max_events: int) -> list[QueuedEvent]: ...

    async def retry(self, event: QueuedEvent, delay: float, *, durable: bool = True) -> None: ...

    async def delete(self, event: QueuedEvent) -> None: ...

    async def dead_letter(self, event: QueuedEvent, letter: DeadLetter) -> None: ...

    def depth(self) -> int: ...

    def oldest(self) -> float | None: ...


def check_bounds(max_events: int, max_bytes: int, *, prefix: str = "") -> None:
    """Raise :class:`~streamfn.errors.ConfigError` naming ``prefix`` + the field unless both
    bounds are whole numbers >= 1 (``prefix`` is ``"async_queue_"`` for the App's settings)."""
    for field, value in (("max_events", max_events), ("max_bytes", max_bytes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError.out_of_range(prefix + field, value, "a whole number >= 1")


class _Scheduler:
    """Due times in a heap, shared by both queues. Events are "known" from ``put`` until they
    are deleted or dead-lettered, which is what depth and age report, and what the bounds count:
    ``max_events`` known events, ``max_bytes`` of their payloads. An empty queue takes an event
    of any size, so a bound below the largest payload still lets every event through."""

    def __init__(self, max_events: int, max_bytes: int) -> None:
        check_bounds(max_events, max_bytes)
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._reset()

    def _reset(self) -> None:
        self._heap: list[tuple[float, int, QueuedEvent]] = []
        self._order = itertools.count()
        self._known: dict[str, QueuedEvent] = {}
        self._sizes: dict[str, int] = {}  # payload bytes of each known event
        self._bytes = 0  # their sum
        self._wake = asyncio.Event()

    def _admit(self, event: QueuedEvent) -> None:
        """Count ``event`` as known, or raise TooManyRequests when a bound would be passed."""
        size = len(event.payload or b"")
        if self._known and (
            len(self._known) >= self.max_events or self._bytes + size > self.max_bytes
        ):
            raise TooManyRequests(
                f"Rate Exceeded. The asynchronous event queue is full ({len(self._known)} "
                f"events, {self._bytes} bytes; bounds {self.max_events} events, "
                f"{self.max_bytes} bytes): retry after {RETRY_AFTER} s.",
                reason=QUEUE_FULL_REASON,
                retry_after=RETRY_AFTER,
            )
        self._know(event, size)

    def _know(self, event: QueuedEvent, size: int) -> None:
        self._known[event.request_id] = event
        self._bytes += size - self._sizes.get(event.request_id, 0)
        self._sizes[event.request_id] = size

    def _forget(self, request_id: str) -> None:
        self._known.pop(request_id, None)
        self._bytes -= self._sizes.pop(request_id, 0)

    def _schedule(self, event: QueuedEvent) -> None:
        heapq.heappush(self._heap, (event.due_at, next(self._order), event))
        self._wake.set()

    async def _wait_due(self, limit: float) -> None:
        """Return once the earliest event is due, something new arrived, or ``limit`` passed."""
        now = time.time()
        if self._heap and self._heap[0][0] <= now:
            return
        delay = limit if not self._heap else min(limit, self._heap[0][0] - now)
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

    def _pop_due(self, max_events: int) -> list[QueuedEvent]:
        now = time.time()
        due: list[QueuedEvent] = []
        while self._heap and len(due) < max_events and self._heap[0][0] <= now:
            due.append(heapq.heappop(self._heap)[2])
        return due

    def depth(self) -> int:
        return len(self._known)

    def size(self) -> int:
        """Payload bytes of the events known (queued or running)."""
        return self._bytes

    def oldest(self) -> float | None:
        return min((e.enqueued_at for e in self._known.values()), default=None)


class MemoryEventQueue(_Scheduler):
    """A queue that lives and dies with the process: for embedding and tests, never for data
    that must survive a restart."""

    def __init__(
        self, *, max_events: int = DEFAULT_MAX_EVENTS, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        super().__init__(max_events, max_bytes)
        self.dead_letters: list[DeadLetter] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def put(self, event: QueuedEvent) -> None:
        self._admit(event)
        self._schedule(event)

    async def receive(self, max_events: int) -> list[QueuedEvent]:
        while True:
            due = self._pop_due(max_events)
            if due:
                return due
            await self._wait_due(3600.0)

    async def retry(self, event: QueuedEvent, delay: float, *, durable: bool = True) -> None:
        event.due_at = time.time() + delay
        self._schedule(event)

    async def delete(self, event: QueuedEvent) -> None:
        self._forget(event.request_id)

    async def dead_letter(self, event: QueuedEvent, letter: DeadLetter) -> None:
        self._forget(event.request_id)
        self.dead_letters.append(letter)


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        function TEXT NOT NULL,
        qualifier TEXT,
        payload BLOB NOT NULL,
        enqueued_at REAL NOT NULL,
        attempts INTEGER NOT NULL,
        throttles INTEGER NOT NULL,
        due_at REAL NOT NULL,
        trace TEXT)""",
    """CREATE TABLE IF NOT EXISTS dead_letters (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        function TEXT NOT NULL,
        qualifier TEXT,
        payload BLOB NOT NULL,
        enqueued_at REAL NOT NULL,
        attempts INTEGER NOT NULL,
        failed_at REAL NOT NULL,
        condition TEXT NOT NULL,
        record BLOB NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
_INSERT = (
    "INSERT INTO events (id, function, qualifier, payload, enqueued_at, attempts, throttles,"
    " due_at, trace) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE = "UPDATE events SET attempts = ?, throttles = ?, due_at = ? WHERE id = ?"
_DELETE = "DELETE FROM events WHERE id = ?"
_BURY = (
    "INSERT INTO dead_letters (id, function, qualifier, payload, enqueued_at, attempts,"
    " failed_at, condition, record) SELECT id, function, qualifier, payload, enqueued_at, ?, ?,"
    " ?, ? FROM events WHERE id = ?"
)
_COLUMNS = (
    "seq, id, function, qualifier, enqueued_at, attempts, throttles, due_at, trace, length(payload)"
)


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, fsync on every commit."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    for statement in _SCHEMA:
        conn.execute(statement)
    return conn


def _connect_queue(path: Path) -> sqlite3.Connection:
    """:func:`connect`, for the worker that holds the state directory: a file written before
    events kept their trace context gains the column, and its events read back without one.
    Only the lock holder alters the table, so two processes never race to."""
    conn = connect(path)
    if "trace" not in {row[1] for row in conn.execute("PRAGMA table_info(events)")}:
        conn.execute("ALTER TABLE events ADD COLUMN trace TEXT")
    return conn


def transaction(conn: sqlite3.Connection, statements: Sequence[Statement]) -> None:
    """Run ``statements`` in one transaction; runs of the same statement go to executemany."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql, group in itertools.groupby(statements, key=lambda s: s[0]):
            conn.executemany(sql, [params for _, params in group])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


class _GroupCommit:
    """One writer for many coroutines: every batch of statements that arrived while the previous
    commit was in flight goes into one transaction with one fsync."""

    def __init__(self, conn: sqlite3.Connection, db: ThreadPoolExecutor) -> None:
        self._conn = conn
        self._db = db
        self._pending: list[tuple[Sequence[Statement], asyncio.Future[None]]] = []
        self._more = asyncio.Event()
        self._closing = False

    async def write(self, *statements: Statement) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((statements, future))
        self._more.set()
        await future

    def close(self) -> None:
        self._closing = True
        self._more.set()

    async def run(self) -> None:
        """Commit batches until closed; what was written before ``close()`` is committed
        before this returns."""
        loop = asyncio.get_running_loop()
        while self._pending or not self._closing:
            if not self._pending:
                self._more.clear()
                await self._more.wait()
                continue
            batch, self._pending = self._pending, []
            statements = [s for group, _ in batch for s in group]
            try:
                await loop.run_in_executor(self._db, transaction, self._conn, statements)
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)


class SQLiteEventQueue(_Scheduler):
    """The durable queue: events in ``<state_dir>/async-events.sqlite3``, fsync'd before ``put``
    returns; on start-up every event still in the file is scheduled again, so an event accepted
    before a crash (even ``kill -9``) runs after the restart."""

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        memory_budget: int = MEMORY_BUDGET,
        max_events: int = DEFAULT_MAX_EVENTS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ):
        super().__init__(max_events, max_bytes)
        self.state_dir = Path(state_dir)
        self._budget = memory_budget
        self._resident = 0  # payload bytes held by events in the heap
        self._db: ThreadPoolExecutor | None = None  # the one thread that owns the connection
        self._conn: sqlite3.Connection | None = None
        self._lock: int | None = None
        self._writer: _GroupCommit | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._watermark = 0  # highest seq seen, to find events other processes added
        self._polled = 0.0

    async def __aenter__(self) -> Self:
        self._lock = lock_state_dir(self.state_dir)
        self._reset()  # the file is the truth: (re)opening schedules whatever it holds
        self._resident = self._watermark = 0
        self._db = ThreadPoolExecutor(1, thread_name_prefix="streamfn-asyncq")
        try:
            loop = asyncio.get_running_loop()
            self._conn = await loop.run_in_executor(self._db, open_store, self.state_dir)
            try:
                await self._poll()
            except sqlite3.DatabaseError as exc:
                raise _damaged(self.state_dir, exc) from None
        except BaseException:
            await self._release()
            raise
        assert self._conn is not None
        self._writer = _GroupCommit(self._conn, self._db)
        self._writer_task = asyncio.create_task(self._writer.run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._writer is not None and self._writer_task is not None:
            self._writer.close()
            await self._writer_task
        await self._release()

    async def _release(self) -> None:
        if self._db is not None:
            if self._conn is not None:
                await asyncio.get_running_loop().run_in_executor(self._db, self._conn.close)
                self._conn = None
            self._db.shutdown(wait=True)
            self._db = None
        if self._lock is not None:
            os.close(self._lock)  # also drops the flock
            self._lock = None

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        assert self._conn is not None and self._db is not None
        conn = self._conn

        def fetch() -> list[Any]:
            return conn.execute(sql, params).fetchall()

        return await asyncio.get_running_loop().run_in_executor(self._db, fetch)

    async def _poll(self) -> None:
        """Schedule rows this process has not seen: all of them at start-up, then redriven ones."""
        self._polled = time.monotonic()
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM events WHERE seq > ? ORDER BY seq", (self._watermark,)
        )
        for seq, *fields, size in rows:
            self._watermark = max(self._watermark, seq)
            request_id, function, qualifier, enqueued, attempts, throttles, due, trace = fields
            if request_id in self._known:
                continue
            event = QueuedEvent(
                request_id, function, qualifier, None, enqueued, attempts, throttles, due, trace
            )
            self._know(event, size)  # already stored: counted even beyond the bounds
            self._schedule(event)

    def _keep(self, event: QueuedEvent) -> None:
        """Schedule ``event``, keeping its payload in memory while the budget allows."""
        if event.payload is not None:
            if self._resident + len(event.payload) > self._budget:
                event.payload = None
            else:
                self._resident += len(event.payload)
        self._schedule(event)

    async def put(self, event: QueuedEvent) -> None:
        assert self._writer is not None and event.payload is not None
        self._admit(event)
        try:
            await self._writer.write(
                (
                    _INSERT,
                    (
                        event.request_id,
                        event.function,
                        event.qualifier,
                        event.payload,
                        event.enqueued_at,
                        event.attempts,
                        event.throttles,
                        event.due_at,
                        event.trace,
                    ),
                )
            )
        except BaseException:
            self._forget(event.request_id)
            raise
        self._keep(event)

    async def receive(self, max_events: int) -> list[QueuedEvent]:
        while True:
            if time.monotonic() - self._polled >= POLL_INTERVAL:
                await self._poll()
            due = self._pop_due(max_events)
            if due:
                break
            await self._wait_due(POLL_INTERVAL)
        for event in due:
            if event.payload is not None:
                self._resident -= len(event.payload)
        try:
            await self._load_payloads(due)
        except BaseException:
            for event in due:
                self._keep(event)
            raise
        return [event for event in due if event.payload is not None]

    async def _load_payloads(self, events: list[QueuedEvent]) -> None:
        missing = {e.request_id: e for e in events if e.payload is None}
        if not missing:
            return
        marks = ",".join("?" * len(missing))
        rows = await self._read(
            f"SELECT id, payload FROM events WHERE id IN ({marks})", list(missing)
        )
        for request_id, payload in rows:
            missing.pop(request_id).payload = bytes(payload)
        for request_id in missing:  # removed by another process since: nothing left to run
            self._forget(request_id)

    async def retry(self, event: QueuedEvent, delay: float, *, durable: bool = True) -> None:
        event.due_at = time.time() + delay
        if durable:
            assert self._writer is not None
            await self._writer.write(
                (_UPDATE, (event.attempts, event.throttles, event.due_at, event.request_id))
            )
        self._keep(event)

    async def delete(self, event: QueuedEvent) -> None:
        assert self._writer is not None
        await self._writer.write((_DELETE, (event.request_id,)))
        self._forget(event.request_id)

    async def dead_letter(self, event: QueuedEvent, letter: DeadLetter) -> None:
        assert self._writer is not None
        bury = (letter.attempts, letter.failed_at, letter.condition, orjson.dumps(letter.record))
        await self._writer.write((_BURY, (*bury, event.request_id)), (_DELETE, (event.request_id,)))
        self._forget(event.request_id)


_BUSY = (
    "state directory {} is in use by another streamfn worker; give each worker its own "
    "--state-dir, or share an SQS or Kafka event queue"
)


def lock_state_dir(state_dir: Path, busy: str = _BUSY) -> int:
    """Take the state directory for this process: two workers on one SQLite queue would run
    every event twice. ``busy`` is the message when another process holds it."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(f"cannot use state directory {state_dir}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(busy.format(state_dir)) from None
    return fd


def _try_lock(state_dir: Path) -> int | None:
    """The state directory's lock if no worker holds it (then its files hold still), else
    None."""
    try:
        return lock_state_dir(state_dir)
    except ConfigError:
        return None


#: SQLite's primary result codes for a damaged file: SQLITE_CORRUPT and SQLITE_NOTADB.
_CORRUPTION_CODES = frozenset({11, 26})


def is_corruption(exc: sqlite3.Error) -> bool:
    """Whether SQLite raised ``exc`` because the file is damaged, rather than busy, full or
    refused by the operating system."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _CORRUPTION_CODES


def salvage_command(state_dir: Path) -> str:
    return f"streamfn queue salvage --state-dir {shlex.quote(str(state_dir))}"


def corrupted(state_dir: Path, detail: str) -> StoreCorrupted:
    """The one-line refusal of a damaged queue file: which file, what is wrong, what to run."""
    path = state_dir / DB_NAME
    problem = f"the event queue {path} is damaged ({detail})"
    return StoreCorrupted(
        f"{problem}; streamfn will not use it. To recover, stop the worker on {state_dir} and "
        f"run `{salvage_command(state_dir)}`: it copies every readable event and dead letter "
        "into a new queue and keeps the damaged file aside",
        str(path),
        problem,
    )


def _damaged(state_dir: Path, exc: sqlite3.Error) -> Exception:
    """``exc`` as :class:`StoreCorrupted` when it says the file is damaged, else unchanged."""
    if not is_corruption(exc):
        return exc
    return corrupted(state_dir, " ".join(str(exc).split()))


def read_marker(state_dir: Path) -> str | None:
    """The store id the marker file holds, or None when there is none."""
    try:
        text = (state_dir / MARKER_NAME).read_text(errors="replace").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return text or "(unreadable)"


def write_marker(state_dir: Path, store_id: str) -> None:
    """Replace the marker atomically (a new file renamed over it), durably (fsync of the file
    and of the directory), so a crash leaves the old marker or the new one."""
    marker = state_dir / MARKER_NAME
    staged = marker.with_name(MARKER_NAME + ".tmp")
    with open(staged, "w") as out:
        out.write(f"{store_id}\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(staged, marker)
    directory = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def check_files(state_dir: Path, *, wal: bool) -> str | None:
    """Refuse a queue file the marker outlived (deleted, or truncated to zero bytes), and with
    ``wal`` (only while no process writes the log) a damaged write-ahead log; return the
    marker's store id (None without a marker)."""
    path = state_dir / DB_NAME
    marker = read_marker(state_dir)
    try:
        size: int | None = path.stat().st_size
    except FileNotFoundError:
        size = None
    if marker is not None and not size:
        how = "deleted" if size is None else "truncated to zero bytes"
        problem = (
            f"the event queue {path} was {how}, yet {state_dir / MARKER_NAME} says it held this "
            f"directory's queue (store {marker})"
        )
        raise StoreCorrupted(
            f"{problem}: the events it held are lost, and streamfn will not start an empty queue "
            "in its place unasked. Restore the file from a backup, or accept the loss: stop the "
            f"worker on {state_dir} and run `{salvage_command(state_dir)}` (it keeps what is "
            "left aside and starts a new queue)",
            str(path),
            problem,
        )
    if wal and size:
        damage = wal_damage(path)
        if damage is not None:
            raise corrupted(state_dir, damage)
    return marker


def verify(conn: sqlite3.Connection, state_dir: Path, marker: str | None) -> str | None:
    """Check the pages (``PRAGMA quick_check``) and that the file is the store the marker names;
    return the file's store id (None for a new file, or one from before store ids)."""
    try:
        problems = [" ".join(row[0].split()) for row in conn.execute("PRAGMA quick_check(3)")]
        row = conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise _damaged(state_dir, exc) from None
    if problems != ["ok"]:
        raise corrupted(state_dir, "; ".join(problems))
    found: str | None = None if row is None else row[0]
    if marker is not None and found != marker:
        path = state_dir / DB_NAME
        problem = (
            f"the event queue {path} is not the one this directory created (it holds store "
            f"{found or 'none'}, {state_dir / MARKER_NAME} says {marker})"
        )
        raise StoreCorrupted(
            f"{problem}: it was replaced, and the events of the queue it replaced are not in "
            "it. Put the right file back, or adopt this one: stop the worker on "
            f"{state_dir} and run `{salvage_command(state_dir)}`",
            str(path),
            problem,
        )
    return found


def open_store(state_dir: Path) -> sqlite3.Connection:
    """:func:`_connect_queue` for the lock holder, once the files are checked; a new store (or
    one from before store ids) is given an id, which the marker then records."""
    marker = check_files(state_dir, wal=True)
    try:
        conn = _connect_queue(state_dir / DB_NAME)
    except sqlite3.DatabaseError as exc:
        raise _damaged(state_dir, exc) from None
    try:
        found = verify(conn, state_dir, marker)
        if found is None:
            found = uuid.uuid4().hex
            conn.execute("INSERT INTO meta (key, value) VALUES ('store_id', ?)", (found,))
        if marker != found:
            write_marker(state_dir, found)
    except BaseException:
        conn.close()
        raise
    return conn


_WAL_MAGIC = 0x377F0682  # | 1 when the checksums are over big-endian words
_WAL_VERSION = 3007000


def wal_checksum(data: bytes, sums: tuple[int, int], big_endian: bool) -> tuple[int, int]:
    """SQLite's write-ahead log checksum of ``data``, continuing from ``sums``."""
    s0, s1 = sums
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def wal_damage(db: Path) -> str | None:
    """What is wrong with ``db``'s write-ahead log, or None when it is sound or absent. SQLite
    takes a log whose header is damaged for an empty one, and ends a log at its first frame
    whose checksum fails: either way, committed transactions would vanish without an error. A
    failed frame with no commit after it is a write cut short by a crash before its commit
    returned, which SQLite rightly drops: not damage."""
    try:
        data = db.with_name(db.name + "-wal").read_bytes()
    except FileNotFoundError:
        return None
    if len(data) < 32:  # not even a header: a log being created when the process stopped
        return None
    magic, version, page_size, _, salt1, salt2, sum1, sum2 = struct.unpack(">8I", data[:32])
    big_endian = bool(magic & 1)
    if (
        magic & ~1 != _WAL_MAGIC
        or version != _WAL_VERSION
        or not 512 <= page_size <= 65536
        or page_size & (page_size - 1)
        or wal_checksum(data[:24], (0, 0), big_endian) != (sum1, sum2)
    ):
        return f"the header of its write-ahead log {db.name}-wal is damaged"
    size = 24 + page_size
    sums, damaged = (sum1, sum2), 0
    for number, at in enumerate(range(32, len(data) - size + 1, size), start=1):
        _, commit, frame_salt1, frame_salt2, frame1, frame2 = struct.unpack(
            ">6I", data[at : at + 24]
        )
        if (frame_salt1, frame_salt2) != (salt1, salt2):
            break  # a frame of the log's previous round: the log ends here
        body = data[at : at + 8] + data[at + 24 : at + size]
        if wal_checksum(body, sums, big_endian) != (frame1, frame2):
            damaged = damaged or number
        elif damaged and commit:
            return (
                f"frame {damaged} of its write-ahead log {db.name}-wal is damaged, and the "
                "transactions committed after it would be lost"
            )
        sums = (frame1, frame2)  # the stored sums carry on, so frames after damage still verify
    return None


class DeadLetterStore:
    """The dead letters of a state directory, for ``streamfn dlq``: usable while the worker runs
    (SQLite serialises the writes; the worker picks up redriven events within a poll). A damaged,
    emptied or replaced file is refused as the worker refuses it, with
    :class:`~streamfn.errors.StoreCorrupted`."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self._state_dir = state = Path(state_dir)
        path = state / DB_NAME
        marker = read_marker(state)
        if marker is None and not path.is_file():
            raise ConfigError(f"no async event queue in {state_dir} (expected {path})")
        lock = _try_lock(state)  # the log is checked only while no worker writes it
        try:
            marker = check_files(state, wal=lock is not None)
        finally:
            if lock is not None:
                os.close(lock)
        try:
            self._conn = connect(path)
        except sqlite3.DatabaseError as exc:
            raise _damaged(state, exc) from None
        try:
            verify(self._conn, state, marker)
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        self._conn.close()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise _damaged(self._state_dir, exc) from None

    def letters(self, function: str | None = None, limit: int = 100) -> list[DeadLetter]:
        where, params = ("WHERE function = ?", [function]) if function else ("", [])
        with self._reading():
            rows = self._conn.execute(
                f"SELECT {_LETTER_COLUMNS} FROM dead_letters {where} ORDER BY seq LIMIT ?",
                [*params, limit],
            ).fetchall()
        return [_letter(row) for row in rows]

    def get(self, request_id: str) -> DeadLetter | None:
        with self._reading():
            row = self._conn.execute(
                f"SELECT {_LETTER_COLUMNS} FROM dead_letters WHERE id = ?", (request_id,)
            ).fetchone()
        return None if row is None else _letter(row)

    def redrive(self, request_ids: Sequence[str] | None, function: str | None = None) -> int:
        """Move dead letters back into the queue as fresh events (attempts and age start over);
        ``None`` redrives every one (of ``function``). Returns how many moved."""
        ids = list(self._select_ids(request_ids, function))
        if not ids:
            return 0
        now = time.time()
        statements: list[Statement] = []
        for request_id in ids:
            statements.append((_REDRIVE, (now, now, request_id)))
        statements += [("DELETE FROM dead_letters WHERE id = ?", (i,)) for i in ids]
        with self._reading():
            transaction(self._conn, statements)
        return len(ids)

    def _select_ids(self, request_ids: Sequence[str] | None, function: str | None) -> Iterator[str]:
        if request_ids is not None:
            for request_id in request_ids:
                if self.get(request_id) is None:
                    raise UnknownDeadLetter(f"no dead letter with request id {request_id!r}")
                yield request_id
            return
        for letter in self.letters(function, limit=1 << 62):
            yield letter.request_id


_LETTER_COLUMNS = (
    "id, function, qualifier, payload, enqueued_at, attempts, failed_at, condition, record"
)
_REDRIVE = (
    "INSERT INTO events (id, function, qualifier, payload, enqueued_at, attempts, throttles,"
    " due_at) SELECT id, function, qualifier, payload, ?, 0, 0, ? FROM dead_letters WHERE id = ?"
)


def _letter(row: Sequence[Any]) -> DeadLetter:
    request_id, function, qualifier, payload, enqueued, attempts, failed, condition, record = row
    return DeadLetter(
        request_id,
        function,
        qualifier,
        bytes(payload),
        enqueued,
        attempts,
        failed,
        condition,
        orjson.loads(record),
    )
