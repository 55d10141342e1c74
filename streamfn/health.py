"""Liveness and readiness of a running app, judged from what its mappings report
(:mod:`streamfn.stats`): the answers of ``GET /health`` and ``GET /ready``, made for Kubernetes
probes (liveness restarts the pod, readiness takes it out of a Service).

Liveness answers "would a restart help?". It fails for

- a *stuck* partition: records in flight, and neither a settled batch nor a new invocation for
  longer than its threshold. The poller, the source or a handler that ignores cancellation is
  wedged; a restart redelivers from the last checkpoint. An ``on_failure`` destination that
  keeps refusing the failure record holds the checkpoint the same way and counts too: a
  restart retries with a fresh client.

Three states are not failures of liveness, by decision, and are listed in the healthy answer:

- ``disabled``: a mapping whose source failed for good (access refused, stream or queue
  deleted: ``MappingStats.fatal``). As on Lambda, that mapping is disabled with its reason and
  the others, and the Invoke API, go on; a restart would not fix its cause and would stop them
  all. ``streamfn_esm_enabled`` and the ``StreamfnMappingDisabled`` alert page instead.

- ``retrying``: a partition retrying a failing batch. With ``maximum_retry_attempts=-1`` a
  poison record blocks its partition until it expires, on Lambda too. Every attempt is the
  process working as configured; a restart would run the same batch again, crash-loop the pod
  and take the healthy partitions and the Invoke API down with it. The alert rules in
  ``deploy/prometheus/alerts.yaml`` are where it pages.
- ``throttled``: the function holds all its reserved concurrency (``reserved_concurrency=0``
  pauses a function, as on Lambda); the partitions holding the slots are judged instead.

A partition's threshold is ``max(stuck_after, maximum_batching_window + function timeout +
retry_max_delay)`` of its mapping: the longest a healthy partition can go between two
invocations, so a long configured timeout never reads as stuck. Attempts are seen as the
partition's invocation count moving between two checks, so a check credits at most one probe
period of extra time; the first check of a partition credits it with an attempt then.

Readiness: the app runs and is not stopping, and every enabled mapping received partitions
(Kafka: joined its group and got an assignment, not while the connection is retried; Kinesis
and DynamoDB Streams: took a lease; SQS: started its pollers), unless it was disabled by a
fatal error (listed, without failing: it will not come back by waiting). A mapping stays
ready through later rebalances, so a rebalance does not take the worker out of its Service. A
Kafka member that the group gives no partition (more workers than partitions) is not ready.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from .errors import ConfigError
from .mapping import Mapping
from .stats import PartitionStats

#: Seconds. Well past the longest wait of a default mapping between two invocations (3 s
#: timeout + 60 s retry_max_delay), so a liveness failure is never a slow batch; short enough
#: that a wedged worker restarts within minutes, well inside Kafka's default 7-day retention.
DEFAULT_STUCK_AFTER = 300.0


class Verdict(NamedTuple):
    """A check's answer: whether it passes, and the JSON body that says why."""

    ok: bool
    body: dict[str, Any]


class Health:
    """Judges the app's mappings; one per app, kept by it (``App.health``), since it remembers
    each partition's invocation count between checks."""

    def __init__(
        self,
        mappings: Sequence[Mapping],
        stuck_after: float = DEFAULT_STUCK_AFTER,
    ) -> None:
        self.mappings = mappings
        self.stuck_after = stuck_after
        #: (mapping index, partition) -> (invocation count, when it was seen to change)
        self._attempts: dict[tuple[int, str], tuple[int, float]] = {}

    @property
    def stuck_after(self) -> float:
        return self._stuck_after

    @stuck_after.setter
    def stuck_after(self, seconds: float) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
            raise ConfigError.out_of_range("stuck_after", seconds, "a number of seconds > 0")
        self._stuck_after = float(seconds)

    def live(self) -> Verdict:
        """Liveness: ``{"status": "ok"}`` (with the partitions that wait by design and the
        disabled mappings, if any), or ``{"status": "unhealthy", "reasons": [...]}``."""
        now = time.monotonic()
        reasons: list[dict[str, Any]] = []
        waiting: list[dict[str, Any]] = []
        for index, mapping in enumerate(self.mappings):
            if mapping.state != "Enabled":
                continue
            threshold = max(self.stuck_after, _longest_wait(mapping))
            concurrency = mapping.function.concurrency
            throttled = concurrency.limit is not None and concurrency.running >= concurrency.limit
            for partition, stats in list(mapping.stats.partitions.items()):
                if stats.in_flight == 0:  # idle, or not assigned to this worker
                    continue
                attempted = self._last_attempt(index, partition, stats, now)
                quiet = now - stats.last_progress
                if quiet <= threshold:
                    continue
                report = _partition(mapping, partition, stats, quiet, threshold)
                if now - attempted <= threshold:
                    waiting.append({**report, "reason": "retrying"})
                elif throttled:
                    waiting.append({**report, "reason": "throttled"})
                else:
                    reasons.append({**report, "reason": "stuck"})
        if reasons:
            return Verdict(False, {"status": "unhealthy", "reasons": reasons})
        body: dict[str, Any] = {"status": "ok"}
        if waiting:
            body["waiting"] = waiting
        if disabled := self._disabled():
            body["disabled"] = disabled
        return Verdict(True, body)

    def ready(self, running: bool) -> Verdict:
        """Readiness: ``{"status": "ready"}``, or ``{"status": "not ready", "reasons": [...]}``;
        both list the mappings a fatal error disabled under ``disabled``. ``running`` is whether
        the app runs and is not stopping (``App.ready``)."""
        reasons: list[dict[str, Any]] = []
        if not running:
            reasons.append({"reason": "the app is not running, or is stopping"})
        for mapping in self.mappings:
            if mapping.state != "Enabled" or mapping.stats.assignments:
                continue
            unreachable = mapping.stats.unreachable
            reasons.append(
                {**_names(mapping), "reason": "source unreachable", "error": unreachable}
                if unreachable is not None
                else {
                    **_names(mapping),
                    "reason": "no partition assigned yet (connecting, or joining its group)",
                }
            )
        body: dict[str, Any] = (
            {"status": "not ready", "reasons": reasons} if reasons else {"status": "ready"}
        )
        if disabled := self._disabled():
            body["disabled"] = disabled
        return Verdict(not reasons, body)

    def _disabled(self) -> list[dict[str, Any]]:
        return [
            {**_names(mapping), "state": "Disabled", "reason": mapping.state_reason}
            for mapping in self.mappings
            if mapping.stats.fatal is not None
        ]

    def _last_attempt(self, index: int, partition: str, stats: PartitionStats, now: float) -> float:
        """When the partition's invocation count was last seen to move (now, the first time)."""
        key = (index, partition)
        seen = self._attempts.get(key)
        if seen is None or seen[0] != stats.invocations:
            self._attempts[key] = (stats.invocations, now)
            return now
        return seen[1]


def _longest_wait(mapping: Mapping) -> float:
    """The longest a healthy partition of ``mapping`` goes without an invocation: a batching
    window, then a run to the timeout, then the longest retry backoff."""
    config = mapping.config
    window = config.maximum_batching_window or 0.0
    return window + mapping.function.timeout + config.retry_max_delay


def _names(mapping: Mapping) -> dict[str, str]:
    """The mapping as its metrics and log lines label it."""
    function, source = mapping.labels
    return {"function": function, "mapping": source}


def _partition(
    mapping: Mapping, partition: str, stats: PartitionStats, quiet: float, threshold: float
) -> dict[str, Any]:
    return {
        **_names(mapping),
        "partition": partition,
        "inFlight": stats.in_flight,
        "secondsWithoutProgress": round(quiet, 1),
        "thresholdSeconds": threshold,
    }
