"""``streamfn queue salvage``: rescue what is readable of a damaged event queue file.

The worker and ``streamfn dlq`` refuse a state directory whose queue file is damaged, emptied
or replaced (:class:`~streamfn.errors.StoreCorrupted`), because running on would drop the events
it held without a word. This is the way out, taken deliberately: every event and dead letter
that can still be read goes into a new queue file, the old one is moved aside (never deleted:
it is the evidence, and a better tool may get more out of it), and the report says what was
recovered and what was lost, by sequence number.

Rows are read by their sequence number (the table's rowid), so a damaged index costs nothing and
a damaged page costs only the rows on it: a range that fails is halved until the rows that
cannot be read are pinned down. The damaged file is never opened for writing: it is copied, and
SQLite reads the copy (with its write-ahead log, unless the log's header is damaged). A store
that passes every check is left alone.

Example::

    $ streamfn queue salvage --state-dir .streamfn
    salvaged .streamfn/async-events.sqlite3
      found: the event queue .streamfn/async-events.sqlite3 is damaged (...)
      events: 2950 recovered; unreadable: seq 1201-1250 (up to 50 lost)
      dead letters: 3 recovered; none lost
      damaged file kept as .streamfn/async-events.sqlite3.damaged-20261204T190000Z
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .asyncq import (
    DB_NAME,
    check_files,
    connect,
    is_corruption,
    lock_state_dir,
    read_marker,
    verify,
    wal_checksum,
    wal_damage,
    write_marker,
)
from .errors import ConfigError, StoreCorrupted, StreamfnError

EXIT_USAGE = 2
#: Rowids read per query; a failed range is halved down to single rows.
CHUNK = 4096

_EVENT_COLUMNS = (
    "seq",
    "id",
    "function",
    "qualifier",
    "payload",
    "enqueued_at",
    "attempts",
    "throttles",
    "due_at",
    "trace",
)
_LETTER_COLUMNS = (
    "seq",
    "id",
    "function",
    "qualifier",
    "payload",
    "enqueued_at",
    "attempts",
    "failed_at",
    "condition",
    "record",
)


@dataclass
class TableReport:
    """What became of one table's rows: how many were copied, which sequence numbers could not
    be read (a damaged page's rowids, some of which may have been deleted rows), and why a table
    could not be read at all."""

    name: str
    recovered: int = 0
    unreadable: list[int] = field(default_factory=list)
    failure: str | None = None

    def line(self) -> str:
        if self.failure is not None:
            return f"{self.name}: {self.recovered} recovered; {self.failure}"
        if not self.unreadable:
            return f"{self.name}: {self.recovered} recovered; none lost"
        ranges = ", ".join(
            str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in _ranges(self.unreadable)
        )
        return (
            f"{self.name}: {self.recovered} recovered; unreadable: seq {ranges} "
            f"(up to {len(self.unreadable)} lost)"
        )


@dataclass
class SalvageReport:
    """What ``salvage`` found wrong, what it copied, and where the damaged file went."""

    path: Path
    damage: str
    events: TableReport
    dead_letters: TableReport
    notes: list[str]
    kept_as: list[Path]

    def lines(self) -> list[str]:
        lines = [f"salvaged {self.path}", f"  found: {self.damage}"]
        lines += [f"  {self.events.line()}", f"  {self.dead_letters.line()}"]
        lines += [f"  {note}" for note in self.notes]
        lines += [f"  damaged file kept as {kept}" for kept in self.kept_as]
        return lines


def diagnose(state_dir: Path) -> str | None:
    """Why the worker would refuse ``state_dir``'s queue file, or None when it would not. Reads
    only: the file is opened read-only."""
    path = state_dir / DB_NAME
    try:
        marker = check_files(state_dir, wal=True)
        if not path.exists():
            return None
        # Without a log, immutable: SQLite then leaves no -wal or -shm file behind.
        logged = path.with_name(path.name + "-wal").exists()
        mode = "ro" if logged else "ro&immutable=1"
        conn = sqlite3.connect(f"file:{path}?mode={mode}", uri=True, isolation_level=None)
        try:
            verify(conn, state_dir, marker)
        finally:
            conn.close()
    except StoreCorrupted as exc:
        return exc.problem
    except sqlite3.DatabaseError as exc:
        if not is_corruption(exc):
            raise
        return f"the event queue {path} is damaged ({exc})"
    return None


def salvage(state_dir: str | os.PathLike[str]) -> SalvageReport | None:
    """Copy every readable event and dead letter of ``state_dir``'s queue file into a new one,
    keep the old files aside and return what happened; None (and nothing changed) when the
    store is sound. Raises :class:`~streamfn.errors.ConfigError` while a worker holds the
    directory, or when it has no queue."""
    state = Path(state_dir)
    path = state / DB_NAME
    if read_marker(state) is None and not path.exists():
        raise ConfigError(f"no async event queue in {state} (expected {path})")
    lock = lock_state_dir(
        state,
        busy="state directory {} is in use by a streamfn worker: stop it, then salvage",
    )
    try:
        damage = diagnose(state)
        if damage is None:
            return None
        return _salvage(state, damage)
    finally:
        os.close(lock)


def _salvage(state: Path, damage: str) -> SalvageReport:
    path = state / DB_NAME
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    work = state / f".salvage-{stamp}"
    work.mkdir()
    fresh = path.with_name(f"{DB_NAME}.salvaged-{stamp}")
    events, letters = TableReport("events"), TableReport("dead letters")
    notes: list[str] = []
    kept: list[Path] = []
    try:
        store_id = uuid.uuid4().hex
        target = connect(fresh)
        try:
            target.execute("INSERT INTO meta (key, value) VALUES ('store_id', ?)", (store_id,))
            with _readable_copy(path, work, notes) as source:
                if source is not None:
                    _copy(source, target, "events", _EVENT_COLUMNS, events)
                    _copy(source, target, "dead_letters", _LETTER_COLUMNS, letters)
                else:
                    for table in (events, letters):
                        table.failure = "nothing readable: every row it held is lost"
        finally:
            target.close()  # checkpoints: the new file stands alone
        kept = _move_aside(path, stamp)
        os.replace(fresh, path)
        write_marker(state, store_id)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        # The new file goes if it never took the old one's place (once the old one is aside, a
        # new file not yet in place is what was rescued: it stays, to be renamed by hand).
        leftovers = ("-wal", "-shm") if kept or not path.exists() else ("", "-wal", "-shm")
        for suffix in leftovers:
            with contextlib.suppress(FileNotFoundError):
                fresh.with_name(fresh.name + suffix).unlink()
    return SalvageReport(path, damage, events, letters, notes, kept)


@contextlib.contextmanager
def _readable_copy(path: Path, work: Path, notes: list[str]) -> Iterator[sqlite3.Connection | None]:
    """A connection to a copy of ``path`` with its write-ahead log applied (by SQLite when the
    log is sound, by :func:`_apply_log` when not), or None when there is nothing to read."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        notes.append("the queue file was deleted: the events it held are lost")
        yield None
        return
    if size == 0:
        notes.append("the queue file was emptied: the events it held are lost")
        yield None
        return
    copy = work / DB_NAME
    shutil.copyfile(path, copy)
    wal = path.with_name(path.name + "-wal")
    damage = wal_damage(path)
    if damage is not None:  # SQLite would stop at the damage: apply what is intact ourselves
        notes.append(f"{damage}: {_apply_log(copy, wal.read_bytes())}")
    elif wal.exists():
        shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
    try:
        conn = sqlite3.connect(copy, isolation_level=None)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        if not is_corruption(exc):
            raise
        notes.append(f"the file cannot be read as a database ({exc})")
        yield None
        return
    try:
        yield conn
    finally:
        conn.close()


def _apply_log(db: Path, log: bytes) -> str:
    """Write the intact frames of the damaged write-ahead log ``log`` into the database copy
    ``db``, transaction by transaction up to the last commit, as SQLite would have had the log
    been sound; a damaged frame is skipped, so its page keeps its previous version (which may
    cost the rows on that page, read or lost one by one later). Returns what it did, for the
    report. Frames are matched to the log by its salts, which every frame repeats: from the
    first frame when the header is damaged, its checksums then checked from the second on."""
    header_ok = _header_sound(log)
    first = 32
    with open(db, "rb") as source:  # the database's own header says it too (1 means 65536)
        page_size = int.from_bytes(source.read(18)[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if not 512 <= page_size <= 65536 or page_size & (page_size - 1):
        page_size = 4096  # SQLite's default, which the queue keeps
    if header_ok:
        page_size = int.from_bytes(log[8:12], "big")
        salts, sums = log[16:24], (int.from_bytes(log[24:28]), int.from_bytes(log[28:32]))
    elif len(log) >= first + 24:
        salts, sums = log[first + 8 : first + 16], None
    else:
        return "nothing in the log could be applied"
    big_endian = bool(log[3] & 1) if header_ok else True
    size = 24 + page_size
    pending: dict[int, bytes] = {}
    applied: dict[int, bytes] = {}
    pages, transactions, skipped = 0, 0, 0
    for at in range(first, len(log) - size + 1, size):
        frame = log[at : at + size]
        if frame[8:16] != salts:
            break  # a frame of the log's previous round: the log ends here
        stored = (int.from_bytes(frame[16:20]), int.from_bytes(frame[20:24]))
        if sums is not None:
            computed = wal_checksum(frame[:8] + frame[24:], sums, big_endian)
            if computed != stored and not header_ok and at == first + size:
                big_endian = not big_endian  # the byte order was in the damaged header
                computed = wal_checksum(frame[:8] + frame[24:], sums, big_endian)
            if computed != stored:
                skipped += 1
                sums = stored
                continue
        sums = stored
        pending[int.from_bytes(frame[:4])] = frame[24:]
        commit = int.from_bytes(frame[4:8])
        if commit:
            applied.update(pending)
            pending.clear()
            pages, transactions = commit, transactions + 1
    if not transactions:
        return "no committed transaction in the log could be applied"
    with open(db, "r+b") as target:
        for number, page in applied.items():
            if number <= pages:
                target.seek((number - 1) * page_size)
                target.write(page)
        target.truncate(pages * page_size)
    return (
        f"applied {transactions} committed transaction(s) of the log, skipping {skipped} "
        "damaged frame(s), whose pages keep their previous version"
    )


def _header_sound(log: bytes) -> bool:
    """Whether the log's 32-byte header holds (magic, version, page size, checksum)."""
    if len(log) < 32:
        return False
    magic, version, page_size = (int.from_bytes(log[i : i + 4]) for i in (0, 4, 8))
    return (
        magic & ~1 == 0x377F0682
        and version == 3007000
        and 512 <= page_size <= 65536
        and not page_size & (page_size - 1)
        and wal_checksum(log[:24], (0, 0), bool(magic & 1))
        == (int.from_bytes(log[24:28]), int.from_bytes(log[28:32]))
    )


def _copy(
    source: sqlite3.Connection,
    target: sqlite3.Connection,
    table: str,
    columns: Sequence[str],
    report: TableReport,
) -> None:
    """Copy ``table``'s readable rows in rowid ranges; a range that fails is halved until the
    unreadable rowids are known."""
    try:
        present = {row[1] for row in source.execute(f"PRAGMA table_info({table})")}
        top = _top(source, table) if present else 0
    except sqlite3.DatabaseError as exc:
        if not is_corruption(exc):
            raise
        report.failure = f"the table cannot be read ({exc}): its rows are lost"
        return
    if not present:
        report.failure = "the table is missing: its rows are lost"
        return
    picked = ", ".join(c if c in present else "NULL" for c in columns)
    select = f"SELECT {picked} FROM {table} WHERE seq BETWEEN ? AND ?"
    select_one = f"SELECT {picked} FROM {table} WHERE seq = ?"
    insert = (
        f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' * len(columns))})"
    )

    def visit(lo: int, hi: int) -> None:
        try:  # one row by its rowid touches only its own page, not the next one
            rows: list[Any] = (
                source.execute(select_one, (lo,)) if lo == hi else source.execute(select, (lo, hi))
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise
            if lo == hi:
                report.unreadable.append(lo)
                return
            middle = (lo + hi) // 2
            visit(lo, middle)
            visit(middle + 1, hi)
            return
        target.executemany(insert, rows)
        report.recovered += len(rows)

    target.execute("BEGIN IMMEDIATE")
    for start in range(1, top + 1, CHUNK):
        visit(start, min(top, start + CHUNK - 1))
    target.execute("COMMIT")


def _top(source: sqlite3.Connection, table: str) -> int:
    """The highest rowid ``table`` ever used: AUTOINCREMENT keeps it in sqlite_sequence, the
    table's own b-tree is the fallback."""
    best = 0
    for sql, params in (
        ("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)),
        (f"SELECT max(seq) FROM {table}", ()),
    ):
        try:
            row = source.execute(sql, params).fetchone()
        except sqlite3.OperationalError:  # no sqlite_sequence: nothing was ever inserted
            continue
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise
            continue
        if row is not None and row[0] is not None:
            best = max(best, int(row[0]))
    return best


def _move_aside(path: Path, stamp: str) -> list[Path]:
    """Rename the damaged file and its log and shared-memory files to ``*.damaged-<stamp>``."""
    kept: list[Path] = []
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        old = path.with_name(path.name + suffix)
        if old.exists():
            new = aside.with_name(aside.name + suffix)
            os.replace(old, new)
            if not suffix:
                kept.append(new)
    return kept


def _ranges(numbers: list[int]) -> Iterator[tuple[int, int]]:
    numbers = sorted(numbers)
    lo = hi = numbers[0]
    for n in numbers[1:]:
        if n != hi + 1:
            yield lo, hi
            lo = n
        hi = n
    yield lo, hi


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    default = os.environ.get("STREAMFN_STATE_DIR")
    parser.add_argument(
        "--state-dir",
        default=default,
        required=default is None,
        help="the worker's state directory (env STREAMFN_STATE_DIR); stop its worker first",
    )


def add_parser(subparsers: Any) -> None:
    """Add ``queue salvage`` to ``streamfn``'s subcommands (``subparsers`` is what
    ``ArgumentParser.add_subparsers`` returned); :func:`handle` runs it."""
    queue = subparsers.add_parser("queue", help="repair the async event queue of a state dir")
    actions = queue.add_subparsers(dest="action", required=True)
    salvage_parser = actions.add_parser(
        "salvage",
        help="copy what is readable of a damaged queue into a new one",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    _add_arguments(salvage_parser)


def handle(args: argparse.Namespace) -> int:
    """Run ``queue salvage`` and print its report; exit status 0 (salvaged, or nothing to do).
    Raises :class:`~streamfn.errors.ConfigError` (exit 2 in ``streamfn``) while a worker holds
    the directory, or when it has no queue."""
    report = salvage(args.state_dir)
    if report is None:
        print(f"nothing to salvage: the event queue in {args.state_dir} passes every check")
    else:
        print("\n".join(report.lines()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m streamfn.salvage --state-dir DIR``: the same command on its own."""
    parser = argparse.ArgumentParser(
        prog="python -m streamfn.salvage", description="Salvage a damaged async event queue."
    )
    _add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return handle(args)
    except StreamfnError as exc:
        print(f"streamfn: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
