"""A handler module whose import fails while ``ENV_TEST_INIT_FAIL`` is set: the worker imports
it at registration, an execution environment at its init phase, after the test sets it."""

from __future__ import annotations

import os
from typing import Any

if os.environ.get("ENV_TEST_INIT_FAIL"):
    raise RuntimeError("init failed on purpose")


def handler(event: Any, context: Any) -> str:
    return "initialised"
