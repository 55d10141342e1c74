"""The contract between the engine and an event source (Kafka, Kinesis, DynamoDB Streams, SQS...).

A source owns the connection and the partition assignment; the engine owns batching, invocation,
outcomes and the order of checkpoints. Data flows one way: the source's ``fetch`` feeds a poller
per partition, the engine settles each batch and calls ``commit`` with the last record that has
either succeeded or been handed to the on-failure destination.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from .config import MappingConfig
from .record import Record


class AssignmentListener(Protocol):
    """Implemented by the engine; a source calls it as partitions come and go."""

    async def assigned(self, partitions: Collection[str]) -> None:
        """Start polling these partitions."""

    async def revoked(self, partitions: Collection[str]) -> None:
        """Stop these partitions: returns once their in-flight work is finished or abandoned and
        their progress committed, so the source may hand them over afterwards."""


@runtime_checkable
class Source(Protocol):
    """An ordered, partitioned source of records (a stream)."""

    #: "kafka", "kinesis", "dynamodb", "sqs" or "memory": selects AWS rules that differ by source.
    kind: str
    default_batch_size: int
    default_batching_window: float

    def describe(self) -> str:
        """A short human description for logs, e.g. ``kafka://127.0.0.1:9092/orders``."""

    async def run(self, config: MappingConfig, listener: AssignmentListener) -> None:
        """Connect, announce partitions through ``listener`` and keep the assignment up to date
        until cancelled. Raise :class:`~streamfn.errors.SourceError` for a fatal problem."""

    async def fetch(self, partition: str, max_records: int, timeout: float) -> Sequence[Record]:
        """Up to ``max_records`` next records of ``partition`` in order; waits at most
        ``timeout`` seconds and returns an empty sequence when there is nothing new."""

    async def commit(self, partition: str, record: Record) -> None:
        """Durably record that ``record`` and everything before it in ``partition`` is done."""

    def item_identifier(self, record: Record) -> Any:
        """The ``itemIdentifier`` a Lambda handler reports for ``record``."""

    def identify(self, partition: str, item_identifier: Any) -> int:
        """The offset named by a reported ``itemIdentifier``; ``ValueError`` when it is invalid."""

    def lambda_event(self, partition: str, records: Sequence[Record]) -> dict[str, Any]:
        """The exact AWS event for these records (``event_format="lambda"``)."""

    def event_size(self, record: Record) -> int:
        """At least the bytes ``record`` adds to its :meth:`lambda_event` as JSON, the comma
        after it included, worked out from lengths without encoding it (base64 text is 4/3 of
        its bytes). With ``event_format="lambda"`` this is what the payload cap counts, so that
        no handler receives an event over it; the event's fields around its records are
        measured once per partition. Called about once per record as batches form, so a few
        lengths and sums, not an encoding."""

    def batch_info(self, partition: str, records: Sequence[Record]) -> tuple[str, dict[str, Any]]:
        """The on-failure record's batch section, e.g. ``("KinesisBatchInfo", {...})``."""

    def filter_view(self, record: Record) -> dict[str, Any]:
        """The record as filter_criteria patterns see it (AWS's per-source data key)."""


@runtime_checkable
class QueueSource(Protocol):
    """A queue of independently acknowledged messages (SQS): no checkpoint, no in-process
    retry. A failed message is released back to the queue and comes again later (after the
    visibility timeout, or a per-message delay the source chooses); the queue's own redrive
    policy decides when it stops coming. "Partitions" are the source's concurrent pollers."""

    kind: str
    default_batch_size: int
    default_batching_window: float

    def describe(self) -> str: ...

    async def run(self, config: MappingConfig, listener: AssignmentListener) -> None:
        """Connect, announce pollers through ``listener`` (and add or remove them as load
        changes) until cancelled."""

    async def fetch(self, partition: str, max_records: int, timeout: float) -> Sequence[Record]:
        """Receive up to ``max_records`` messages for this poller."""

    async def settle(
        self, partition: str, succeeded: Sequence[Record], failed: Sequence[Record]
    ) -> None:
        """Delete ``succeeded`` (including messages filtered out) and release ``failed``."""

    def item_identifier(self, record: Record) -> Any: ...

    def identify(self, partition: str, item_identifier: Any) -> int:
        """The offset of the record named by ``item_identifier``; ``ValueError`` if invalid."""

    def lambda_event(self, partition: str, records: Sequence[Record]) -> dict[str, Any]: ...

    def event_size(self, record: Record) -> int:
        """As :meth:`Source.event_size`."""

    def filter_view(self, record: Record) -> dict[str, Any]: ...


#: The gauges a source may report per partition through :class:`ReportsGauges`, with the
#: metric each becomes (labels function, mapping, partition) and its help text.
SOURCE_GAUGES = {
    "offset_lag": (
        "streamfn_esm_offset_lag",
        "Kafka: the partition's end offset minus the group's committed offset (AWS OffsetLag).",
    ),
    "iterator_age_seconds": (
        "streamfn_esm_iterator_age_seconds",
        "Kinesis and DynamoDB Streams: age of the last record read (AWS IteratorAge).",
    ),
    "approximate_queue_depth": (
        "streamfn_esm_approximate_queue_depth",
        "SQS: ApproximateNumberOfMessages of the queue, as last read.",
    ),
    "approximate_oldest_message_age_seconds": (
        "streamfn_esm_approximate_oldest_message_age_seconds",
        "SQS: age of the oldest message the pollers received last (approximate).",
    ),
}


@runtime_checkable
class ReportsGauges(Protocol):
    """Optional for a source: gauges it keeps per partition anyway (lag, iterator age, queue
    depth), read at scrape time, never on the hot path."""

    def gauges(self) -> dict[str, dict[str, float]]:
        """``{gauge: {partition: value}}`` with gauge names from :data:`SOURCE_GAUGES`; a
        source reports what it knows cheaply and leaves out the rest."""


@runtime_checkable
class TracedSource(Protocol):
    """Optional for a source: what its batch spans say about it, and where its records keep
    their upstream trace context. Called only while tracing is on: ``trace_attributes`` once a
    batch, ``trace_carrier`` for its records until :data:`streamfn.tracing.MAX_LINKS` carried a
    context. Without it, a batch span has ``messaging.system`` from the source's kind and each
    record's context is read from :attr:`Record.headers <streamfn.record.Record.headers>`."""

    def trace_attributes(self, partition: str) -> Mapping[str, str]:
        """``messaging.destination.name``, and ``messaging.destination.partition.id`` and
        ``messaging.consumer.group.name`` where the source has them."""

    def trace_carrier(self, record: Record) -> Mapping[str, str]:
        """The record's trace headers, names in lower case: ``traceparent`` and
        ``tracestate`` (W3C), ``x-amzn-trace-id`` (X-Ray)."""


@runtime_checkable
class KeepsWindowState(Protocol):
    """Optional for a stream source: keeps a tumbling window with its checkpoint, so that a
    restart, or another worker taking the partition over, resumes the window where the
    checkpoint left it instead of losing the state of records already checkpointed.

    The window is opaque bytes the engine encodes (:mod:`streamfn.windows`). A runner uses
    :meth:`commit_window` instead of :meth:`Source.commit` when its mapping has tumbling windows;
    ``commit`` stays the only call for every other mapping and source."""

    #: The largest window, in bytes, the source stores with a checkpoint; the engine keeps a
    #: larger one in memory only (and says so once).
    window_limit: int

    async def commit_window(
        self, partition: str, record: Record | None, window: bytes | None
    ) -> None:
        """:meth:`Source.commit` ``record`` and, in the same durable write, ``window`` (None:
        no open window). ``record`` None keeps the checkpoint where it is and replaces the
        window only (a window closed on an idle partition)."""

    def window_state(self, partition: str) -> bytes | None:
        """The window stored with the partition's checkpoint when it was assigned, or as last
        committed since; None when there is none."""

    def finished(self, partition: str) -> bool:
        """True once the partition was read to its end (a closed shard): its window is closed
        when it stops, as Lambda closes it at the end of a shard, not kept."""
