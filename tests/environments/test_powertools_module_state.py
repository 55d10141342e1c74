"""Powertools' module-level ``BatchProcessor`` pattern, unmodified, on Kafka, Kinesis and SQS
mappings at once: by default each ``def`` Lambda-format handler runs in execution
environments, one invocation per process at a time, so every invocation reports its own
batch's failures. Ten rounds, each with one failing record per source."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from streamfn import App
from streamfn.connectors.sqs import SQSSource
from streamfn.testing import wait_until
from streamfn.testing.servers import TansuBroker

from ..kafka.conftest import Kafka
from ..kinesis import create_stream, kinesis_source, put
from ..sqs import create_queue, send, sqs_client
from . import powertools_handlers

pytestmark = pytest.mark.usefixtures("aws_env")

ROUNDS = 10
PER_ROUND = 4  # records per source per round; the second one fails once
REPORT = ["ReportBatchItemFailures"]
FAST = {"retry_base_delay": 0.001, "retry_max_delay": 0.01, "maximum_batching_window": 0.05}


def _round(source: str, n: int) -> list[dict[str, Any]]:
    return [{"id": f"{source}-{n}-{i}", "fail": i == 1} for i in range(PER_ROUND)]


async def test_module_level_batch_processors_report_their_own_failures_on_three_sources(
    kafka_broker: TansuBroker,
    moto_endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out, markers = tmp_path / "out.jsonl", tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv("PT_OUT", str(out))  # the environments inherit the worker's variables
    monkeypatch.setenv("PT_MARKERS", str(markers))
    kafka = Kafka(kafka_broker.address)
    topic = await kafka.create_topic(partitions=2)
    stream = create_stream(moto_endpoint, 2)
    app = App()
    kafka_source = kafka.source(topic)
    app.consume(kafka_source, event_format="lambda", function_response_types=REPORT, **FAST)(
        powertools_handlers.kafka_handler
    )
    app.consume(
        kinesis_source(moto_endpoint, stream, tmp_path / "leases"),
        event_format="lambda",
        function_response_types=REPORT,
        **FAST,
    )(powertools_handlers.kinesis_handler)
    async with sqs_client(moto_endpoint) as sqs:
        url = await create_queue(sqs)
        app.consume(
            SQSSource(url, endpoint_url=moto_endpoint, retry_delay=0),
            event_format="lambda",
            function_response_types=REPORT,
            maximum_batching_window=0.05,
        )(powertools_handlers.sqs_handler)
        assert {f.execution for f in app.functions.values()} == {"environment"}
        expected: set[str] = set()
        group = kafka_source.group_id
        async with app.running():
            for n in range(ROUNDS):
                key = uuid.uuid4().hex
                await kafka.produce(
                    topic,
                    [json.dumps(r).encode() for r in _round("kafka", n)],
                    key=lambda i, key=key: f"{key}{i % 2}".encode(),
                )
                put(
                    moto_endpoint,
                    stream,
                    [json.dumps(r) for r in _round("kinesis", n)],
                    key=lambda i, key=key: f"{key}{i % 2}",
                )
                await send(sqs, url, [json.dumps(r) for r in _round("sqs", n)])
                expected |= {r["id"] for s in ("kafka", "kinesis", "sqs") for r in _round(s, n)}
            await wait_until(lambda: _succeeded(out) >= expected, timeout=60)
            failing = {i for i in expected if i.split("-")[2] == "1"}
            async with asyncio.timeout(30):  # Kafka commits everything, in the end
                while (
                    sum(c or 0 for c in await kafka.committed(group, topic, 2)) < ROUNDS * PER_ROUND
                ):
                    await asyncio.sleep(0.05)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    reported = Counter(f for line in lines for f in line["failed"])
    assert reported == Counter(failing)  # each failing record once, on its first delivery
    for line in lines:
        assert set(line["failed"]) <= set(line["ids"])  # by the invocation that had it
        assert all(i.startswith(line["source"]) for i in line["ids"])
    for record in failing:  # redelivered after its failure: nothing committed past it
        first = next(k for k, line in enumerate(lines) if record in line["failed"])
        assert any(record in line["ids"] for line in lines[first + 1 :])


def _succeeded(out: Path) -> set[str]:
    """Ids delivered at least once in an invocation that did not report them failed."""
    if not out.exists():
        return set()
    done: set[str] = set()
    for line in out.read_text().splitlines():
        entry = json.loads(line)
        done |= set(entry["ids"]) - set(entry["failed"])
    return done
