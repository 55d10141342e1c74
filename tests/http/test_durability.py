"""The durable event queue under ``streamfn run``: accepted events survive ``kill -9``, and the
``streamfn dlq`` commands list, show and redrive what failed for good."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from .support import APPS, DEADLINE, cli_output, send_events, streamfn_run, wait_until

pytestmark = pytest.mark.slow

TARGET = f"{APPS}/async_app.py:app"


def done_ids(out: Path) -> set[str]:
    return set(out.read_text().split()) if out.exists() else set()


async def test_every_accepted_event_runs_after_kill_9(tmp_path: Path) -> None:
    out, state = tmp_path / "out.txt", str(tmp_path / "state")
    env = {"TEST_OUT": str(out), "TEST_HOLD": "1"}
    ids = [f"e{i}" for i in range(40)]
    async with streamfn_run(TARGET, "--state-dir", state, env=env) as cli:
        async with asyncio.timeout(DEADLINE):
            accepted = await send_events(
                cli.port, "record", [json.dumps({"id": i}).encode() for i in ids]
            )
        cli.proc.send_signal(signal.SIGKILL)
        await cli.proc.wait()
    assert len(accepted) == 40
    assert done_ids(out) == set()  # every event was held: none ran before the kill
    async with streamfn_run(TARGET, "--state-dir", state, env={**env, "TEST_HOLD": "0"}):
        await wait_until(lambda: done_ids(out) == set(ids))


async def test_dlq_list_show_and_redrive(tmp_path: Path) -> None:
    out, state, healthy = tmp_path / "out.txt", str(tmp_path / "state"), tmp_path / "healthy"
    env = {"TEST_OUT": str(out), "TEST_HEALTHY": str(healthy)}
    async with streamfn_run(TARGET, "--state-dir", state, env=env) as cli:
        async with asyncio.timeout(DEADLINE):
            request_ids = await send_events(
                cli.port, "fails", [json.dumps({"id": f"d{i}"}).encode() for i in range(3)]
            )
        listed: list[dict[str, object]] = []

        async def dead_letters() -> list[dict[str, object]]:
            code, stdout, _ = await cli_output("dlq", "list", "--json", "--state-dir", state)
            assert code == 0
            return [json.loads(line) for line in stdout.splitlines()]

        async with asyncio.timeout(DEADLINE):
            while len(listed) < 3:
                listed = await dead_letters()
        assert {d["requestId"] for d in listed} == set(request_ids)
        assert {d["condition"] for d in listed} == {"RetriesExhausted"}

        code, stdout, _ = await cli_output("dlq", "show", request_ids[0], "--state-dir", state)
        shown = json.loads(stdout)
        assert code == 0
        assert shown["payload"] == {"id": "d0"}
        assert shown["record"]["responsePayload"]["errorMessage"] == "unhealthy d0"

        code, table, _ = await cli_output("dlq", "list", "--state-dir", state)
        assert code == 0 and table.splitlines()[0].startswith("REQUEST ID")
        assert len(table.splitlines()) == 4

        healthy.touch()
        code, stdout, _ = await cli_output("dlq", "redrive", request_ids[0], "--state-dir", state)
        assert (code, stdout.strip()) == (0, "redrove 1 event(s)")
        await wait_until(lambda: done_ids(out) == {"d0"})
        code, stdout, _ = await cli_output(
            "dlq", "redrive", "--all", "--function", "fails", "--state-dir", state
        )
        assert (code, stdout.strip()) == (0, "redrove 2 event(s)")
        await wait_until(lambda: done_ids(out) == {"d0", "d1", "d2"})
        assert await dead_letters() == []


async def test_dlq_errors(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    missing = await cli_output("dlq", "list", "--state-dir", state)
    async with streamfn_run(TARGET, "--state-dir", state, env={"TEST_OUT": "/dev/null"}):
        unknown_show = await cli_output("dlq", "show", "nope", "--state-dir", state)
        unknown_redrive = await cli_output("dlq", "redrive", "nope", "--state-dir", state)
    assert missing[0] == 2 and "no async event queue in" in missing[2]
    assert unknown_show[0] == 1 and "no dead letter with request id 'nope'" in unknown_show[2]
    assert unknown_redrive[0] == 1


async def test_a_second_worker_on_the_same_state_dir_exits_2(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    async with streamfn_run(TARGET, "--state-dir", state, env={"TEST_OUT": "/dev/null"}):
        code, _, stderr = await cli_output("run", TARGET, "--port", "0", "--state-dir", state)
    assert code == 2
    assert "is in use by another streamfn worker" in stderr
