"""Where asynchronous (``Event``) invocations wait: the event queue protocol, an in-memory queue
for embedding and tests, and the durable default, SQLite in WAL mode in a state directory.

The SQLite queue is built for "fsync before the 202" at a high request rate: every write goes
through one writer task that commits whatever arrived while the previous commit was in flight, so
many concurrent requests share one transaction and one fsync (group commit). Scheduling (which
event is due when) is kept in memory, so the database is only written, except at start-up and for
events whose payload did not fit the memory budget. One worker owns a state directory (a lock
file says so); several workers share a queue through a backend that implements
:class:`EventQueue` on a shared broker (an SQS queue or a Kafka topic) instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import heapq
import itertools
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import orjson

from .errors import ConfigError, UnknownDeadLetter

DB_NAME = "async-events.sqlite3"
LOCK_NAME = "async-events.lock"
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
    202 is sent after it); ``receive`` hands out due events, which stay owned by the caller until
    it calls ``retry``, ``delete`` or ``dead_letter`` for each."""

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


class _Scheduler:
    """Due times in a heap, shared by both queues. Events are "known" from ``put`` until they
    are deleted or dead-lettered, which is what depth and age report."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._heap: list[tuple[float, int, QueuedEvent]] = []
        self._order = itertools.count()
        self._known: dict[str, QueuedEvent] = {}
        self._wake = asyncio.Event()

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

    def oldest(self) -> float | None:
        return min((e.enqueued_at for e in self._known.values()), default=None)


class MemoryEventQueue(_Scheduler):
    """A queue that lives and dies with the process: for embedding and tests, never for data
    that must survive a restart."""

    def __init__(self) -> None:
        super().__init__()
        self.dead_letters: list[DeadLetter] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def put(self, event: QueuedEvent) -> None:
        self._known[event.request_id] = event
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
        self._known.pop(event.request_id, None)

    async def dead_letter(self, event: QueuedEvent, letter: DeadLetter) -> None:
        self._known.pop(event.request_id, None)
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
_COLUMNS = "seq, id, function, qualifier, enqueued_at, attempts, throttles, due_at, trace"


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

    def __init__(self, state_dir: str | os.PathLike[str], *, memory_budget: int = MEMORY_BUDGET):
        super().__init__()
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
        self._lock = _lock_state_dir(self.state_dir)
        self._reset()  # the file is the truth: (re)opening schedules whatever it holds
        self._resident = self._watermark = 0
        self._db = ThreadPoolExecutor(1, thread_name_prefix="streamfn-asyncq")
        try:
            loop = asyncio.get_running_loop()
            self._conn = await loop.run_in_executor(
                self._db, _connect_queue, self.state_dir / DB_NAME
            )
            await self._poll()
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
        for row in rows:
            seq, request_id, function, qualifier, enqueued_at, attempts, throttles, due, trace = row
            self._watermark = max(self._watermark, seq)
            if request_id in self._known:
                continue
            event = QueuedEvent(
                request_id, function, qualifier, None, enqueued_at, attempts, throttles, due, trace
            )
            self._known[request_id] = event
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
        self._known[event.request_id] = event
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
            self._known.pop(event.request_id, None)
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
            self._known.pop(request_id, None)

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
        self._known.pop(event.request_id, None)

    async def dead_letter(self, event: QueuedEvent, letter: DeadLetter) -> None:
        assert self._writer is not None
        bury = (letter.attempts, letter.failed_at, letter.condition, orjson.dumps(letter.record))
        await self._writer.write((_BURY, (*bury, event.request_id)), (_DELETE, (event.request_id,)))
        self._known.pop(event.request_id, None)


def _lock_state_dir(state_dir: Path) -> int:
    """Take the state directory for this process: two workers on one SQLite queue would run
    every event twice."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(f"cannot use state directory {state_dir}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(
            f"state directory {state_dir} is in use by another streamfn worker; give each "
            "worker its own --state-dir, or share an SQS or Kafka event queue"
        ) from None
    return fd


class DeadLetterStore:
    """The dead letters of a state directory, for ``streamfn dlq``: usable while the worker runs
    (SQLite serialises the writes; the worker picks up redriven events within a poll)."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        path = Path(state_dir) / DB_NAME
        if not path.is_file():
            raise ConfigError(f"no async event queue in {state_dir} (expected {path})")
        self._conn = connect(path)

    def close(self) -> None:
        self._conn.close()

    def letters(self, function: str | None = None, limit: int = 100) -> list[DeadLetter]:
        where, params = ("WHERE function = ?", [function]) if function else ("", [])
        rows = self._conn.execute(
            f"SELECT {_LETTER_COLUMNS} FROM dead_letters {where} ORDER BY seq LIMIT ?",
            [*params, limit],
        ).fetchall()
        return [_letter(row) for row in rows]

    def get(self, request_id: str) -> DeadLetter | None:
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
