"""Fixtures of the engine tests."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from streamfn.logs import JsonFormatter

Line = dict[str, Any]


@pytest.fixture
def lines() -> Iterator[list[Line]]:
    """Every line streamfn logs, formatted as JSON and parsed back."""
    collected: list[Line] = []
    formatter = JsonFormatter()

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            collected.append(json.loads(formatter.format(record)))

    handler = Collect()
    logger = logging.getLogger("streamfn")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield collected
    logger.removeHandler(handler)
    logger.setLevel(level)
