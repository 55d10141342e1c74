"""An app whose mapping is invalid: `streamfn run` must refuse it with exit code 2."""

from __future__ import annotations

from typing import Any

from streamfn import App
from streamfn.testing import MemorySource

app = App("bad")


@app.consume(MemorySource(), batch_size=0)
async def handler(batch: Any, context: Any) -> None: ...
