"""Tracing a Kafka mapping on a real broker: the batch span's messaging attributes and its link to
the producer span whose context travelled in each record's ``traceparent`` header, and the
context a failed batch's on-failure message carries on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from streamfn import App, Batch
from streamfn.connectors.kafka import KafkaDestination

from ..otel import only, producer_span, traced
from .conftest import FAST_RETRY, Kafka, Seen


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    with traced() as exporter:
        yield exporter


async def test_batch_span_links_to_the_producer_span_of_its_records(
    kafka: Kafka, exporter: InMemorySpanExporter
) -> None:
    topic = await kafka.create_topic()
    producer, traceparent = producer_span()
    await kafka.produce(topic, [b"a", b"b"], headers=[("traceparent", traceparent.encode())])
    source = kafka.source(topic)
    seen = Seen()
    app = App("traced")
    app.consume(source, batch_size=2, maximum_batching_window=1)(seen.handler)

    async with app.running():
        await seen.wait_for(lambda: len(seen.records) == 2)
    spans = exporter.get_finished_spans()
    batch = only(spans, f"process {topic}")
    assert batch.kind is SpanKind.CONSUMER
    assert dict(batch.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.batch.message_count": 2,
        "messaging.destination.name": topic,
        "messaging.destination.partition.id": "0",
        "messaging.consumer.group.name": source.group_id,
    }
    (link,) = batch.links
    assert (link.context.trace_id, link.context.span_id) == (
        producer.context.trace_id,
        producer.context.span_id,
    )
    invocation = only(spans, "handler")
    assert invocation.parent is not None
    assert invocation.parent.span_id == batch.context.span_id
    assert dict(invocation.attributes or {})["faas.trigger"] == "pubsub"


async def test_on_failure_message_carries_the_batch_trace_context(
    kafka: Kafka, exporter: InMemorySpanExporter
) -> None:
    topic = await kafka.create_topic()
    failures_topic = await kafka.create_topic(prefix="failures")
    await kafka.produce(topic, [b"poison"])
    destination = KafkaDestination(failures_topic, bootstrap_servers=kafka.address)
    app = App("traced-failure")

    @app.consume(
        kafka.source(topic), maximum_retry_attempts=0, on_failure=destination, **FAST_RETRY
    )
    async def poisoned(batch: Batch, context: Any) -> None:
        raise ValueError("poison")

    async with app.running():
        (message,) = await kafka.read(failures_topic, 1)
    batch = only(exporter.get_finished_spans(), f"process {topic}")
    headers = dict(message.headers)
    _, trace_id, span_id, _ = headers["traceparent"].decode().split("-")
    assert (int(trace_id, 16), int(span_id, 16)) == (
        batch.context.trace_id,
        batch.context.span_id,
    )
