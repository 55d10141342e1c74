"""An event source mapping: a source, a function and the settings that join them. It answers
the source's assignment changes by starting and stopping a PartitionRunner per partition, and
owns what is observed of it: its stats (read by ``/metrics`` and the health checks) and its
failure log."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Collection

from .config import MappingConfig
from .destinations import Destination
from .dispatch import Function
from .errors import ConfigError, SourceError
from .failures import FailureLog
from .filters import FilterCriteria
from .outcome import QueueOutcome, StreamOutcome
from .poller import PartitionRunner
from .source import QueueSource, Source
from .stats import MappingStats
from .windows import WindowedOutcome

log = logging.getLogger("streamfn.mapping")

#: AWS: "When you configure both infinite retries and an on-failure destination, Lambda
#: automatically applies a maximum of 10 retry attempts" (Kafka).
KAFKA_RETRY_CAP = 10


class Mapping:
    """Runs one source into one function; implements the source's AssignmentListener."""

    def __init__(
        self,
        function: Function,
        source: Source | QueueSource,
        config: MappingConfig,
        on_failure: Destination | None = None,
    ) -> None:
        is_queue = isinstance(source, QueueSource)
        if not is_queue and not isinstance(source, Source):
            raise ConfigError(
                f"{source!r} implements neither streamfn.source.Source nor QueueSource"
            )
        if is_queue and on_failure is not None:
            raise ConfigError(
                "on_failure is not supported for queue sources: failed messages go back to the "
                "queue, and its redrive policy (maxReceiveCount) moves them to a dead-letter queue"
            )
        self.function = function
        self.source = source
        self.config = dataclasses.replace(
            config.resolved(source.default_batch_size, source.default_batching_window),
            function_timeout=function.config.timeout,
        )
        self.on_failure = on_failure
        self.filter = (
            FilterCriteria.parse(config.filter_criteria)
            if config.filter_criteria is not None
            else None
        )
        #: (function, mapping) labels of its metrics and log lines: the mapping is named by its
        #: source, a bounded string
        self.labels = (function.name, source.describe())
        self.stats = MappingStats()
        #: its failure lines; ``failures.interval`` is the summary interval
        self.failures = FailureLog(*self.labels)
        max_retries = self.config.maximum_retry_attempts
        if source.kind == "kafka" and max_retries == -1 and on_failure is not None:
            max_retries = KAFKA_RETRY_CAP
        self.outcome: StreamOutcome | QueueOutcome
        if isinstance(source, QueueSource):
            self.outcome = QueueOutcome(function, source, self.config, self.stats, self.failures)
        else:
            policy = WindowedOutcome if self.config.tumbling_window > 0 else StreamOutcome
            self.outcome = policy(
                function, source, self.config, on_failure, max_retries, self.stats, self.failures
            )
        self.runners: dict[str, tuple[PartitionRunner, asyncio.Task[None]]] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._stopping = asyncio.Event()

    def describe(self) -> str:
        return f"{self.source.describe()} -> {self.function.name}"

    def _extra(self, **fields: object) -> dict[str, object]:
        function, mapping = self.labels
        return {"function": function, "mapping": mapping, **fields}

    async def run(self) -> None:
        """Run until :meth:`stop`; then drain every partition and close the source. A
        :class:`~streamfn.errors.SourceError` stops the mapping for good: it is logged, kept in
        ``stats.fatal`` and raised."""
        if not self.config.enabled:
            log.info("mapping disabled", extra=self._extra())
            await self._stopping.wait()
            return
        log.info("mapping started", extra=self._extra())
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                source_task = tg.create_task(self.source.run(self.config, self))
                await self._stopping.wait()
                await self.revoked(list(self.runners))
                source_task.cancel()
        except* SourceError as group:
            error: BaseException = group
            while isinstance(error, BaseExceptionGroup):  # a runner's own task group nests it
                error = error.exceptions[0]
            self.stats.fatal = f"{type(error).__name__}: {error}"
            log.error(
                f"source failed; the mapping stops: {self.stats.fatal}",
                extra=self._extra(errorType=type(error).__name__, errorMessage=str(error)),
            )
            for partition in self.runners:
                self.failures.closed(partition)
            raise
        finally:
            close = getattr(self.on_failure, "close", None)
            if close is not None:  # destinations that hold a client (Kafka, SQS) release it
                await close()
        log.info("mapping stopped", extra=self._extra())

    def stop(self) -> None:
        self._stopping.set()

    async def assigned(self, partitions: Collection[str]) -> None:
        assert self._tg is not None, "assigned() called outside run()"
        self.stats.assignments += 1
        started = []
        for partition in partitions:
            if partition in self.runners or self._stopping.is_set():
                continue
            runner = PartitionRunner(
                partition,
                self.source,
                self.outcome,
                self.config,
                self.filter,
                stats=self.stats.partition(partition),
                failures=self.failures,
            )
            self.runners[partition] = (runner, self._tg.create_task(runner.run()))
            started.append(partition)
        if started:
            self.stats.assigned += len(started)
            self._rebalanced("assigned", started)

    async def revoked(self, partitions: Collection[str]) -> None:
        stopping = [self.runners.pop(p) for p in partitions if p in self.runners]
        if not stopping:
            return
        timeout = self.config.shutdown_timeout
        await asyncio.gather(*(runner.stop(timeout) for runner, _ in stopping))
        await asyncio.wait([task for _, task in stopping])
        self.stats.revoked += len(stopping)
        self._rebalanced("revoked", [runner.partition for runner, _ in stopping])

    def _rebalanced(self, what: str, partitions: list[str]) -> None:
        """One line per assignment change: which partitions, and what this worker owns now."""
        log.info(
            f"partitions {what}",
            extra=self._extra(partitions=sorted(partitions), owned=len(self.runners)),
        )
