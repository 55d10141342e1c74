"""A Kafka worker for crash tests, run with ``streamfn run``: it appends each record it
processes to KAFKA_OUTPUT as "<partition> <offset>" lines, one write per batch. KAFKA_BATCH_SIZE,
KAFKA_WORK_SECONDS (per batch) and KAFKA_MAX_UNCOMMITTED change its mapping."""

from __future__ import annotations

import os
import time
from typing import Any

from streamfn import App, Batch
from streamfn.connectors.kafka import KafkaSource

OUTPUT = os.environ["KAFKA_OUTPUT"]

app = App("kafka-worker")
source = KafkaSource(
    os.environ["KAFKA_TOPIC"],
    bootstrap_servers=os.environ["KAFKA_BOOTSTRAP"],
    group_id=os.environ["KAFKA_GROUP"],
    consumer_options={"heartbeat_interval_ms": 300, "session_timeout_ms": 6000},
)


WORK = float(os.environ.get("KAFKA_WORK_SECONDS", "0.01"))  # so the kill lands mid-stream


@app.consume(
    source,
    batch_size=int(os.environ.get("KAFKA_BATCH_SIZE", "20")),
    max_uncommitted_records=int(os.environ.get("KAFKA_MAX_UNCOMMITTED", "0")) or None,
)
def handler(batch: Batch, context: Any) -> None:
    with open(OUTPUT, "a") as out:
        out.write("".join(f"{r.partition} {r.offset}\n" for r in batch))
    if WORK:
        time.sleep(WORK)
