"""Raw aiokafka, the limit: getmany, the handler per partition's records, commit after.

A failing batch is retried record by record and the failing records are skipped (counted as
dead-lettered): the least a hand-written loop must do to move past a poison record. A commit
refused by a rebalance (CommitFailedError, aiokafka #929) is counted and the loop goes on.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError

from bench.peers.common import Runner
from streamfn.bench import kit
from streamfn.runtime import run_loop


async def handle(runner: Runner, values: list[bytes]) -> None:
    try:
        await runner.handle(values)
    except kit.PoisonRecord:
        for value in values:
            try:
                await runner.handle([value])
            except kit.PoisonRecord:
                runner.tracker.dead_lettered([value])


async def main(runner: Runner) -> None:
    consumer = AIOKafkaConsumer(
        runner["topic"],
        bootstrap_servers=runner["servers"],
        group_id=runner["group"],
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        heartbeat_interval_ms=500,
        session_timeout_ms=6000,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    refused = 0
    await consumer.start()
    try:
        runner.reporter.ready()
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=runner["batch_size"])
            for messages in batches.values():
                await handle(runner, [m.value for m in messages])
            if batches:
                try:
                    await consumer.commit({tp: ms[-1].offset + 1 for tp, ms in batches.items()})
                except CommitFailedError:
                    refused += 1
    finally:
        await consumer.stop()
        runner.finish(commits_refused=refused)


if __name__ == "__main__":
    run_loop(main(Runner(sys.argv)))
