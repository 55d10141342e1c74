"""The Invoke API takes the caller's trace context in: W3C ``traceparent`` (first) or X-Ray's
``X-Amzn-Trace-Id`` is the parent of the invocation span, now for RequestResponse, later for an
Event invocation, whose context waits with it in the event queue."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from streamfn import App, Context

from ..otel import named, only, producer_span, traced
from .support import ARN, DEADLINE, raw_request, serving, wait_until

INVOKE = "/2015-03-31/functions/echo/invocations"
X_RAY = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    with traced() as exporter:
        yield exporter


def echo_app(**kwargs: Any) -> App:
    app = App("tracing", **kwargs)

    @app.function()
    async def echo(event: Any, context: Context) -> Any:
        return event

    return app


async def test_a_traceparent_is_the_parent_of_the_invocation_span(
    exporter: InMemorySpanExporter,
) -> None:
    caller, traceparent = producer_span("caller")
    async with serving(echo_app()) as served, asyncio.timeout(DEADLINE):
        response = await raw_request(
            served.port, "POST", INVOKE, b'{"n": 1}', {"traceparent": traceparent}
        )
    assert response.status == 200
    span = only(exporter.get_finished_spans(), "echo")
    assert span.kind is SpanKind.SERVER
    assert span.parent is not None
    assert span.parent.is_remote
    assert (span.parent.trace_id, span.parent.span_id) == (
        caller.context.trace_id,
        caller.context.span_id,
    )
    attributes = dict(span.attributes or {})
    assert attributes["faas.invocation_id"] == response.headers["x-amzn-requestid"]
    assert attributes["faas.trigger"] == "other"  # Invoke travels over HTTP; its event does not
    assert attributes["cloud.resource_id"] == f"{ARN}:echo"


async def test_an_x_ray_trace_header_is_the_parent_when_there_is_no_traceparent(
    exporter: InMemorySpanExporter,
) -> None:
    async with serving(echo_app()) as served, asyncio.timeout(DEADLINE):
        await raw_request(served.port, "POST", INVOKE, b"{}", {"X-Amzn-Trace-Id": X_RAY})
    span = only(exporter.get_finished_spans(), "echo")
    assert span.parent is not None
    assert (span.parent.trace_id, span.parent.span_id) == (
        0x5759E988BD862E3FE1BE46A994272793,
        0x53995C3F42CD8AD8,
    )
    assert span.parent.trace_flags.sampled


async def test_an_event_invocation_runs_in_the_trace_of_the_request(
    exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    caller, traceparent = producer_span("caller")
    app = echo_app(state_dir=tmp_path)  # the context waits in SQLite with the event
    async with serving(app) as served, asyncio.timeout(DEADLINE):
        response = await raw_request(
            served.port,
            "POST",
            INVOKE,
            orjson.dumps({"n": 1}),
            {"X-Amz-Invocation-Type": "Event", "traceparent": traceparent},
        )
        assert response.status == 202
        await wait_until(lambda: named(exporter.get_finished_spans(), "echo"))
    run = only(exporter.get_finished_spans(), "echo")
    assert run.parent is not None
    assert (run.parent.trace_id, run.parent.span_id) == (
        caller.context.trace_id,
        caller.context.span_id,
    )
    assert dict(run.attributes or {})["faas.invocation_id"] == response.headers["x-amzn-requestid"]
