r"""A first streamfn app: one function for the Invoke API, and one event source mapping fed by an
in-memory stream, so it runs with no broker at all.

    streamfn run examples/hello.py:app
    curl -s -XPOST localhost:9000/2015-03-31/functions/greet/invocations \
         -H 'Content-Type: application/json' -d '{"name": "world"}'
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from streamfn import App, Batch, BatchResult, Context
from streamfn.testing import MemorySource

app = App("hello")
log = logging.getLogger("hello")


@app.function(timeout=5.0)
async def greet(event: dict[str, Any], context: Context) -> dict[str, Any]:
    """The same handler runs on AWS Lambda unchanged."""
    return {"hello": event.get("name", "world"), "requestId": context.aws_request_id}


orders = MemorySource(["orders-0", "orders-1"])
for n in range(20):
    orders.append(f"orders-{n % 2}", orjson.dumps({"order": n, "total": n * 10}), key=b"%d" % n)


@app.consume(orders, batch_size=5, function_response_types=["ReportBatchItemFailures"])
async def process(batch: Batch, context: Context) -> BatchResult:
    """Processes orders five at a time; reports none failed."""
    total = sum(record.json()["total"] for record in batch)
    log.info(
        "batch processed",
        extra={"partition": batch.partition, "records": len(batch), "total": total},
    )
    return BatchResult([])
