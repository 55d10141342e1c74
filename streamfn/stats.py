"""What an event source mapping has done, per partition: plain counters the engine bumps once
per batch, read at scrape time by ``/metrics`` and by the health checks.

The hot path pays an integer addition per batch, never a label lookup or a lock: a
:class:`PartitionStats` is created when a partition is first assigned, handed to its runner, and
found by the outcome policy once per batch. It outlives the partition's revocation
(counters of a partition that comes back continue), so a scrape never sees a counter go down.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class PartitionStats:
    """One partition (or shard, or SQS poller) of one mapping. Counts are of records unless
    the name says batches; times are ``time.time()`` (epoch seconds) for what is exported and
    ``time.monotonic()`` for what is only compared."""

    #: records the source returned
    polled: int = 0
    #: records that matched no ``filter_criteria`` pattern (skipped, checkpointed or deleted)
    filtered: int = 0
    #: invocations (batches) and the records they carried, retries and bisected halves included
    invocations: int = 0
    invoked: int = 0
    #: invocations that failed: raised, timed out, or an invalid or partial batch response
    failed_invocations: int = 0
    #: retries of a failed batch (after a backoff) and bisections of one
    retries: int = 0
    bisects: int = 0
    #: records given up without an on_failure destination (Lambda discards them)
    dropped: int = 0
    #: records whose failure record an on_failure destination stored
    on_failure: int = 0
    #: queue sources: messages deleted after success (or matching no filter), and messages
    #: handed back to the queue after a failure
    deleted: int = 0
    returned: int = 0
    #: checkpoint commits that the source acknowledged, and when the last one did
    commits: int = 0
    last_commit: float = 0.0
    #: records fetched and not settled yet (the runner's in-flight count; 0 while the
    #: partition is not assigned to this worker)
    in_flight: int = 0
    #: when the partition was assigned, last settled a batch or found nothing to do
    #: (monotonic): a partition with records in flight and no progress for long is stuck
    last_progress: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class MappingStats:
    """One mapping: its partitions' stats (kept after revocation), its batch sizes and its
    rebalances."""

    partitions: dict[str, PartitionStats] = field(default_factory=dict)
    #: invocations by their number of records, exactly: an entry's increment per invocation is
    #: all the hot path pays, and ``/metrics`` makes histogram buckets of it at scrape time
    batch_sizes: dict[int, int] = field(default_factory=dict)
    #: partitions assigned to and revoked from this worker
    assigned: int = 0
    revoked: int = 0
    #: assignments the source announced, empty ones included: a worker its group gives no
    #: partition (more workers than partitions) has still joined, and is ready
    assignments: int = 0
    #: the source's fatal error, once it stopped for good: the mapping is disabled
    fatal: str | None = None
    #: why the source cannot be reached while the mapping reconnects (None once it is)
    unreachable: str | None = None

    def partition(self, partition: str) -> PartitionStats:
        """The stats of ``partition``, created on first use."""
        stats = self.partitions.get(partition)
        if stats is None:
            stats = self.partitions[partition] = PartitionStats()
        return stats
