"""A mapping-only app for shutdown tests: processes an in-memory stream, records commits."""

from __future__ import annotations

import atexit
import os
from pathlib import Path
from typing import Any

from streamfn import App, Batch
from streamfn.testing import MemorySource

app = App("drain")
source = MemorySource()
source.extend("p0", [b"x"] * 10)


@app.consume(source, batch_size=5)
async def handler(batch: Batch, context: Any) -> None:
    print(f"processed {len(batch)}", flush=True)


_report = os.environ.get("DRAIN_REPORT")
if _report:
    atexit.register(lambda: Path(_report).write_text(str(source.committed.get("p0", 0))))
