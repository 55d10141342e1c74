"""A damaged, emptied or replaced event queue file is refused, never run on as if empty, and
``streamfn queue salvage`` gets back what is readable. The files are real SQLite files damaged
the way disks and people damage them: random bytes over pages, over the header, over the
write-ahead log, a truncation to zero bytes, a deletion, another store's file put in place."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import sys
import time
from pathlib import Path

import orjson
import pytest

from streamfn import salvage
from streamfn.asyncq import (
    DB_NAME,
    MARKER_NAME,
    DeadLetter,
    DeadLetterStore,
    QueuedEvent,
    SQLiteEventQueue,
    wal_damage,
)
from streamfn.cli import main as cli_main
from streamfn.errors import StoreCorrupted

ROOT = Path(__file__).resolve().parent.parent
APP = f"{ROOT}/tests/http/apps/async_app.py:app"
PAGE = 4096  # SQLite's default page size, which the queue keeps
SALVAGE = "streamfn queue salvage --state-dir"


def payload(n: int) -> bytes:
    return orjson.dumps({"n": n, "pad": "x" * 120})


def needle(n: int) -> bytes:
    """Bytes found only in event ``n``'s payload, to find the page that holds it."""
    return b'{"n":%d,' % n


async def fill(state: Path, events: int, letters: int = 0) -> None:
    """A closed queue holding ``events`` events (r0...), the first ``letters`` of them dead
    letters."""
    now = time.time()
    async with SQLiteEventQueue(state) as queue:
        for start in range(0, events, 500):  # in order: seq n + 1 is event n
            batch = range(start, min(events, start + 500))
            await asyncio.gather(
                *(
                    queue.put(QueuedEvent(f"r{n}", "f", None, payload(n), now, due_at=now))
                    for n in batch
                )
            )
        received: list[QueuedEvent] = []
        async with asyncio.timeout(10):
            while len(received) < letters:
                received += await queue.receive(letters - len(received))
        for event in received:
            letter = DeadLetter(event.request_id, "f", None, payload(0), now, 3, now, "X", {})
            await queue.dead_letter(event, letter)


def garble(path: Path, offset: int, length: int, seed: int = 7) -> None:
    with open(path, "r+b") as out:
        out.seek(offset)
        out.write(random.Random(seed).randbytes(length))


def content(path: Path) -> bytes:
    return path.read_bytes()


def pages_holding(path: Path, numbers: list[int]) -> list[int]:
    data = path.read_bytes()
    return sorted({data.index(needle(n)) // PAGE for n in numbers})


def events_on(path: Path, pages: list[int], count: int) -> set[str]:
    data = path.read_bytes()
    held = b"".join(data[p * PAGE : (p + 1) * PAGE] for p in pages)
    return {f"r{n}" for n in range(count) if needle(n) in held}


async def stored_ids(state: Path) -> set[str]:
    async with SQLiteEventQueue(state) as queue:
        return set(queue._known)


async def refusal(state: Path) -> StoreCorrupted:
    with pytest.raises(StoreCorrupted) as refused:
        async with SQLiteEventQueue(state):
            pass
    return refused.value


async def run_cli(*args: str, timeout: float = 30.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamfn.cli",
        *args,
        cwd=ROOT,
        env={**os.environ, "TEST_OUT": os.devnull},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(timeout):
        stdout, stderr = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, stdout.decode(), stderr.decode()


@pytest.fixture
async def state(tmp_path: Path) -> Path:
    """A closed queue of 3,000 events and 20 dead letters."""
    state = tmp_path / "state"
    await fill(state, 3000, letters=20)
    return state


async def test_malformed_pages_are_refused_naming_the_file_and_the_salvage(state: Path) -> None:
    db = state / DB_NAME
    for page in pages_holding(db, [1000]):
        garble(db, page * PAGE, PAGE)
    error = await refusal(state)
    assert error.path == str(db)
    assert f"the event queue {db} is damaged (" in str(error)
    assert f"{SALVAGE} {state}" in str(error)
    assert "\n" not in str(error)
    with pytest.raises(StoreCorrupted, match="is damaged"):
        DeadLetterStore(state)


async def test_a_file_that_is_not_a_database_is_refused(state: Path) -> None:
    garble(state / DB_NAME, 0, 100)
    assert "file is not a database" in str(await refusal(state))
    with pytest.raises(StoreCorrupted, match="file is not a database"):
        DeadLetterStore(state)


async def test_salvage_copies_every_readable_event_and_reports_the_lost(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = state / DB_NAME
    pages = pages_holding(db, [1000, 2000])
    lost = events_on(db, pages, 3000)
    assert 2 <= len(lost) < 100  # two pages' worth of events
    for page in pages:
        garble(db, page * PAGE, PAGE)
    damaged = db.read_bytes()

    assert salvage.main(["--state-dir", str(state)]) == 0

    report = capsys.readouterr().out.splitlines()
    assert report[0] == f"salvaged {db}"
    assert "database disk image is malformed" in report[1]
    assert report[2].startswith(f"events: {2980 - len(lost)} recovered; unreadable: seq ", 2)
    assert report[2].endswith(f"(up to {len(lost)} lost)")
    assert report[3] == "  dead letters: 20 recovered; none lost"
    kept = Path(report[-1].removeprefix("  damaged file kept as "))
    assert content(kept) == damaged  # moved aside untouched, never deleted
    assert await stored_ids(state) == {f"r{n}" for n in range(20, 3000)} - lost
    store = DeadLetterStore(state)
    try:
        assert {letter.request_id for letter in store.letters()} == {f"r{n}" for n in range(20)}
    finally:
        store.close()


async def test_salvage_of_a_file_that_is_not_a_database_starts_a_new_queue(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    garble(state / DB_NAME, 0, PAGE)
    assert salvage.main(["--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert "events: 0 recovered; nothing readable: every row it held is lost" in out
    assert "cannot be read as a database" in out
    assert await stored_ids(state) == set()


async def test_salvage_leaves_a_sound_store_alone(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(os.listdir(state))
    assert salvage.main(["--state-dir", str(state)]) == 0
    assert "nothing to salvage" in capsys.readouterr().out
    assert sorted(os.listdir(state)) == before


async def test_salvage_waits_for_the_worker_to_stop(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with SQLiteEventQueue(state):
        assert salvage.main(["--state-dir", str(state)]) == 2
    assert "in use by a streamfn worker: stop it, then salvage" in capsys.readouterr().err


def test_salvage_needs_a_queue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert salvage.main(["--state-dir", str(tmp_path)]) == 2
    assert "no async event queue in" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["truncated to zero bytes", "deleted"])
async def test_an_emptied_queue_file_is_refused_until_salvaged(
    state: Path, how: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = state / DB_NAME
    if how == "deleted":
        db.unlink()
    else:
        os.truncate(db, 0)
    error = await refusal(state)
    assert f"the event queue {db} was {how}, yet {state / MARKER_NAME} says" in str(error)
    assert f"{SALVAGE} {state}" in str(error)
    with pytest.raises(StoreCorrupted, match=how):
        DeadLetterStore(state)
    assert await refusal(state)  # refused every time, not only the first

    assert salvage.main(["--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert f"the queue file was {'deleted' if how == 'deleted' else 'emptied'}" in out
    assert await stored_ids(state) == set()  # accepted deliberately: a new, empty queue
    assert await stored_ids(state) == set()


async def test_a_replaced_queue_file_is_refused(state: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    await fill(other, 5)
    shutil.copyfile(other / DB_NAME, state / DB_NAME)
    assert "is not the one this directory created" in str(await refusal(state))
    assert salvage.main(["--state-dir", str(state)]) == 0  # adopts it, every event kept
    assert await stored_ids(state) == {f"r{n}" for n in range(5)}


async def test_a_lost_marker_is_written_again_from_the_file(state: Path) -> None:
    marker = state / MARKER_NAME
    store_id = marker.read_text()
    marker.unlink()
    assert len(await stored_ids(state)) == 2980
    assert marker.read_text() == store_id


def wal_snapshot(state: Path, into: Path) -> Path:
    """The files of ``state`` as a kill -9 would leave them: the database and its log."""
    into.mkdir()
    for name in (DB_NAME, f"{DB_NAME}-wal", MARKER_NAME):
        shutil.copyfile(state / name, into / name)
    return into


@pytest.fixture
async def crashed(tmp_path: Path) -> Path:
    """A state directory copied while its queue was open: 30 events committed one by one, all in
    the write-ahead log."""
    live, now = tmp_path / "live", time.time()
    async with SQLiteEventQueue(live) as queue:
        for n in range(30):
            await queue.put(QueuedEvent(f"r{n}", "f", None, payload(n), now, due_at=now + 3600))
        return wal_snapshot(live, tmp_path / "crashed")


async def test_a_sound_write_ahead_log_is_replayed(crashed: Path) -> None:
    assert wal_damage(crashed / DB_NAME) is None
    assert await stored_ids(crashed) == {f"r{n}" for n in range(30)}


async def test_a_log_cut_short_at_its_end_is_a_crash_not_damage(crashed: Path) -> None:
    wal = crashed / f"{DB_NAME}-wal"
    garble(wal, wal.stat().st_size - 100, 16)
    assert wal_damage(crashed / DB_NAME) is None
    assert len(await stored_ids(crashed)) == 29  # the last commit never returned


@pytest.mark.parametrize(
    ("offset", "damage"),
    [
        (0, "the header of its write-ahead log async-events.sqlite3-wal is damaged"),
        (
            32 + 2 * (24 + PAGE) + 24 + 200,
            "frame 3 of its write-ahead log async-events.sqlite3-wal is damaged, and the "
            "transactions committed after it would be lost",
        ),
    ],
)
async def test_a_damaged_write_ahead_log_is_refused(
    crashed: Path, offset: int, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    wal = crashed / f"{DB_NAME}-wal"
    garble(wal, offset, 16)
    garbled = content(wal)
    error = await refusal(crashed)
    assert damage in str(error)
    assert f"{SALVAGE} {crashed}" in str(error)
    assert salvage.main(["--state-dir", str(crashed)]) == 0
    assert damage in capsys.readouterr().out
    (kept,) = [name for name in os.listdir(crashed) if name.endswith("-wal")]
    assert kept.startswith(f"{DB_NAME}.damaged-")
    assert content(crashed / kept) == garbled  # the evidence, untouched
    # every frame but the damaged one applied, whose page kept its previous version
    assert await stored_ids(crashed) == {f"r{n}" for n in range(30)}


# Through ``streamfn``'s own command line. These need streamfn/cli.py to map StoreCorrupted to
# exit 2 and to wire ``queue salvage`` (see the report of issue 13).


async def test_streamfn_run_on_a_damaged_queue_exits_2_naming_the_file(state: Path) -> None:
    garble(state / DB_NAME, 0, 100)
    code, _, stderr = await run_cli("run", APP, "--no-http", "--state-dir", str(state))
    assert code == 2
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"streamfn: error: the event queue {state / DB_NAME} is damaged")
    assert f"{SALVAGE} {state}" in last
    assert "Traceback" not in stderr


async def test_streamfn_dlq_list_on_a_damaged_queue_exits_2_naming_the_file(
    state: Path,
) -> None:
    db = state / DB_NAME
    for page in pages_holding(db, [0]):  # the dead letters' pages hold event 0's payload
        garble(db, page * PAGE, PAGE)
    code, _, stderr = await run_cli("dlq", "list", "--state-dir", str(state))
    assert code == 2
    assert stderr.startswith(f"streamfn: error: the event queue {db} is damaged")
    assert len(stderr.strip().splitlines()) == 1


async def test_streamfn_run_on_an_emptied_queue_exits_2(state: Path) -> None:
    os.truncate(state / DB_NAME, 0)
    code, _, stderr = await run_cli("run", APP, "--no-http", "--state-dir", str(state))
    assert code == 2
    assert "was truncated to zero bytes" in stderr.strip().splitlines()[-1]


async def test_streamfn_queue_salvage(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    os.truncate(state / DB_NAME, 0)
    assert cli_main(["queue", "salvage", "--state-dir", str(state)]) == 0
    assert capsys.readouterr().out.startswith(f"salvaged {state / DB_NAME}")
    assert await stored_ids(state) == set()
