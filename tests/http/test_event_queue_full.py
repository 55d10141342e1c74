"""A full event queue over the Invoke API: an ``Event`` invocation is refused with Lambda's
``429 TooManyRequestsException`` (its body shape, a ``Retry-After``, boto3's error), counted in
the metrics, and accepted again once the queue drains."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from streamfn import App, Context
from streamfn.asyncq import QUEUE_FULL_REASON, RETRY_AFTER

from .support import DEADLINE, Served, invoke, invoke_error, raw_request, serving, wait_until

PATH = "/2015-03-31/functions/held/invocations"
EVENT = {"X-Amz-Invocation-Type": "Event"}


@pytest.fixture
async def full(tmp_path: Path) -> AsyncIterator[tuple[Served, asyncio.Event]]:
    """A served app whose SQLite queue holds two events, both held by a running handler until
    the gate opens: the queue is full when the fixture yields."""
    app = App("full", state_dir=tmp_path / "state", async_queue_max_events=2)
    gate = asyncio.Event()

    @app.function()
    async def held(event: Any, context: Context) -> None:
        await gate.wait()

    async with serving(app) as served:
        async with asyncio.timeout(DEADLINE):
            for n in range(2):
                accepted = await raw_request(served.port, "POST", PATH, b'{"n": %d}' % n, EVENT)
                assert accepted.status == 202
        try:
            yield served, gate
        finally:
            gate.set()


async def test_a_full_queue_answers_429_too_many_requests(
    full: tuple[Served, asyncio.Event],
) -> None:
    served, _ = full
    async with asyncio.timeout(DEADLINE):
        raw = await raw_request(served.port, "POST", PATH, b"{}", EVENT)
        error = await invoke_error(
            served.client, FunctionName="held", InvocationType="Event", Payload=b"{}"
        )
    assert raw.status == 429
    assert raw.headers["x-amzn-errortype"] == "TooManyRequestsException"
    body = raw.json()
    assert set(body) == {"Type", "message", "Reason"}
    assert (body["Type"], body["Reason"]) == ("User", QUEUE_FULL_REASON)
    assert body["message"].startswith("Rate Exceeded. The asynchronous event queue is full")
    assert error["Error"]["Code"] == "TooManyRequestsException"
    assert error["Reason"] == QUEUE_FULL_REASON
    metrics = served.app.metrics.render()
    assert 'streamfn_async_queue_refused_total{function="held"} 2' in metrics


async def test_a_full_queue_says_when_to_retry(full: tuple[Served, asyncio.Event]) -> None:
    """Needs connectors/http/invoke.py's ``_error_response`` to send ``Retry-After`` when
    ``TooManyRequests.retry_after`` is set."""
    served, _ = full
    async with asyncio.timeout(DEADLINE):
        raw = await raw_request(served.port, "POST", PATH, b"{}", EVENT)
    assert raw.status == 429
    assert raw.headers["retry-after"] == str(RETRY_AFTER)


async def test_a_drained_queue_accepts_again(full: tuple[Served, asyncio.Event]) -> None:
    served, gate = full
    async with asyncio.timeout(DEADLINE):
        refused = await raw_request(served.port, "POST", PATH, b"{}", EVENT)
        gate.set()
        await wait_until(lambda: served.app.invoker.queue.depth() == 0)
        response, _ = await invoke(
            served.client, FunctionName="held", InvocationType="Event", Payload=b"{}"
        )
    assert refused.status == 429
    assert response["StatusCode"] == 202
