"""What SQSSource tells an operator: its gauges (queue depth as SQS reports it, the age of the
oldest message received) and its log lines for dead-lettering, against moto."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from streamfn import App, Batch, Context
from streamfn.connectors.sqs import SQSSource
from streamfn.testing import MemoryDestination, wait_until

from . import counts, create_queue, send, sqs_client

#: How long the test keeps messages waiting: a lower bound for their age, never an upper one.
HOLD = 1.0


@pytest.fixture
async def sqs(moto_endpoint: str, aws_env: None) -> AsyncIterator[Any]:
    async with sqs_client(moto_endpoint) as client:
        yield client


async def test_depth_is_what_sqs_reports_and_age_rises_while_messages_wait(
    sqs: Any, moto_endpoint: str
) -> None:
    url = await create_queue(sqs)
    name = url.rsplit("/", 1)[-1]
    await send(sqs, url, [f"m{i}" for i in range(5)])
    sent_by = time.time()
    source = SQSSource(url, endpoint_url=moto_endpoint, max_pollers=1, depth_interval=0.05)
    assert source.gauges() == {}  # nothing known before it runs
    permits = asyncio.Semaphore(0)  # each invocation waits for one
    app = App()

    @app.consume(source, batch_size=1)
    async def handler(batch: Batch, context: Context) -> None:
        await permits.acquire()

    def gauge(name_: str) -> float:
        return source.gauges()[name_][name]

    async with app.running():
        # One message runs; a queue poller takes no more than it can invoke, so 4 stay visible.
        await wait_until(lambda: source.received == 1)
        assert await counts(sqs, url) == (4, 1)
        await wait_until(lambda: gauge("approximate_queue_depth") == 4)

        await wait_until(lambda: time.time() - sent_by >= HOLD, timeout=HOLD + 10)
        permits.release()
        # The second message is received only now, at least HOLD after it was sent.
        await wait_until(lambda: source.received == 2)
        assert gauge("approximate_oldest_message_age_seconds") >= HOLD - 0.001  # whole ms

        for _ in range(4):
            permits.release()
        await wait_until(lambda: source.deleted == 5)
        assert await counts(sqs, url) == (0, 0)
        await wait_until(
            lambda: (
                gauge("approximate_queue_depth") == 0
                and gauge("approximate_oldest_message_age_seconds") == 0
            )  # a receive came back empty
        )
    assert source.gauges() == {}


async def test_dead_lettering_is_logged_with_the_queue_ids_count_destination_and_reason(
    sqs: Any, moto_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = await create_queue(sqs)
    name = url.rsplit("/", 1)[-1]
    await send(sqs, url, ["a", "b", "c"])
    dead_letter = MemoryDestination(fail_times=1)  # the first send fails, the next ones work
    source = SQSSource(
        url, endpoint_url=moto_endpoint, dead_letter=dead_letter, max_receives=2, retry_delay=0
    )
    app = App()

    @app.consume(source, batch_size=10)
    async def handler(batch: Batch, context: Context) -> None:
        raise ValueError("bad message")

    with caplog.at_level(logging.INFO, "streamfn.sqs"):
        async with app.running():
            await wait_until(lambda: source.dead_lettered == 3)

    moved = [r for r in caplog.records if r.getMessage().startswith("messages failed on their")]
    assert sum(r.count for r in moved) == 3
    assert sorted(i for r in moved for i in r.messageIds) == sorted(
        record["messageId"] for record in dead_letter.records
    )
    for line in moved:
        assert line.levelno == logging.WARNING
        assert (line.queue, line.destination, line.maxReceives) == (name, "memory", 2)
        assert "max_receives" in line.getMessage() and "deleted" in line.getMessage()

    [failed] = [
        r for r in caplog.records if r.levelno == logging.ERROR and r.name == "streamfn.sqs"
    ]
    assert failed.getMessage().startswith("dead_letter destination failed")
    assert (failed.errorType, failed.errorMessage) == (
        "ConnectionError",
        "destination unavailable (injected)",
    )
    assert "stay in the queue" in failed.getMessage()
    recovered = [r for r in caplog.records if r.getMessage().endswith(": recovered")]
    assert [r.levelno for r in recovered] == [logging.INFO]
