"""A small Prometheus registry (text exposition format 0.0.4), so the core needs no client library.

Hot-path updates are an attribute increment on a pre-bound child: label lookups happen once, when
a function is registered, never per invocation. What the engine counts anyway (an event source
mapping's :mod:`~streamfn.stats`, the gauges a source keeps, the process's own figures from
``/proc``) is read when ``/metrics`` is scraped, so exporting it costs the hot path nothing.
"""

from __future__ import annotations

import bisect
import functools
import math
import os
import resource
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import attrgetter
from typing import Protocol

from .source import SOURCE_GAUGES, ReportsGauges
from .stats import MappingStats, PartitionStats

Labels = tuple[str, ...]
Samples = Iterable[tuple[Labels, float]]

#: Seconds; spans a no-op handler (~50 us) to Lambda's 900 s maximum timeout.
DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1, 2.5, 5, 10, 30, 60, 300, 900,
)  # fmt: skip
#: Records per invocation; up to Lambda's largest batch_size (10,000).
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if value != int(value) else str(int(value))


class _Value:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class _Buckets:
    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1


class _Family:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labelnames: Labels) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = labelnames

    def _labels(self, values: Labels, extra: str = "") -> str:
        pairs = [f'{n}="{_escape(v)}"' for n, v in zip(self.labelnames, values, strict=True)]
        if extra:
            pairs.append(extra)
        return "{" + ",".join(pairs) + "}" if pairs else ""

    def samples(self) -> Iterator[str]:
        raise NotImplementedError

    def render(self) -> Iterator[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        yield from self.samples()


class Counter(_Family):
    kind = "counter"

    def __init__(self, name: str, help_text: str, labelnames: Labels = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self._children: dict[Labels, _Value] = {}

    def labels(self, *values: str) -> _Value:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = _Value()
        return child

    def samples(self) -> Iterator[str]:
        for values, child in list(self._children.items()):
            yield f"{self.name}{self._labels(values)} {_number(child.value)}"


class Gauge(_Family):
    """A gauge read at scrape time from a callback yielding ``(label values, value)`` pairs."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Labels,
        read: Callable[[], Iterable[tuple[Labels, float]]],
    ) -> None:
        super().__init__(name, help_text, labelnames)
        self._read = read

    def samples(self) -> Iterator[str]:
        for values, value in self._read():
            yield f"{self.name}{self._labels(values)} {_number(value)}"


class ReadCounter(Gauge):
    """A counter read at scrape time, for a count another family already keeps: the hot path
    then updates one metric, not two."""

    kind = "counter"


class Histogram(_Family):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Labels = (),
        buckets: tuple[float, ...] = DURATION_BUCKETS,
    ) -> None:
        super().__init__(name, help_text, labelnames)
        self.buckets = buckets
        self._children: dict[Labels, _Buckets] = {}

    def labels(self, *values: str) -> _Buckets:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = _Buckets(self.buckets)
        return child

    def counts(self) -> list[tuple[Labels, float]]:
        """Observations so far, by label values."""
        return [(values, float(child.count)) for values, child in list(self._children.items())]

    def samples(self) -> Iterator[str]:
        for values, child in list(self._children.items()):
            cumulative = 0
            for bound, count in zip((*self.buckets, math.inf), child.counts, strict=True):
                cumulative += count
                le = f'le="{_number(bound)}"'
                yield f"{self.name}_bucket{self._labels(values, le)} {cumulative}"
            yield f"{self.name}_sum{self._labels(values)} {_number(child.sum)}"
            yield f"{self.name}_count{self._labels(values)} {child.count}"


class ReadHistogram(_Family):
    """A histogram read at scrape time from exact counts by observed value: the hot path adds
    one to a dict entry, and the buckets are made here."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Labels,
        buckets: tuple[float, ...],
        read: Callable[[], Iterable[tuple[Labels, dict[int, int]]]],
    ) -> None:
        super().__init__(name, help_text, labelnames)
        self.buckets = buckets
        self._read = read

    def samples(self) -> Iterator[str]:
        for values, counts in self._read():
            observed = sorted(list(counts.items()))
            cumulative = 0
            total = 0.0
            i = 0
            for bound in (*self.buckets, math.inf):
                while i < len(observed) and observed[i][0] <= bound:
                    value, count = observed[i]
                    cumulative += count
                    total += value * count
                    i += 1
                le = f'le="{_number(bound)}"'
                yield f"{self.name}_bucket{self._labels(values, le)} {cumulative}"
            yield f"{self.name}_sum{self._labels(values)} {_number(total)}"
            yield f"{self.name}_count{self._labels(values)} {cumulative}"


class Registry:
    """An ordered set of metric families rendered together."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}

    def register(self, family: _Family) -> None:
        if family.name in self._families:
            raise ValueError(f"metric {family.name} is registered twice")
        self._families[family.name] = family

    def render(self) -> str:
        lines = [line for family in self._families.values() for line in family.render()]
        return "\n".join(lines) + "\n"


class ObservedMapping(Protocol):
    """What ``/metrics`` reads of an event source mapping (:class:`streamfn.mapping.Mapping`)."""

    @property
    def labels(self) -> tuple[str, str]:
        """(function, mapping): the mapping named by a bounded string, its source's."""

    @property
    def stats(self) -> MappingStats: ...

    @property
    def source(self) -> object: ...

    @property
    def state(self) -> str:
        """``Enabled`` or ``Disabled`` (by configuration or a fatal source error)."""


ESM_LABELS = ("function", "mapping", "partition")

#: The counters of :class:`~streamfn.stats.PartitionStats` on ``/metrics``, with the AWS event
#: source mapping metric each follows where there is one.
PARTITION_COUNTERS = (
    (
        "polled",
        "streamfn_esm_polled_records_total",
        "Records the source returned (AWS PolledEventCount).",
    ),
    (
        "filtered",
        "streamfn_esm_filtered_records_total",
        "Records that matched no filter_criteria pattern (AWS FilteredOutEventCount).",
    ),
    (
        "invoked",
        "streamfn_esm_invoked_records_total",
        "Records handed to the function, retries and bisected halves included "
        "(AWS InvokedEventCount).",
    ),
    (
        "invocations",
        "streamfn_esm_invocations_total",
        "Invocations (batches), retries, bisected halves and final window invocations included.",
    ),
    (
        "failed_invocations",
        "streamfn_esm_failed_invocations_total",
        "Invocations that failed: raised, timed out, or answered with failed or invalid "
        "batch items.",
    ),
    (
        "retries",
        "streamfn_esm_retries_total",
        "Failed batches invoked again after a backoff.",
    ),
    (
        "bisects",
        "streamfn_esm_bisects_total",
        "Failed batches split in two (bisect_batch_on_function_error).",
    ),
    (
        "dropped",
        "streamfn_esm_dropped_records_total",
        "Records given up without an on_failure destination (AWS DroppedEventCount).",
    ),
    (
        "on_failure",
        "streamfn_esm_on_failure_records_total",
        "Records whose failure record the on_failure destination stored "
        "(AWS OnFailureDestinationDeliveredEventCount).",
    ),
    (
        "deleted",
        "streamfn_esm_deleted_messages_total",
        "Queue sources: messages deleted after success or matching no filter "
        "(AWS DeletedEventCount).",
    ),
    (
        "returned",
        "streamfn_esm_returned_messages_total",
        "Queue sources: messages released back to the queue after a failure.",
    ),
    (
        "commits",
        "streamfn_esm_commits_total",
        "Checkpoint commits the source acknowledged.",
    ),
)
PARTITION_GAUGES = (
    (
        "in_flight",
        "streamfn_esm_in_flight_records",
        "Records fetched and not settled yet.",
    ),
    (
        "last_commit",
        "streamfn_esm_last_commit_timestamp_seconds",
        "When the source last acknowledged a commit (Unix time; 0 before the first).",
    ),
)


def _named(mappings: Iterable[ObservedMapping]) -> Iterator[tuple[Labels, ObservedMapping]]:
    """Each mapping with its labels; two mappings of one function on sources that describe
    themselves alike get ``#2``, ``#3``... so their series stay apart."""
    seen: dict[Labels, int] = {}
    for mapping in mappings:
        labels: Labels = mapping.labels
        seen[labels] = n = seen.get(labels, 0) + 1
        yield (labels if n == 1 else (labels[0], f"{labels[1]} #{n}")), mapping


def _partition_reader(
    mappings: Sequence[ObservedMapping], read: Callable[[PartitionStats], float]
) -> Callable[[], Samples]:
    def samples() -> Samples:
        for labels, mapping in _named(mappings):
            for partition, stats in list(mapping.stats.partitions.items()):
                yield (*labels, partition), float(read(stats))

    return samples


def _mapping_reader(
    mappings: Sequence[ObservedMapping], read: Callable[[MappingStats], float]
) -> Callable[[], Samples]:
    def samples() -> Samples:
        for labels, mapping in _named(mappings):
            yield labels, float(read(mapping.stats))

    return samples


def _state_reader(
    mappings: Sequence[ObservedMapping], read: Callable[[ObservedMapping], bool]
) -> Callable[[], Samples]:
    def samples() -> Samples:
        for labels, mapping in _named(mappings):
            yield labels, float(read(mapping))

    return samples


def _source_gauge_reader(mappings: Sequence[ObservedMapping], gauge: str) -> Callable[[], Samples]:
    def samples() -> Samples:
        for labels, mapping in _named(mappings):
            source = mapping.source
            if isinstance(source, ReportsGauges):
                for partition, value in source.gauges().get(gauge, {}).items():
                    yield (*labels, partition), float(value)

    return samples


def _batch_sizes(
    mappings: Sequence[ObservedMapping],
) -> Callable[[], Iterable[tuple[Labels, dict[int, int]]]]:
    def samples() -> Iterator[tuple[Labels, dict[int, int]]]:
        for labels, mapping in _named(mappings):
            yield labels, mapping.stats.batch_sizes

    return samples


def _proc_stat() -> list[bytes] | None:
    """The fields of /proc/self/stat after the command name, or None where there is no /proc;
    field n of proc(5) is at index n - 3."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return None
    return data.rpartition(b")")[2].split()


@functools.cache
def _boot_time() -> float:
    with open("/proc/stat", "rb") as stat:
        for line in stat:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    return 0.0


def _proc_field(index: int, scale: float) -> Callable[[], Samples]:
    def samples() -> Samples:
        fields = _proc_stat()
        if fields is not None:
            yield (), float(fields[index]) * scale

    return samples


def _cpu_seconds() -> Samples:
    times = os.times()
    return [((), times.user + times.system)]


def _start_time() -> Samples:
    fields = _proc_stat()
    if fields is None:
        return []
    return [((), _boot_time() + float(fields[19]) / os.sysconf("SC_CLK_TCK"))]


def _open_fds() -> Samples:
    return [((), float(len(os.listdir("/proc/self/fd"))))]


def _max_fds() -> Samples:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return [((), float(soft))] if soft != resource.RLIM_INFINITY else []


def process_families() -> list[_Family]:
    """The standard ``process_*`` metrics, as Prometheus client libraries name them; the ones
    read from /proc only where there is one (Linux)."""
    families: list[_Family] = [
        ReadCounter(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            (),
            _cpu_seconds,
        ),
    ]
    if _proc_stat() is not None:
        families += [
            Gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                (),
                _proc_field(21, os.sysconf("SC_PAGE_SIZE")),
            ),
            Gauge(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                (),
                _proc_field(20, 1),
            ),
            Gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                (),
                _start_time,
            ),
            Gauge("process_open_fds", "Number of open file descriptors.", (), _open_fds),
        ]
    families.append(
        Gauge("process_max_fds", "Maximum number of open file descriptors.", (), _max_fds)
    )
    return families


class AppMetrics:
    """The metrics every streamfn worker exposes; gauges are wired to their sources by the app."""

    def __init__(self) -> None:
        self.registry = Registry()
        self.duration = Histogram(
            "streamfn_duration_seconds",
            "Handler run time in seconds.",
            ("function", "version"),
        )
        self.errors = Counter(
            "streamfn_errors_total",
            "Invocations that ended in a function error (raised, timed out).",
            ("function", "version"),
        )
        self.invocations = ReadCounter(
            "streamfn_invocations_total",
            "Handler invocations, by function and executed version.",
            ("function", "version"),
            self.duration.counts,
        )
        self.throttles = Counter(
            "streamfn_throttles_total",
            "Invocations refused because the function's reserved concurrency was in use.",
            ("function",),
        )
        self.async_retries = Counter(
            "streamfn_async_retries_total",
            "Asynchronous invocations put back in the queue, by reason (error or throttle).",
            ("function", "reason"),
        )
        self.dead_letters = Counter(
            "streamfn_async_dead_letters_total",
            "Asynchronous invocations that failed for good, by condition.",
            ("function", "condition"),
        )
        self.destination_failures = Counter(
            "streamfn_async_destination_delivery_failures_total",
            "Invocation records a destination refused after retries.",
            ("function",),
        )
        self.async_refused = Counter(
            "streamfn_async_queue_refused_total",
            "Event invocations refused with 429 because the local event queue was full.",
            ("function",),
        )
        for family in (
            self.invocations,
            self.errors,
            self.throttles,
            self.duration,
            self.async_retries,
            self.dead_letters,
            self.destination_failures,
            self.async_refused,
            *process_families(),
        ):
            self.registry.register(family)

    def add_mappings(self, mappings: Sequence[ObservedMapping]) -> None:
        """Export the stats of ``mappings`` (a live list: mappings added later are scraped
        too) and the gauges of their sources that implement
        :class:`~streamfn.source.ReportsGauges`."""
        register = self.registry.register
        for field, name, help_text in PARTITION_COUNTERS:
            read = _partition_reader(mappings, attrgetter(field))
            register(ReadCounter(name, help_text, ESM_LABELS, read))
        for field, name, help_text in PARTITION_GAUGES:
            register(
                Gauge(name, help_text, ESM_LABELS, _partition_reader(mappings, attrgetter(field)))
            )
        for field, name, help_text in (
            (
                "assigned",
                "streamfn_esm_partitions_assigned_total",
                "Partitions assigned to this worker.",
            ),
            (
                "revoked",
                "streamfn_esm_partitions_revoked_total",
                "Partitions revoked from this worker (rebalance or shutdown).",
            ),
        ):
            register(
                ReadCounter(
                    name, help_text, ESM_LABELS[:2], _mapping_reader(mappings, attrgetter(field))
                )
            )
        register(
            Gauge(
                "streamfn_esm_enabled",
                "1 while the mapping polls; 0 once disabled (enabled=False, or a fatal source "
                "error: access refused, stream or queue deleted).",
                ESM_LABELS[:2],
                _state_reader(mappings, lambda m: m.state == "Enabled"),
            )
        )
        register(
            Gauge(
                "streamfn_esm_source_unreachable",
                "1 while the mapping's source cannot be reached and the mapping reconnects.",
                ESM_LABELS[:2],
                _state_reader(mappings, lambda m: m.stats.unreachable is not None),
            )
        )
        register(
            ReadHistogram(
                "streamfn_esm_batch_size_records",
                "Records per invocation.",
                ESM_LABELS[:2],
                BATCH_SIZE_BUCKETS,
                _batch_sizes(mappings),
            )
        )
        for gauge, (name, help_text) in SOURCE_GAUGES.items():
            register(Gauge(name, help_text, ESM_LABELS, _source_gauge_reader(mappings, gauge)))

    def add_gauge(
        self,
        name: str,
        help_text: str,
        labelnames: Labels,
        read: Callable[[], Iterable[tuple[Labels, float]]],
    ) -> None:
        self.registry.register(Gauge(name, help_text, labelnames, read))

    def add_counter(
        self,
        name: str,
        help_text: str,
        labelnames: Labels,
        read: Callable[[], Iterable[tuple[Labels, float]]],
    ) -> None:
        """A counter another object keeps, read when scraped."""
        self.registry.register(ReadCounter(name, help_text, labelnames, read))

    def render(self) -> str:
        return self.registry.render()
