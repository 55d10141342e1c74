"""The ``iterator_age_seconds`` gauge of KinesisSource and DynamoDBStreamSource (Lambda's
IteratorAge) against moto: it rises while a slow handler keeps records waiting in the stream,
and falls to 0 once the shard is caught up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streamfn import App, Batch, Context
from streamfn.testing import wait_until

from . import create_stream, ddb_source, kinesis_source, put
from .test_dynamodb_streams import create_table, dynamodb

pytestmark = pytest.mark.usefixtures("aws_env")

#: How long the test keeps records waiting: a lower bound for the age, never an upper one.
HOLD = 1.0


@dataclass
class Stream:
    """A one-shard stream of either kind: ``put(n)`` writes n records, ``source()`` reads it."""

    put: Callable[[int], None]
    source: Callable[..., Any]


@pytest.fixture(params=["kinesis", "dynamodb"])
def stream(request: pytest.FixtureRequest, moto_endpoint: str, tmp_path: Path) -> Stream:
    if request.param == "kinesis":
        name = create_stream(moto_endpoint, 1)
        return Stream(
            lambda n: put(moto_endpoint, name, [str(i) for i in range(n)]),
            lambda **options: kinesis_source(moto_endpoint, name, tmp_path, **options),
        )
    table, _ = create_table(moto_endpoint)
    client = dynamodb(moto_endpoint)

    def put_items(n: int) -> None:
        for i in range(n):
            client.put_item(TableName=table, Item={"Id": {"N": str(i)}})

    return Stream(
        put_items, lambda **options: ddb_source(moto_endpoint, table, tmp_path, **options)
    )


async def test_iterator_age_rises_while_a_slow_handler_keeps_records_waiting(
    stream: Stream,
) -> None:
    stream.put(6)
    source = stream.source(records_per_call=1)  # one record per GetRecords: one read per batch
    permits = asyncio.Semaphore(0)  # each invocation waits for one
    started = 0
    app = App()

    @app.consume(source, batch_size=1)
    async def handler(batch: Batch, context: Context) -> None:
        nonlocal started
        started += 1
        await permits.acquire()

    def age() -> float:
        [value] = source.gauges()["iterator_age_seconds"].values()
        return float(value)

    def read() -> int:
        return sum(m.records for m in source.metrics.values())

    async with app.running():
        # One record runs and the next waits in its lane: the poller reads no more for now.
        await wait_until(lambda: started == 1 and read() == 2)
        first = age()
        held_from = time.time()  # every record was put before this moment
        await wait_until(lambda: time.time() - held_from >= HOLD, timeout=HOLD + 10)
        permits.release()
        # The third record is read only now, at least HOLD after it was put.
        await wait_until(lambda: read() == 3)
        assert age() >= HOLD - 0.001  # whole milliseconds
        assert age() > first

        for _ in range(6):
            permits.release()
        await wait_until(lambda: started == 6 and age() == 0)
