"""FastStream's Kafka broker (on aiokafka): a batch subscriber (``max_records``) or, for the
per-record I/O scenario, a per-message one. Two settings, from the config:

``ack_policy`` (default ``ack``): ``ack`` commits after the handler **even when it raised**
(a failed batch is committed past: lost); ``nack_on_error`` commits after a success and, on
an exception, seeks every partition of the batch back to the batch's first record, so the
batch is delivered again (nothing is committed past, but a record that always fails is
retried forever). ``ack_first`` is FastStream's Kafka default (auto-commit).

``decoder`` (default ``default``): FastStream decodes every message before calling the
handler, whatever the handler's annotation (its call wrapper awaits ``message.decode()``
unconditionally; the annotation only adds validation on top). Its default batch decoder
builds a second ``KafkaMessage`` per record (header dict, message id, a ``uuid4``
correlation id) and tries ``json.loads`` on each body. ``raw`` passes FastStream's
documented ``decoder=`` hook a function returning the batch's raw bodies (``bytes``), so
nothing is decoded.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage

from bench.peers.common import Runner
from streamfn.bench import kit
from streamfn.runtime import run_loop


def raw_bodies(message: Any) -> Any:
    """A decoder that decodes nothing: the raw value (a list of them for a batch)."""
    return message.body


async def main(runner: Runner) -> None:
    broker = KafkaBroker(runner["servers"], logger=None)
    batch = not runner["per_record"]
    raw = runner.config.get("decoder", "default") == "raw"
    options: dict[str, Any] = {
        "group_id": runner["group"],
        "auto_offset_reset": "earliest",
        "ack_policy": AckPolicy(runner.config.get("ack_policy", "ack")),
        "heartbeat_interval_ms": 500,
        "session_timeout_ms": 6000,
    }
    if batch:
        options.update(batch=True, max_records=runner["batch_size"], batch_timeout_ms=200)
    failures = 0

    async def handle(values: list[bytes]) -> None:
        nonlocal failures
        try:
            await runner.handle(values)
        except kit.PoisonRecord:
            failures += 1  # FastStream's ack policy decides what happens to the batch
            raise

    if raw:

        @broker.subscriber(runner["topic"], decoder=raw_bodies, **options)
        async def raw_handler(body: Any) -> None:
            await handle(body if batch else [body])

    else:

        @broker.subscriber(runner["topic"], **options)
        async def handler(body: Any, message: KafkaMessage) -> None:
            raw_message = message.raw_message
            await handle([m.value for m in raw_message] if batch else [raw_message.value])

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        async with broker:
            await broker.start()
            runner.reporter.ready()
            await stop.wait()
    finally:
        runner.finish(
            ack_policy=options["ack_policy"].value,
            mode=f"decoder={'raw' if raw else 'default'}",
            handler_errors=failures,
        )


if __name__ == "__main__":
    run_loop(main(Runner(sys.argv)))
