"""What every peer runner shares: its config, the tracker its handler feeds, and the report.

A runner is started as ``python -m bench.peers.<name>_runner '<config json>'``; it consumes the
bench topic with its framework's no-op (or sleeping, or poison-raising) handler, prints the line
protocol of :class:`streamfn.bench.kit.WorkerReporter`, and stops gracefully on SIGTERM.
The handler's per-record work (read each record's id, and its latency when asked) is the same
for every peer, so the comparison measures the frameworks, not the handlers.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

import orjson

from streamfn.bench import kit


class Runner:
    """The config, tracker and reporter of one peer worker process."""

    def __init__(self, argv: Sequence[str]) -> None:
        logging.basicConfig(level=logging.WARNING)
        self.config: dict[str, Any] = orjson.loads(argv[1])
        self.tracker = kit.Tracker(
            self.config["records"],
            latency=self.config["latency"],
            poison_every=self.config["poison_every"],
        )
        self.reporter = kit.WorkerReporter(self.tracker, self.config["ids_file"]).start()
        self.sleep = self.config["sleep_ms"] / 1000
        self.per_record = self.config["per_record"]

    def __getitem__(self, key: str) -> Any:
        return self.config[key]

    async def handle(self, values: list[bytes]) -> None:
        """The async handler body: fail on poison, sleep as configured, count."""
        self.tracker.check(values)
        if self.sleep:
            for _ in values if self.per_record else (None,):
                await asyncio.sleep(self.sleep)
        self.tracker.values(values)

    def handle_sync(self, values: list[bytes]) -> None:
        """The same for a synchronous framework (Quix)."""
        self.tracker.check(values)
        if self.sleep:
            for _ in values if self.per_record else (None,):
                time.sleep(self.sleep)
        self.tracker.values(values)

    def finish(self, **extra: Any) -> None:
        self.reporter.finish(extra)
        sys.stdout.flush()
