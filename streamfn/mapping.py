"""An event source mapping: a source, a function and the settings that join them. It answers
the source's assignment changes by starting and stopping a PartitionRunner per partition, and
owns what is observed of it: its stats (read by ``/metrics`` and the health checks) and its
failure log."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Collection

from .backoff import retry_delay
from .config import MappingConfig
from .destinations import Destination
from .dispatch import Function
from .errors import ConfigError, SourceError, SourceUnreachable
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

#: Seconds: the longest wait between two reconnections of an unreachable source.
UNREACHABLE_RETRY_CAP = 60.0


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
        #: the source's fatal error once it disabled the mapping
        self.error: SourceError | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._stopping = asyncio.Event()

    def describe(self) -> str:
        return f"{self.source.describe()} -> {self.function.name}"

    def _extra(self, **fields: object) -> dict[str, object]:
        function, mapping = self.labels
        return {"function": function, "mapping": mapping, **fields}

    @property
    def state(self) -> str:
        """Lambda's mapping state, as far as it applies to a running worker: ``Enabled``, or
        ``Disabled`` (by ``enabled=False``, or by a fatal source error)."""
        return "Disabled" if not self.config.enabled or self.stats.fatal else "Enabled"

    @property
    def state_reason(self) -> str | None:
        """Why the mapping is not processing, in Lambda's words where it has some
        (``StateTransitionReason`` / ``LastProcessingResult``); None while it runs."""
        if not self.config.enabled:
            return "USER_INITIATED"
        if self.stats.fatal is not None:
            return f"PROBLEM: {self.stats.fatal}"
        if self.stats.unreachable is not None:
            return f"PROBLEM: Connection error: {self.stats.unreachable}"
        return None

    async def run(self) -> None:
        """Run until :meth:`stop`; then drain every partition and close the source.

        A :class:`~streamfn.errors.SourceError` disables this mapping only, as Lambda disables
        one whose stream was deleted or whose access was refused: it is logged once, kept in
        ``stats.fatal`` (``/health``, ``/metrics``) and the other mappings and the Invoke API
        go on. A :class:`~streamfn.errors.SourceUnreachable` (a broker not up yet, or
        restarting) is retried with a backoff of up to a minute, one line per attempt."""
        try:
            if not self.config.enabled:
                log.info("mapping disabled", extra=self._extra())
                await self._stopping.wait()
                return
            log.info("mapping started", extra=self._extra())
            attempt = 0
            while not self._stopping.is_set():
                error = await self._run_source()
                if error is None:
                    break
                self._abandon_runners()
                if not isinstance(error, SourceUnreachable):
                    self._disable(error)
                    await self._stopping.wait()
                    return
                delay = retry_delay(attempt, 1.0, UNREACHABLE_RETRY_CAP)
                attempt += 1
                self.stats.unreachable = str(error)
                log.error(
                    f"source unreachable: {error}; the mapping reconnects in {delay:.3g} s",
                    extra=self._extra(
                        errorType=type(error).__name__,
                        errorMessage=str(error),
                        attempt=attempt,
                        next=f"reconnect in {delay:.3g} s",
                    ),
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stopping.wait()
        finally:
            try:
                await self.outcome.drain()  # window timers and final invocations end here
            finally:
                close = getattr(self.on_failure, "close", None)
                if close is not None:  # destinations that hold a client (Kafka, SQS) release it
                    await close()
        log.info("mapping stopped", extra=self._extra())

    async def _run_source(self) -> SourceError | None:
        """Run the source and its partitions until :meth:`stop` (None) or until the source
        fails with a SourceError (returned). Any other error is a bug and propagates."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                source_task = tg.create_task(self.source.run(self.config, self))
                await self._stopping.wait()
                await self.revoked(list(self.runners))
                source_task.cancel()
        except BaseExceptionGroup as group:
            matched, rest = group.split(SourceError)
            if rest is not None or matched is None:
                raise
            error: BaseException = matched
            while isinstance(error, BaseExceptionGroup):  # a runner's own task group nests it
                error = error.exceptions[0]
            assert isinstance(error, SourceError)
            return error
        finally:
            self._tg = None
        return None

    def _abandon_runners(self) -> None:
        """The source failed and the task group cancelled its partitions' runners: their
        records in flight are abandoned (the next owner, or this worker once it reconnects,
        reads them again from the last checkpoint)."""
        for partition, (runner, _) in self.runners.items():
            runner.stats.in_flight -= runner.inflight
            runner.inflight = 0
            self.failures.closed(partition)
        self.runners.clear()

    def _disable(self, error: SourceError) -> None:
        self.error = error
        self.stats.unreachable = None
        self.stats.fatal = f"{type(error).__name__}: {error}"
        log.error(
            f"source failed; the mapping is disabled: {self.stats.fatal}",
            extra=self._extra(
                errorType=type(error).__name__,
                errorMessage=str(error),
                next="mapping disabled until the worker restarts; fix the cause first "
                "(permissions, credentials, the stream or queue)",
                state="Disabled",
            ),
        )

    def stop(self) -> None:
        self._stopping.set()

    async def assigned(self, partitions: Collection[str]) -> None:
        assert self._tg is not None, "assigned() called outside run()"
        self.stats.assignments += 1
        self.stats.unreachable = None
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
