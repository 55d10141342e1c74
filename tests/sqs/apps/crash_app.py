"""The worker of the crash test: ``streamfn run tests/sqs/apps/crash_app.py:app --no-http``.

Settings come from the environment: SQS_QUEUE_URL, SQS_ENDPOINT, HANDLER_DELAY (seconds a
batch takes) and OUT, a file that gets a ``start <bodies>`` line when a batch begins and a
``done <bodies>`` line when it ends."""

from __future__ import annotations

import asyncio
import os

from streamfn import App, Batch, Context
from streamfn.connectors.sqs import SQSSource

OUT = os.environ["OUT"]
DELAY = float(os.environ.get("HANDLER_DELAY", "0"))

app = App("sqs-crash")
source = SQSSource(
    os.environ["SQS_QUEUE_URL"],
    endpoint_url=os.environ["SQS_ENDPOINT"],
    min_pollers=2,
    max_pollers=2,
)


def _note(kind: str, batch: Batch) -> None:
    with open(OUT, "a") as out:
        out.write(f"{kind} {' '.join(rec.text for rec in batch)}\n")


@app.consume(source, batch_size=5)
async def handle(batch: Batch, context: Context) -> None:
    _note("start", batch)
    await asyncio.sleep(DELAY)
    _note("done", batch)
