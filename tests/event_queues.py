"""Helpers shared by the tests of the event queue backends (SQS, Kafka)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from streamfn.asyncq import EventQueue, QueuedEvent


async def receive(queue: EventQueue, count: int, deadline: float) -> list[QueuedEvent]:
    """The next ``count`` events ``queue`` hands out, within ``deadline`` seconds."""
    received: list[QueuedEvent] = []
    async with asyncio.timeout(deadline):
        while len(received) < count:
            received += await queue.receive(count - len(received))
    return received


def fields(event: QueuedEvent) -> tuple[Any, ...]:
    """What a queue must keep of an event: QueuedEvent's fields (a backend may hand out a
    subclass that carries its own bookkeeping too)."""
    return tuple(getattr(event, field.name) for field in dataclasses.fields(QueuedEvent))
