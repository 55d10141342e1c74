"""FastStream's Kafka broker (on aiokafka): a batch subscriber (``max_records``) or, for the
per-record I/O scenario, a per-message one. ``ack_policy`` is ``ack`` (commit after the
handler, even when it raised: the nearest to at-least-once FastStream has for Kafka) unless
the config asks for the default ``ack_first`` (auto-commit)."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage

from bench.peers.common import Runner
from streamfn.runtime import run_loop


async def main(runner: Runner) -> None:
    broker = KafkaBroker(runner["servers"], logger=None)
    batch = not runner["per_record"]
    options: dict[str, Any] = {
        "group_id": runner["group"],
        "auto_offset_reset": "earliest",
        "ack_policy": AckPolicy(runner.config.get("ack_policy", "ack")),
        "heartbeat_interval_ms": 500,
        "session_timeout_ms": 6000,
    }
    if batch:
        options.update(batch=True, max_records=runner["batch_size"], batch_timeout_ms=200)

    @broker.subscriber(runner["topic"], **options)
    async def handler(body: Any, message: KafkaMessage) -> None:
        raw = message.raw_message
        values = [m.value for m in raw] if batch else [raw.value]
        await runner.handle(values)

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        async with broker:
            await broker.start()
            runner.reporter.ready()
            await stop.wait()
    finally:
        runner.finish(ack_policy=options["ack_policy"].value)


if __name__ == "__main__":
    run_loop(main(Runner(sys.argv)))
