"""SIGTERM ends ``streamfn run`` with exit status 0 within its shutdown timeout (plus a few
seconds) even while a handler hangs: in an execution environment (killed) or in a worker
thread (which nothing waits for at exit)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from streamfn.testing import wait_until

ROOT = Path(__file__).resolve().parents[2]
SHUTDOWN_TIMEOUT = 1.0


@pytest.mark.parametrize("execution", ["environment", "thread"])
async def test_sigterm_exits_0_within_the_shutdown_timeout_with_a_hung_handler(
    tmp_path: Path, execution: str
) -> None:
    log = tmp_path / "log"
    params = {"log": str(log), "lock": str(tmp_path / "lock"), "sleep": 1000}
    env = dict(
        os.environ,
        ENV_TEST_EXECUTION=execution,
        ENV_TEST_PARAMS=json.dumps(params),
        PYTHONPATH=str(ROOT),
    )
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("streamfn")),
        "run",
        "tests.environments.apps:app",
        "--no-http",
        "--shutdown-timeout",
        str(SHUTDOWN_TIMEOUT),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_until(lambda: log.exists() and "start" in log.read_text(), timeout=30)
        pid = int(log.read_text().split()[2])
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(SHUTDOWN_TIMEOUT + 5):
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0
    if execution == "environment":
        assert pid != proc.pid
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the environment went with the worker
