"""A small Prometheus registry (text exposition format 0.0.4), so the core needs no client library.

Hot-path updates are an attribute increment on a pre-bound child: label lookups happen once, when
a function is registered, never per invocation.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Iterator

Labels = tuple[str, ...]

#: Seconds; spans a no-op handler (~50 us) to Lambda's 900 s maximum timeout.
DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1, 2.5, 5, 10, 30, 60, 300, 900,
)  # fmt: skip


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
        for family in (
            self.invocations,
            self.errors,
            self.throttles,
            self.duration,
            self.async_retries,
            self.dead_letters,
            self.destination_failures,
        ):
            self.registry.register(family)

    def add_gauge(
        self,
        name: str,
        help_text: str,
        labelnames: Labels,
        read: Callable[[], Iterable[tuple[Labels, float]]],
    ) -> None:
        self.registry.register(Gauge(name, help_text, labelnames, read))

    def render(self) -> str:
        return self.registry.render()
