"""Faust (faust-streaming): one agent on the bench topic. Batches come from
``stream.take(batch_size, within=0.2)``; the per-record I/O scenario iterates events one by
one. Offsets are acked after the agent has processed an event and committed by Faust's
interval commit (``broker_commit_every`` / ``broker_commit_interval``): its default
(``processing_guarantee="at_least_once"``), and its only at-least-once mode without
transactions.

Faust has no setting that retries or dead-letters an event: ``take()`` acks the events of a
batch in a ``finally`` after the agent's body, even when it raised. ``on_error`` (default
``drop``) is what the agent's own code does with a failing batch: ``drop`` logs it and goes
on (what Faust does with an exception, without the agent's restart); ``skip`` retries it
record by record and counts the failing records as dead-lettered, as the raw aiokafka loop
does: hand-written, not a Faust feature."""

from __future__ import annotations

import sys
from typing import Any

import faust

from bench.peers.common import Runner
from streamfn.bench import kit


def build(runner: Runner) -> faust.App:
    app = faust.App(
        runner["group"],
        broker=f"kafka://{runner['servers']}",
        store="memory://",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        topic_partitions=12,
        broker_heartbeat_interval=0.5,
        broker_session_timeout=6.0,
    )
    topic = app.topic(runner["topic"], value_type=bytes, value_serializer="raw")
    size = runner["batch_size"]

    @app.agent(topic)
    async def handler(stream: Any) -> None:
        if runner["per_record"]:
            async for value in stream:
                await handle(runner, [value])
        else:
            async for values in stream.take(size, within=0.2):
                await handle(runner, list(values))

    return app


async def handle(runner: Runner, values: list[bytes]) -> None:
    """Faust acks an event whose agent raised and does not process it again, so a
    failing batch is simply counted as not handled (``drop``), or retried record by record
    with the failing ones dead-lettered (``skip``)."""
    try:
        await runner.handle(values)
    except kit.PoisonRecord:
        if runner.config.get("on_error", "drop") != "skip":
            runner.tracker.failed_ids.add(-1)
            return
        for value in values:
            try:
                await runner.handle([value])
            except kit.PoisonRecord:
                runner.tracker.dead_lettered([value])


if __name__ == "__main__":
    runner = Runner(sys.argv)
    app = build(runner)
    runner.reporter.ready()
    try:
        worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
        worker.execute_from_commandline()
    finally:
        runner.tracker.failed_ids.discard(-1)
        skip = runner.config.get("on_error", "drop") == "skip"
        runner.finish(mode=f"interval commit (default); {'skip' if skip else 'drop'} on error")
