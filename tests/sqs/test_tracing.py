"""Tracing an SQS mapping on moto: the batch span links to each message's upstream context, from
its ``AWSTraceHeader`` system attribute (X-Ray's format) or a W3C ``traceparent`` message
attribute, and a message dead-lettered from the batch carries the batch's context on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from streamfn import App, Batch, Context
from streamfn.connectors.sqs import SQSDestination, SQSSource
from streamfn.testing import wait_until

from ..otel import only, producer_span, traced
from . import create_queue, sqs_client

X_RAY = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


@pytest.fixture
async def sqs(moto_endpoint: str, aws_env: None) -> AsyncIterator[Any]:
    async with sqs_client(moto_endpoint) as client:
        yield client


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    with traced() as exporter:
        yield exporter


async def test_batch_span_links_aws_trace_header_and_traceparent_attribute(
    sqs: Any, moto_endpoint: str, exporter: InMemorySpanExporter
) -> None:
    url = await create_queue(sqs)
    producer, traceparent = producer_span()
    await sqs.send_message(
        QueueUrl=url,
        MessageBody="from x-ray",
        MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String", "StringValue": X_RAY}},
    )
    await sqs.send_message(
        QueueUrl=url,
        MessageBody="from opentelemetry",
        MessageAttributes={"traceparent": {"DataType": "String", "StringValue": traceparent}},
    )
    source = SQSSource(url, endpoint_url=moto_endpoint)
    app = App()

    @app.consume(source, batch_size=2, maximum_batching_window=1)
    async def handler(batch: Batch, context: Context) -> None:
        pass

    async with app.running():
        await wait_until(lambda: source.deleted == 2)
    spans = exporter.get_finished_spans()
    batch = only(spans, f"process {source.ref.name}")
    assert batch.kind is SpanKind.CONSUMER
    attributes = dict(batch.attributes or {})
    assert attributes["messaging.system"] == "aws_sqs"
    assert attributes["messaging.destination.name"] == source.ref.name
    assert attributes["messaging.batch.message_count"] == 2
    assert [(link.context.trace_id, link.context.span_id) for link in batch.links] == [
        (0x5759E988BD862E3FE1BE46A994272793, 0x53995C3F42CD8AD8),
        (producer.context.trace_id, producer.context.span_id),
    ]
    invocation = only(spans, "handler")
    assert invocation.parent is not None
    assert invocation.parent.span_id == batch.context.span_id


async def test_dead_lettered_message_carries_the_batch_trace_context(
    sqs: Any, moto_endpoint: str, exporter: InMemorySpanExporter
) -> None:
    url = await create_queue(sqs)
    dlq = await create_queue(sqs)
    await sqs.send_message(QueueUrl=url, MessageBody="poison")
    async with SQSDestination(dlq, endpoint_url=moto_endpoint) as dead_letter:
        source = SQSSource(url, endpoint_url=moto_endpoint, dead_letter=dead_letter, max_receives=1)
        app = App()

        @app.consume(source)
        async def handler(batch: Batch, context: Context) -> None:
            raise ValueError("poison")

        async with app.running():
            await wait_until(lambda: source.dead_lettered == 1)
    received = await sqs.receive_message(
        QueueUrl=dlq, MessageAttributeNames=["All"], WaitTimeSeconds=1
    )
    (message,) = received["Messages"]
    assert orjson.loads(message["Body"])["body"] == "poison"
    batch = only(exporter.get_finished_spans(), f"process {source.ref.name}")
    traceparent = message["MessageAttributes"]["traceparent"]["StringValue"]
    _, trace_id, span_id, _ = traceparent.split("-")
    assert (int(trace_id, 16), int(span_id, 16)) == (
        batch.context.trace_id,
        batch.context.span_id,
    )
