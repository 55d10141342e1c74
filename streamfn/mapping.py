"""An event source mapping: a source, a function and the settings that join them. It answers
the source's assignment changes by starting and stopping a PartitionRunner per partition."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Collection

from .config import MappingConfig
from .destinations import Destination
from .dispatch import Function
from .errors import ConfigError
from .filters import FilterCriteria
from .outcome import QueueOutcome, StreamOutcome
from .poller import PartitionRunner
from .source import QueueSource, Source
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
        max_retries = self.config.maximum_retry_attempts
        if source.kind == "kafka" and max_retries == -1 and on_failure is not None:
            max_retries = KAFKA_RETRY_CAP
        self.outcome: StreamOutcome | QueueOutcome
        if isinstance(source, QueueSource):
            self.outcome = QueueOutcome(function, source, self.config)
        else:
            policy = WindowedOutcome if self.config.tumbling_window > 0 else StreamOutcome
            self.outcome = policy(function, source, self.config, on_failure, max_retries)
        self.runners: dict[str, tuple[PartitionRunner, asyncio.Task[None]]] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._stopping = asyncio.Event()

    def describe(self) -> str:
        return f"{self.source.describe()} -> {self.function.name}"

    async def run(self) -> None:
        """Run until :meth:`stop`; then drain every partition and close the source."""
        if not self.config.enabled:
            log.info("mapping disabled", extra={"mapping": self.describe()})
            await self._stopping.wait()
            return
        log.info("mapping started", extra={"mapping": self.describe()})
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                source_task = tg.create_task(self.source.run(self.config, self))
                await self._stopping.wait()
                await self.revoked(list(self.runners))
                source_task.cancel()
        finally:
            close = getattr(self.on_failure, "close", None)
            if close is not None:  # destinations that hold a client (Kafka, SQS) release it
                await close()
        log.info("mapping stopped", extra={"mapping": self.describe()})

    def stop(self) -> None:
        self._stopping.set()

    async def assigned(self, partitions: Collection[str]) -> None:
        assert self._tg is not None, "assigned() called outside run()"
        for partition in partitions:
            if partition in self.runners or self._stopping.is_set():
                continue
            runner = PartitionRunner(partition, self.source, self.outcome, self.config, self.filter)
            self.runners[partition] = (runner, self._tg.create_task(runner.run()))
        if partitions:
            log.info(
                "partitions assigned",
                extra={"mapping": self.describe(), "partitions": sorted(partitions)},
            )

    async def revoked(self, partitions: Collection[str]) -> None:
        stopping = [self.runners.pop(p) for p in partitions if p in self.runners]
        if not stopping:
            return
        timeout = self.config.shutdown_timeout
        await asyncio.gather(*(runner.stop(timeout) for runner, _ in stopping))
        await asyncio.wait([task for _, task in stopping])
        log.info(
            "partitions released",
            extra={"mapping": self.describe(), "partitions": sorted(partitions)},
        )
