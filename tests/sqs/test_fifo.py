"""SQSSource on a FIFO queue: order per MessageGroupId through a failure in the middle of a
group, the FIFO fields of the Lambda event, and no group on two pollers at once."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest

from streamfn import App, Batch, Context
from streamfn.connectors.sqs import SQSSource
from streamfn.testing import wait_until

from . import create_queue, send, sqs_client, wait_empty


@pytest.fixture
async def sqs(moto_endpoint: str, aws_env: None) -> AsyncIterator[Any]:
    async with sqs_client(moto_endpoint) as client:
        yield client


def group_of(body: str) -> str:
    return body[0]


async def test_a_failure_releases_the_rest_of_its_group_in_order(
    sqs: Any, moto_endpoint: str
) -> None:
    url = await create_queue(sqs, fifo=True)
    bodies = [f"{group}{i}" for i in range(5) for group in "AB"]  # A0 B0 A1 B1 ... A4 B4
    await send(sqs, url, bodies, group=group_of)
    source = SQSSource(url, endpoint_url=moto_endpoint, retry_delay=0)
    events: list[dict[str, Any]] = []
    app = App()

    @app.consume(source, event_format="lambda", function_response_types=["ReportBatchItemFailures"])
    async def handler(event: dict[str, Any], context: Context) -> dict[str, Any]:
        events.append(event)
        if len(events) > 1:
            return {"batchItemFailures": []}
        # Reports A2 alone, not the unprocessed A3 and A4 after it: the source holds those back.
        failed = [r["messageId"] for r in event["Records"] if r["body"] == "A2"]
        return {"batchItemFailures": [{"itemIdentifier": i} for i in failed]}

    async with app.running():
        await wait_until(lambda: source.deleted == 10)
    deliveries = [[r["body"] for r in event["Records"]] for event in events]
    assert deliveries[0] == bodies
    assert [body for batch in deliveries[1:] for body in batch] == ["A2", "A3", "A4"]
    first = events[0]["Records"][0]["attributes"]
    assert first["MessageGroupId"] == "A"
    assert {"MessageDeduplicationId", "SequenceNumber"} <= set(first)
    await wait_empty(sqs, url)


async def test_a_group_never_runs_on_two_pollers_at_once(sqs: Any, moto_endpoint: str) -> None:
    url = await create_queue(sqs, fifo=True)
    bodies = [f"{group}{i}" for i in range(4) for group in "ABC"]
    await send(sqs, url, bodies, group=group_of)
    source = SQSSource(url, endpoint_url=moto_endpoint, min_pollers=3, max_pollers=3)
    running: set[bytes | None] = set()
    overlaps: list[set[bytes | None]] = []
    order: dict[str, list[str]] = defaultdict(list)
    pollers: set[str] = set()
    app = App()

    @app.consume(source, batch_size=2)
    async def handler(batch: Batch, context: Context) -> None:
        groups = {r.key for r in batch}
        if groups & running:
            overlaps.append(groups & running)
        running.update(groups)
        pollers.add(batch.partition)
        await asyncio.sleep(0.05)
        running.difference_update(groups)
        for rec in batch:
            order[group_of(rec.text)].append(rec.text)

    async with app.running():
        await wait_until(lambda: source.deleted == len(bodies), timeout=30)
    assert not overlaps
    assert order == {g: [f"{g}{i}" for i in range(4)] for g in "ABC"}
    assert len(pollers) > 1
