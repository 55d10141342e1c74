"""The SQLite event queue's group-commit writer: nothing written is lost on close."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from streamfn.asyncq import _GroupCommit, connect


async def test_close_in_the_same_round_as_writes_commits_them_and_returns(tmp_path: Path) -> None:
    conn = connect(tmp_path / "q.sqlite3")
    conn.execute("CREATE TABLE t (n INTEGER)")
    with ThreadPoolExecutor(1) as db:
        writer = _GroupCommit(conn, db)
        running = asyncio.create_task(writer.run())
        first = asyncio.create_task(writer.write(("INSERT INTO t VALUES (?)", (1,))))
        await asyncio.sleep(0)  # the writer takes the first batch
        second = asyncio.create_task(writer.write(("INSERT INTO t VALUES (?)", (2,))))
        await asyncio.sleep(0)
        writer.close()
        async with asyncio.timeout(10):
            await asyncio.gather(first, second, running)
    assert sorted(n for (n,) in conn.execute("SELECT n FROM t")) == [1, 2]
    conn.close()
