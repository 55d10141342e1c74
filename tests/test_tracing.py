"""Tracing with OpenTelemetry's SDK exporting to memory: the invocation span and its FaaS
attributes, the batch span that parents every attempt and links to its records' upstream
contexts, the trace an Event invocation keeps through the event queue, and nothing at all
without a tracer provider or without the package."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from streamfn import App, Batch, Context, tracing
from streamfn.asyncq import DB_NAME, QueuedEvent
from streamfn.connectors._eventq import MalformedEvent, decode, encode
from streamfn.logs import JsonFormatter
from streamfn.testing import MemoryDestination, MemorySource, wait_until

from .otel import named, only, producer_span, traced

ARN = "arn:aws:lambda:us-east-1:000000000000:function"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    with traced() as exporter:
        yield exporter


def random_traceparent() -> str:
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


def ids(span_context: Any) -> tuple[int, int]:
    return span_context.trace_id, span_context.span_id


async def test_invocation_span_follows_the_faas_conventions(
    exporter: InMemorySpanExporter,
) -> None:
    app = App()

    @app.function()
    async def greet(event: Any, context: Context) -> Any:
        return {"hello": event["name"]}

    app.publish_version("greet")
    async with app.running():
        first = await app.invoke("greet", {"name": "a"})
        pinned = await app.invoke("greet", {"name": "b"}, qualifier="1")
        again = await app.invoke("greet", {"name": "c"})
    spans = named(exporter.get_finished_spans(), "greet")
    assert [s.attributes["faas.invocation_id"] for s in spans if s.attributes] == [
        first.request_id,
        pinned.request_id,
        again.request_id,
    ]
    assert spans[0].kind is SpanKind.SERVER
    assert spans[0].status.status_code is StatusCode.UNSET
    assert dict(spans[0].attributes or {}) == {
        "faas.name": "greet",
        "faas.version": "$LATEST",
        "cloud.resource_id": f"{ARN}:greet",
        "cloud.account.id": "000000000000",
        "faas.trigger": "other",
        "faas.invocation_id": first.request_id,
        "faas.coldstart": True,
        "aws.lambda.invoked_arn": f"{ARN}:greet",
    }
    version = dict(spans[1].attributes or {})
    assert version["cloud.resource_id"] == f"{ARN}:greet:1"
    assert version["faas.coldstart"] is True  # version 1's own first invocation
    assert dict(spans[2].attributes or {})["faas.coldstart"] is False


async def test_a_raised_error_sets_error_status_type_and_exception_event(
    exporter: InMemorySpanExporter,
) -> None:
    app = App()

    @app.function()
    async def broken(event: Any, context: Context) -> None:
        raise ValueError("bad record in batch")

    async with app.running():
        result = await app.invoke("broken", {})
    assert result.error is not None
    span = only(exporter.get_finished_spans(), "broken")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "bad record in batch"
    assert dict(span.attributes or {})["error.type"] == "ValueError"
    (event,) = span.events
    assert event.name == "exception"
    attributes = dict(event.attributes or {})
    assert attributes["exception.type"] == "ValueError"
    assert attributes["exception.message"] == "bad record in batch"
    assert 'raise ValueError("bad record in batch")' in str(attributes["exception.stacktrace"])


async def test_a_timeout_is_an_error_of_type_sandbox_timedout(
    exporter: InMemorySpanExporter,
) -> None:
    app = App()

    @app.function(timeout=0.05)
    async def slow(event: Any, context: Context) -> None:
        await asyncio.sleep(10)

    async with app.running():
        await app.invoke("slow", {})
    span = only(exporter.get_finished_spans(), "slow")
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == "Sandbox.Timedout"


async def test_log_lines_written_in_an_invocation_carry_its_trace_id(
    exporter: InMemorySpanExporter,
) -> None:
    lines: list[dict[str, Any]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(orjson.loads(self.format(record)))

    keep = Keep()
    keep.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.tracing")
    logger.addHandler(keep)
    app = App()

    @app.function()
    async def chatty(event: Any, context: Context) -> None:
        logger.warning("inside")

    try:
        async with app.running():
            await app.invoke("chatty", {})
            logger.warning("outside")
    finally:
        logger.removeHandler(keep)
    span = only(exporter.get_finished_spans(), "chatty")
    inside, outside = lines
    assert inside["traceId"] == f"{span.context.trace_id:032x}"
    assert "traceId" not in outside


async def test_batch_span_parents_every_attempt_and_links_its_upstream_context_once(
    exporter: InMemorySpanExporter,
) -> None:
    producer, traceparent = producer_span()
    source = MemorySource()
    for n in range(3):  # three records sent in one upstream span
        source.append("p0", b"%d" % n).headers = [("traceparent", traceparent.encode())]
    calls = 0
    app = App()

    @app.consume(source, retry_base_delay=0.001, retry_max_delay=0.01)
    async def flaky(batch: Batch, context: Context) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("not yet")

    async with app.running():
        await wait_until(lambda: source.committed.get("p0") == 3)
    spans = exporter.get_finished_spans()
    batch = only(spans, "process")
    assert batch.kind is SpanKind.CONSUMER
    assert dict(batch.attributes or {}) == {
        "messaging.system": "memory",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.batch.message_count": 3,
    }
    assert [ids(link.context) for link in batch.links] == [ids(producer.context)]
    failed, succeeded = named(spans, "flaky")
    for attempt in (failed, succeeded):
        assert attempt.parent is not None
        assert ids(attempt.parent) == ids(batch.context)
        assert dict(attempt.attributes or {})["faas.trigger"] == "pubsub"
    assert failed.status.status_code is StatusCode.ERROR
    assert succeeded.status.status_code is StatusCode.UNSET


async def test_a_batch_links_at_most_max_links_upstream_spans_in_record_order(
    exporter: InMemorySpanExporter,
) -> None:
    source = MemorySource()
    upstream = [random_traceparent() for _ in range(tracing.MAX_LINKS + 10)]
    for n, traceparent in enumerate(upstream):
        source.append("p0", b"%d" % n).headers = [("traceparent", traceparent.encode())]
    app = App()

    @app.consume(source, batch_size=len(upstream))
    async def handler(batch: Batch, context: Context) -> None:
        pass

    async with app.running():
        await wait_until(lambda: source.committed.get("p0") == len(upstream))
    batch = only(exporter.get_finished_spans(), "process")
    assert len(batch.links) == tracing.MAX_LINKS
    assert [f"{link.context.span_id:016x}" for link in batch.links] == [
        tp.split("-")[2] for tp in upstream[: tracing.MAX_LINKS]
    ]


async def test_records_sharing_an_upstream_span_count_toward_max_links(
    exporter: InMemorySpanExporter,
) -> None:
    shared, later = random_traceparent(), random_traceparent()
    source = MemorySource()
    for n, traceparent in enumerate([shared] * tracing.MAX_LINKS + [later]):
        source.append("p0", b"%d" % n).headers = [("traceparent", traceparent.encode())]
    app = App()

    @app.consume(source, batch_size=tracing.MAX_LINKS + 1)
    async def handler(batch: Batch, context: Context) -> None:
        pass

    async with app.running():
        await wait_until(lambda: source.committed.get("p0") == tracing.MAX_LINKS + 1)
    batch = only(exporter.get_finished_spans(), "process")
    assert [f"{link.context.span_id:016x}" for link in batch.links] == [shared.split("-")[2]]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            (0x5759E988BD862E3FE1BE46A994272793, 0x53995C3F42CD8AD8, True),
        ),
        (
            "Parent=53995c3f42cd8ad8; Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0;"
            "Lineage=a87bd80c:1|68fd508a:5",
            (0x5759E988BD862E3FE1BE46A994272793, 0x53995C3F42CD8AD8, False),
        ),
        ("Root=1-5759e988-bd862e3fe1be46a994272793", None),  # no parent to link to
        ("Root=2-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8", None),
        ("Root=1-5759e988-bd862e3fe1be46a99427279g;Parent=53995c3f42cd8ad8", None),
        ("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=0000000000000000", None),
        ("not a trace header", None),
    ],
)
async def test_an_x_ray_trace_header_becomes_a_link_when_it_names_a_parent(
    exporter: InMemorySpanExporter, header: str, expected: tuple[int, int, bool] | None
) -> None:
    source = MemorySource()
    source.append("p0", b"x").headers = [("X-Amzn-Trace-Id", header.encode())]
    app = App()

    @app.consume(source)
    async def handler(batch: Batch, context: Context) -> None:
        pass

    async with app.running():
        await wait_until(lambda: source.committed.get("p0") == 1)
    links = [
        (link.context.trace_id, link.context.span_id, link.context.trace_flags.sampled)
        for link in only(exporter.get_finished_spans(), "process").links
    ]
    assert links == ([] if expected is None else [expected])


async def test_event_invocation_runs_in_the_trace_that_queued_it(
    exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    app = App(state_dir=tmp_path)  # SQLite: the context is stored with the event
    done = MemoryDestination()

    @app.function(on_success=done)
    async def later(event: Any, context: Context) -> Any:
        return event

    async with app.running():
        with trace.get_tracer("tests").start_as_current_span("caller") as caller:
            await app.invoke_async("later", {"n": 1})
        await done.wait_for(1)
    run = only(exporter.get_finished_spans(), "later")
    assert run.parent is not None
    assert ids(run.parent) == ids(caller.get_span_context())


async def test_sqlite_queue_runs_events_stored_before_they_kept_a_trace_context(
    exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    conn = sqlite3.connect(tmp_path / DB_NAME)
    conn.execute(  # the events table as it was
        """CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
        function TEXT NOT NULL, qualifier TEXT, payload BLOB NOT NULL, enqueued_at REAL NOT NULL,
        attempts INTEGER NOT NULL, throttles INTEGER NOT NULL, due_at REAL NOT NULL)"""
    )
    now = time.time()
    conn.execute(
        "INSERT INTO events (id, function, qualifier, payload, enqueued_at, attempts, throttles,"
        " due_at) VALUES ('old', 'f', NULL, ?, ?, 0, 0, ?)",
        (b'{"n": 0}', now, now),
    )
    conn.commit()
    conn.close()
    seen: list[Any] = []
    app = App(state_dir=tmp_path)

    @app.function()
    async def f(event: Any, context: Context) -> None:
        seen.append(event)

    async with app.running():
        await wait_until(lambda: seen == [{"n": 0}])
        with trace.get_tracer("tests").start_as_current_span("caller") as caller:
            await app.invoke_async("f", {"n": 1})
        await wait_until(lambda: len(named(exporter.get_finished_spans(), "f")) == 2)
    old, new = named(exporter.get_finished_spans(), "f")
    assert old.parent is None
    assert new.parent is not None
    assert ids(new.parent) == ids(caller.get_span_context())


def test_wire_format_keeps_the_trace_context_and_reads_messages_without_one() -> None:
    event = QueuedEvent("r", "f", None, b"{}", 1.0, due_at=1.0, trace=random_traceparent())
    assert decode(encode(event), QueuedEvent) == event
    fields = orjson.loads(encode(event))
    del fields["traceparent"]  # as a worker without tracing wrote it
    assert decode(orjson.dumps(fields), QueuedEvent).trace is None
    with pytest.raises(MalformedEvent, match="traceparent"):
        decode(orjson.dumps({**fields, "traceparent": 1}), QueuedEvent)


async def test_without_a_tracer_provider_nothing_is_traced_and_nothing_is_carried() -> None:
    source = MemorySource()
    app = App()

    @app.function()
    async def f(event: Any, context: Context) -> None:
        pass

    async with app.running():
        await app.invoke("f", {})
        assert not tracing.enabled
        assert tracing.batch(source, "p0", []) is tracing.batch(source, "p1", [])
        assert tracing.resume(random_traceparent()) is tracing.batch(source, "p0", [])
        assert tracing.traceparent() is None
        assert tracing.outgoing() == {}
        assert tracing.current_trace_id.get() is None


async def test_without_the_package_tracing_stays_off_whatever_the_provider(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if not installed
    app = App()

    @app.function()
    async def f(event: Any, context: Context) -> None:
        pass

    async with app.running():
        await app.invoke("f", {})
    assert not tracing.enabled
    assert exporter.get_finished_spans() == ()


def test_an_app_that_never_imported_opentelemetry_starts_without_importing_it() -> None:
    script = """
import asyncio, sys
from streamfn import App

app = App()

@app.function()
async def f(event, context):
    return event

async def main():
    async with app.running():
        await app.invoke("f", {})

asyncio.run(main())
print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))
"""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "[]"


def test_a_provider_named_in_the_environment_turns_tracing_on() -> None:
    script = "from streamfn import tracing; tracing.start(); print(tracing.enabled)"
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "OTEL_PYTHON_TRACER_PROVIDER": "sdk_tracer_provider"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "True"


def test_a_propagator_that_is_not_installed_fails_the_start_not_each_request() -> None:
    script = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from streamfn import tracing

trace.set_tracer_provider(TracerProvider())
try:
    tracing.start()
except ValueError as exc:
    print(exc)
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "OTEL_PROPAGATORS": "no-such-propagator"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "no-such-propagator not found" in done.stdout
