"""A queue's message counts for a gauge, shared by the SQS source and the SQS event queue: read
with one GetQueueAttributes call every ``interval`` seconds in the background, so a scrape of
``/metrics`` reads the last counts and never waits on SQS (which updates them only about once a
minute anyway). A read that fails keeps the last counts and is logged at a bounded rate.

Internal: used by :mod:`.source` and :mod:`.event_queue`; nothing here is part of the public API.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from .._retrylog import RetryLog
from ._client import error_code

#: The counts read: messages visible, in flight (received, not deleted) and delayed.
ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


class QueueDepth:
    """The :data:`ATTRIBUTES` counts of the queue at ``url``, as last read; :meth:`run` reads
    them every ``interval`` seconds until cancelled. ``queue`` names it in log lines."""

    def __init__(
        self, client: Any, url: str, interval: float, *, queue: str, log: logging.Logger
    ) -> None:
        self._client = client
        self._url = url
        self._interval = interval
        self._failures = RetryLog(log, "cannot read the SQS queue's depth", queue=queue)
        self.counts: dict[str, int] = {}

    def update(self, attributes: Mapping[str, str]) -> None:
        """Take the counts from a GetQueueAttributes response that asked for them (the one
        a queue is opened with, so the gauge has a value from the start)."""
        self.counts = {name: int(attributes.get(name, 0)) for name in ATTRIBUTES}

    @property
    def visible(self) -> int:
        """ApproximateNumberOfMessages: what a receive could return now."""
        return self.counts.get("ApproximateNumberOfMessages", 0)

    @property
    def total(self) -> int:
        """Every message not deleted yet: visible, in flight and delayed."""
        return sum(self.counts.values())

    async def run(self) -> None:
        then = f"the gauge keeps its last value; reading again in {self._interval:g} s"
        while True:
            await asyncio.sleep(self._interval)
            try:
                response = await self._client.get_queue_attributes(
                    QueueUrl=self._url, AttributeNames=list(ATTRIBUTES)
                )
            except Exception as exc:  # a stale gauge is no reason to stop the worker
                self._failures.failed(exc, then, error_type=error_code(exc))
                continue
            self._failures.succeeded()
            self.update(response["Attributes"])
