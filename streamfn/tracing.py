"""OpenTelemetry traces of invocations and batches, free when no one asked for them.

With the ``otel`` extra installed and a tracer provider set before the app starts running
(``trace.set_tracer_provider(...)`` or ``OTEL_PYTHON_TRACER_PROVIDER``), streamfn writes:

- a SERVER span per invocation, named after the function, with the FaaS semantic conventions'
  attributes; a handler that raised or timed out sets its status to ERROR, with ``error.type``
  and an ``exception`` event taken from Lambda's error object. It is current while the
  handler runs, so the handler's own spans are its children and its log lines carry
  :data:`current_trace_id`;
- a CONSUMER span per batch an event source mapping settles (``process <topic>``), with the
  messaging attributes and links to its records' upstream contexts (Kafka's ``traceparent``
  header, SQS's ``AWSTraceHeader`` or ``traceparent`` attribute; see :data:`MAX_LINKS`). The
  conventions for Lambda put the batch span under the invocation span, as Lambda's poller is
  another service; here the mapping runs in the worker, so the batch span is the parent of every
  invocation of the batch (retries and bisected halves included) and is current while its
  failures go to the on-failure destination: one trace shows all that became of a batch;
- the trace context of an Invoke request (W3C ``traceparent``, else ``X-Amzn-Trace-Id``) as the
  parent of its invocation, kept with an ``Event`` invocation in the event queue so that its run
  joins the request's trace, and passed on in the messages Kafka and SQS destinations send.

Otherwise nothing runs: :func:`start` decides once, as the app starts, because a process sets
its provider once. Until it finds a real one, :data:`enabled` stays False, callers on the hot
path test it before calling in, and every other entry point returns a shared no-op at its
first line. opentelemetry is imported only by :func:`start`, when the application has imported
it already, and by the code it enables, so the core runs without the package and a process
that never touched it pays not even the import.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from .context import Context, FunctionInfo
from .record import Record
from .source import TracedSource

if TYPE_CHECKING:
    from opentelemetry.context import Context as TraceContext
    from opentelemetry.trace import Link, Span, SpanContext, Tracer, TracerProvider
    from opentelemetry.util.types import AttributeValue

    from .source import QueueSource, Source

#: Records of a batch whose upstream context is linked: the SDK's default span link limit, so
#: no link is dropped silently, and a bound on what a batch of thousands costs to trace.
MAX_LINKS = 128

#: Whether this process traces; set by :func:`start`, read by callers on the hot path.
enabled = False

#: The trace id (32 hex digits) of the invocation or batch running in this task, for log
#: lines (``traceId``); never set while tracing is off.
current_trace_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "streamfn_trace_id", default=None
)

#: ``messaging.system`` by source kind; OpenTelemetry names only SQS and Kafka, the others
#: follow SQS's pattern. A kind not listed is its own name.
_MESSAGING_SYSTEMS = {
    "kafka": "kafka",
    "sqs": "aws_sqs",
    "kinesis": "aws_kinesis",
    "dynamodb": "aws_dynamodb_streams",
}
#: ``faas.trigger`` of the invocations of a batch: a DynamoDB stream answers writes to a table
#: (a data source), every other source delivers messages. An invocation outside a batch is
#: "other": the Invoke API travels over HTTP, but the conventions name the event, not the
#: transport.
_DATASOURCES = frozenset({"dynamodb"})
_X_RAY_ROOT = re.compile(r"1-([0-9a-fA-F]{8})-([0-9a-fA-F]{24})")
_X_RAY_PARENT = re.compile(r"[0-9a-fA-F]{16}")
_NOTHING: AbstractContextManager[None] = contextlib.nullcontext()
#: The environment variable with which OpenTelemetry's API loads a provider by itself.
_PROVIDER_VARIABLE = "OTEL_PYTHON_TRACER_PROVIDER"

_tracer: Tracer | None = None
#: Key, in the trace context, of the trigger a batch gives the invocations it makes.
_trigger_key = ""
#: The span attributes every invocation of a function version shares; a version not here yet
#: has not been invoked since the app started (a cold start).
_functions: dict[FunctionInfo, dict[str, AttributeValue]] = {}


def start() -> None:
    """Decide whether this process traces: yes when the global tracer provider is a real one.
    The app calls this as it starts running; a provider set later is not seen until the next
    start. Every function version's first invocation after it is a cold start."""
    global enabled, _tracer, _trigger_key
    _functions.clear()
    provider = _provider()
    if provider is not None:
        # Loading the propagators OTEL_PROPAGATORS names now makes one that is not installed
        # fail the start, rather than every request and batch.
        importlib.import_module("opentelemetry.propagate")
        from opentelemetry import context

        _trigger_key = _trigger_key or context.create_key("streamfn-faas-trigger")
    enabled = provider is not None
    _tracer = provider.get_tracer("streamfn") if provider is not None else None


def _provider() -> TracerProvider | None:
    """The global tracer provider unless it is the API's default proxy or a no-op, or the
    package is not installed. Setting a provider imports the API, so an application that set
    none, and names none in the environment, has not imported it either: then this checks
    without importing it."""
    if "opentelemetry.trace" not in sys.modules and _PROVIDER_VARIABLE not in os.environ:
        return None
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    return provider


class Invocation:
    """The span of one invocation, current from :func:`invocation` until :meth:`end`."""

    __slots__ = ("_span", "_token", "_trace_id")

    def __init__(
        self,
        span: Span,
        token: contextvars.Token[TraceContext],
        trace_id: contextvars.Token[str | None],
    ) -> None:
        self._span = span
        self._token = token
        self._trace_id = trace_id

    def end(self, error: Mapping[str, Any] | None) -> None:
        """End the span; ``error``, Lambda's error object when the handler failed, sets its
        status to ERROR with the message, ``error.type`` and an ``exception`` event."""
        from opentelemetry import context
        from opentelemetry.trace import Status, StatusCode

        span = self._span
        if error is not None:
            span.set_attribute("error.type", error["errorType"])
            span.add_event(
                "exception",
                {
                    "exception.type": error["errorType"],
                    "exception.message": error["errorMessage"],
                    # a timeout's error object has none
                    "exception.stacktrace": "".join(error.get("stackTrace", ())),
                },
            )
            span.set_status(Status(StatusCode.ERROR, error["errorMessage"]))
        current_trace_id.reset(self._trace_id)
        context.detach(self._token)
        span.end()


def invocation(info: FunctionInfo, ctx: Context) -> Invocation:
    """Start the span of the invocation ``ctx`` of ``info``'s version, as a child of the current
    context, and make it current. Only while :data:`enabled`."""
    from opentelemetry import context, trace

    assert _tracer is not None
    parent = context.get_current()
    shared = _functions.get(info)
    cold = shared is None
    if shared is None:
        shared = _functions[info] = _function_attributes(info)
    trigger = context.get_value(_trigger_key, parent)
    span = _tracer.start_span(
        info.function_name,
        context=parent,
        kind=trace.SpanKind.SERVER,
        attributes={
            **shared,
            "faas.trigger": trigger if isinstance(trigger, str) else "other",
            "faas.invocation_id": ctx.aws_request_id,
            "faas.coldstart": cold,
            "aws.lambda.invoked_arn": ctx.invoked_function_arn,
        },
    )
    # The handler's own invocations are not the batch's: they do not inherit its trigger.
    current = trace.set_span_in_context(span, context.set_value(_trigger_key, None, parent))
    token = context.attach(current)
    return Invocation(span, token, current_trace_id.set(_hex_trace_id(span.get_span_context())))


def _function_attributes(info: FunctionInfo) -> dict[str, AttributeValue]:
    """``cloud.resource_id`` names the version that runs (the conventions want no alias in it);
    ``faas.name`` and ``faas.version`` are resource attributes the conventions allow on the
    span, as one process runs many functions."""
    arn = info.function_arn
    if info.function_version != "$LATEST":
        arn = f"{arn}:{info.function_version}"
    return {
        "faas.name": info.function_name,
        "faas.version": info.function_version,
        "cloud.resource_id": arn,
        "cloud.account.id": arn.split(":")[4],
    }


def batch(
    source: Source | QueueSource, partition: str, records: Sequence[Record]
) -> AbstractContextManager[None]:
    """The span of a batch of ``partition``, current for the block: every invocation made for
    it is its child, with the trigger of its source. A shared no-op while tracing is off."""
    if not enabled:
        return _NOTHING
    return _batch_span(source, partition, records)


@contextlib.contextmanager
def _batch_span(
    source: Source | QueueSource, partition: str, records: Sequence[Record]
) -> Iterator[None]:
    from opentelemetry import context, trace
    from opentelemetry.trace import Status, StatusCode

    assert _tracer is not None
    kind = source.kind
    attributes: dict[str, AttributeValue] = {
        "messaging.system": _MESSAGING_SYSTEMS.get(kind, kind),
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.batch.message_count": len(records),
    }
    carrier_of: Callable[[Record], Mapping[str, str]] = header_carrier
    if isinstance(source, TracedSource):
        attributes.update(source.trace_attributes(partition))
        carrier_of = source.trace_carrier
    destination = attributes.get("messaging.destination.name")
    span = _tracer.start_span(
        f"process {destination}" if destination else "process",
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
        links=_links(records, carrier_of),
    )
    trigger = "datasource" if kind in _DATASOURCES else "pubsub"
    token = context.attach(
        context.set_value(_trigger_key, trigger, trace.set_span_in_context(span))
    )
    trace_id = current_trace_id.set(_hex_trace_id(span.get_span_context()))
    try:
        yield
    except Exception as exc:  # left unsettled: the partition stopped, or the source failed
        span.set_attribute("error.type", type(exc).__qualname__)
        span.set_status(Status(StatusCode.ERROR, str(exc)))
        raise
    finally:
        current_trace_id.reset(trace_id)
        context.detach(token)
        span.end()


def header_carrier(record: Record) -> Mapping[str, str]:
    """A record's :attr:`~streamfn.record.Record.headers` as a trace carrier (the default for a
    source that is no :class:`TracedSource`, and what Kafka's records carry)."""
    return {
        name.lower(): value.decode("latin-1") for name, value in record.headers if value is not None
    }


def _links(
    records: Sequence[Record], carrier_of: Callable[[Record], Mapping[str, str]]
) -> list[Link]:
    """A link to the upstream span context of each of the first :data:`MAX_LINKS` records that
    carry one, each context once (records sent in one upstream span share it). Counting the
    records, not the links, bounds the cost of a batch of thousands sent in a few spans."""
    from opentelemetry import trace

    links: dict[tuple[int, int], Link] = {}
    carrying = 0
    for record in records:
        upstream = _incoming(carrier_of(record))
        if upstream is None:
            continue
        span_context = trace.get_current_span(upstream).get_span_context()
        links.setdefault((span_context.trace_id, span_context.span_id), trace.Link(span_context))
        carrying += 1
        if carrying == MAX_LINKS:
            break
    return list(links.values())


def _incoming(carrier: Mapping[str, str]) -> TraceContext | None:
    """The trace context ``carrier`` (text headers, names in lower case) carries: what the
    global propagator reads (W3C ``traceparent`` and baggage by default), else an X-Ray
    ``x-amzn-trace-id``; None when it carries neither."""
    from opentelemetry import propagate, trace
    from opentelemetry.context import Context as TraceContext

    if not carrier:
        return None
    # An empty base: extracting onto the current context would find the current span.
    found = propagate.extract(carrier, context=TraceContext())
    if trace.get_current_span(found).get_span_context().is_valid:
        return found
    header = carrier.get("x-amzn-trace-id")
    span_context = _x_ray(header) if header is not None else None
    if span_context is None:
        return None
    return trace.set_span_in_context(trace.NonRecordingSpan(span_context), found)


def _x_ray(header: str) -> SpanContext | None:
    """X-Ray's trace header, ``Root=1-{8 hex}-{24 hex};Parent={16 hex};Sampled={0|1}`` (fields
    in any order, others ignored), as a remote span context; None without a valid Root and
    Parent. The trace id is the Root's hex digits, as AWS's OpenTelemetry propagator reads it."""
    from opentelemetry.trace import SpanContext, TraceFlags

    fields = {}
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        fields[name] = value
    root = _X_RAY_ROOT.fullmatch(fields.get("Root", ""))
    parent = fields.get("Parent", "")
    if root is None or _X_RAY_PARENT.fullmatch(parent) is None:
        return None
    span_context = SpanContext(
        int(root[1] + root[2], 16),
        int(parent, 16),
        is_remote=True,
        trace_flags=TraceFlags(
            TraceFlags.SAMPLED if fields.get("Sampled") == "1" else TraceFlags.DEFAULT
        ),
    )
    return span_context if span_context.is_valid else None


def accept(headers: Iterable[tuple[bytes, bytes]]) -> contextvars.Token[TraceContext] | None:
    """Make the trace context of an incoming request (ASGI headers) current, as the parent of
    the invocations it makes; the token for :func:`detach`, or None when it carries none. Only
    while :data:`enabled`."""
    from opentelemetry import context

    found = _incoming({name.decode("latin-1"): value.decode("latin-1") for name, value in headers})
    return None if found is None else context.attach(found)


def detach(token: contextvars.Token[TraceContext]) -> None:
    """Restore the context :func:`accept` replaced."""
    from opentelemetry import context

    context.detach(token)


def traceparent() -> str | None:
    """The current span context as a W3C ``traceparent``, for an event queued now to carry; None
    while tracing is off or no span is current. The event queue's own format, so W3C whatever
    the global propagator is."""
    if not enabled:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent")


def resume(carried: str | None) -> AbstractContextManager[None]:
    """Make the context a queued event carried (its :func:`traceparent`) current for the block,
    so its run joins the trace of the request that queued it."""
    if not enabled or carried is None:
        return _NOTHING
    from opentelemetry.context import Context as TraceContext
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return _attached(
        TraceContextTextMapPropagator().extract({"traceparent": carried}, TraceContext())
    )


@contextlib.contextmanager
def _attached(found: TraceContext) -> Iterator[None]:
    from opentelemetry import context

    token = context.attach(found)
    try:
        yield
    finally:
        context.detach(token)


def outgoing() -> Mapping[str, str]:
    """The current trace context as text headers for a message sent now (the global
    propagator's: W3C ``traceparent`` by default); empty while tracing is off."""
    if not enabled:
        return {}
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def _hex_trace_id(span_context: SpanContext) -> str | None:
    return format(span_context.trace_id, "032x") if span_context.is_valid else None
