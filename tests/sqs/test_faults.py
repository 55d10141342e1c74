"""Faults: a handler slower than the visibility timeout, and a worker killed mid-batch."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from streamfn import App, Context
from streamfn.connectors.sqs import SQSSource
from streamfn.testing import wait_until

from . import create_queue, send, sqs_client, wait_empty

CRASH_APP = Path(__file__).parent / "apps" / "crash_app.py"


@pytest.fixture
async def sqs(moto_endpoint: str, aws_env: None) -> AsyncIterator[Any]:
    async with sqs_client(moto_endpoint) as client:
        yield client


@pytest.mark.slow
async def test_a_handler_slower_than_the_visibility_timeout_gets_no_duplicate(
    sqs: Any, moto_endpoint: str
) -> None:
    url = await create_queue(sqs, visibility=2)
    await send(sqs, url, ["slow"])
    # A second poller keeps receiving: it would get the message if its visibility ran out.
    source = SQSSource(url, endpoint_url=moto_endpoint, min_pollers=2, max_pollers=2)
    receive_counts: list[str] = []
    app = App()

    @app.consume(source, timeout=10, event_format="lambda")
    async def handler(event: dict[str, Any], context: Context) -> None:
        receive_counts.append(event["Records"][0]["attributes"]["ApproximateReceiveCount"])
        await asyncio.sleep(5)

    async with app.running():
        await wait_until(lambda: source.deleted == 1, timeout=15)
    assert receive_counts == ["1"]
    assert source.received == 1
    await wait_empty(sqs, url)


def _batches(out: Path, kind: str) -> list[str]:
    if not out.exists():
        return []
    prefix = kind + " "
    return [line[len(prefix) :] for line in out.read_text().splitlines() if line.startswith(prefix)]


def _done(out: Path) -> set[str]:
    return {body for batch in _batches(out, "done") for body in batch.split()}


def _mid_batch(out: Path) -> bool:
    """Some batch finished and another one started without finishing."""
    done = _batches(out, "done")
    return bool(done) and bool(set(_batches(out, "start")) - set(done))


def _worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "streamfn.cli", "run", f"{CRASH_APP}:app", "--no-http"]
    with log.open("ab") as stderr:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)


@pytest.mark.slow
async def test_a_worker_killed_mid_batch_loses_no_message(
    sqs: Any, moto_endpoint: str, tmp_path: Path
) -> None:
    url = await create_queue(sqs, visibility=2)
    bodies = {f"m{i}" for i in range(30)}
    await send(sqs, url, sorted(bodies))
    out, log = tmp_path / "out.txt", tmp_path / "worker.log"
    env = {**os.environ, "SQS_QUEUE_URL": url, "SQS_ENDPOINT": moto_endpoint, "OUT": str(out)}

    first = _worker({**env, "HANDLER_DELAY": "0.5"}, log)
    try:
        await wait_until(lambda: _mid_batch(out), timeout=20)
    finally:
        first.kill()
        await asyncio.to_thread(first.wait)
    assert _done(out) < bodies, "the first worker must die with messages left"

    second = _worker({**env, "HANDLER_DELAY": "0"}, log)
    try:
        await wait_until(lambda: _done(out) == bodies, timeout=30)
        await wait_empty(sqs, url)
    finally:
        second.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(second.wait, 15)
    assert code == 0, log.read_text()
