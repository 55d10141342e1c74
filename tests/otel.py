"""OpenTelemetry's SDK for the tracing tests: a global tracer provider exporting to memory for
one test, taken away after it so the rest of the suite runs as a process without one does.

A process may set its provider only once, so taking it away resets the API's globals, as
OpenTelemetry's own test utilities (``opentelemetry.test.globals_test``) do."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util._once import Once

from streamfn import tracing


def _reset_globals() -> None:
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


@contextlib.contextmanager
def traced() -> Iterator[InMemorySpanExporter]:
    """The SDK as the global provider, every ended span in the exporter yielded."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _reset_globals()
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        provider.shutdown()
        _reset_globals()
        tracing.start()  # and streamfn back to untraced


def producer_span(name: str = "send") -> tuple[ReadableSpan, str]:
    """A span of the test's own (an upstream producer) and its W3C traceparent."""
    tracer = trace.get_tracer("tests")
    carrier: dict[str, str] = {}
    with tracer.start_as_current_span(name) as span:
        TraceContextTextMapPropagator().inject(carrier)
    assert isinstance(span, ReadableSpan)
    return span, carrier["traceparent"]


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def only(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    (span,) = named(spans, name)
    return span
