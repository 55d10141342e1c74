"""The visibility heartbeat the SQS source and the SQS event queue share: while a worker holds
a message, its visibility is extended every third of the visibility timeout, so a handler or an
invocation of any length causes no duplicate, and a worker that dies gives its messages back
within one visibility timeout.

Internal: used by :mod:`.source` and :mod:`.event_queue`; nothing here is part of the public API.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

from ._client import call_by_ten, summary

T = TypeVar("T")


class VisibilityHeartbeat:
    """Extends the visibility of the messages ``held()`` names (their receipt handles) to
    ``timeout`` seconds, every ``timeout / 3`` seconds, while :meth:`run` runs.

    An extension that still fails after :func:`call_by_ten`'s retries, for a message held
    after the round, is logged to ``log`` as ``lost`` (the message may come back to another
    consumer) and tried again in the next round. :meth:`change` sets another visibility (a
    release, a retry delay) once any running round is done, so that an extension never lands
    after, and undoes, that change.
    """

    def __init__(
        self,
        client: Any,
        url: str,
        timeout: int,
        held: Callable[[], Collection[str]],
        *,
        queue: str,
        log: logging.Logger,
        lost: str,
    ) -> None:
        self._client = client
        self._url = url
        self._timeout = timeout
        self._held = held
        self._queue = queue
        self._log = log
        self._lost = lost
        self._lock = asyncio.Lock()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._timeout / 3)
            async with self._lock:
                receipts = list(self._held())
                if not receipts:
                    continue
                failures = await call_by_ten(
                    self._client.change_message_visibility_batch,
                    self._url,
                    receipts,
                    self._extend_entry,
                )
            if not failures:
                continue
            held = set(self._held())
            lost = [f for f in failures if f[0] in held]
            if lost:
                self._log.warning(self._lost, extra={"queue": self._queue, "errors": summary(lost)})

    def _extend_entry(self, entry_id: str, receipt: str) -> dict[str, Any]:
        return {"Id": entry_id, "ReceiptHandle": receipt, "VisibilityTimeout": self._timeout}

    async def change(
        self, items: Sequence[T], entry: Callable[[str, T], dict[str, Any]]
    ) -> list[tuple[T, str]]:
        """ChangeMessageVisibility for ``items`` (``entry`` makes each one's batch entry) after
        any running extension; returns the (item, error code) that failed."""
        async with self._lock:
            return await call_by_ten(
                self._client.change_message_visibility_batch, self._url, items, entry
            )


def release_now_entry(entry_id: str, handle: str) -> dict[str, Any]:
    """The ChangeMessageVisibility entry that makes a message visible again at once."""
    return {"Id": entry_id, "ReceiptHandle": handle, "VisibilityTimeout": 0}
