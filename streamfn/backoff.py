"""Exponential backoff with jitter for retries that must never spin the CPU."""

from __future__ import annotations

import random


def retry_delay(attempt: int, base: float, cap: float) -> float:
    """Delay before retry number ``attempt`` (0-based): half fixed, half random ("equal jitter"),
    so concurrent retries spread out yet each waits at least half the exponential step."""
    step: float = min(cap, base * 2.0 ** min(attempt, 32))
    return step / 2 + random.uniform(0, step / 2)
