"""The OpenAPI description of the adapter's routes (``openapi.json`` beside this module), served
at ``GET /openapi.json``. The suite sends schemathesis-generated requests for every route of
it to a running worker, so the document and the server cannot drift apart."""

from __future__ import annotations

import functools
from pathlib import Path

OPENAPI_PATH = Path(__file__).with_name("openapi.json")


@functools.cache
def document() -> bytes:
    """The document's bytes, read once."""
    return OPENAPI_PATH.read_bytes()
