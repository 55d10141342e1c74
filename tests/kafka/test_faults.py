"""Faults around a real broker: a worker killed with SIGKILL, a broker that is down at
start-up, and a broker restarted under a running worker."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Collection
from pathlib import Path

import pytest

from streamfn import App, MappingConfig, SourceError
from streamfn.connectors.kafka import KafkaSource
from streamfn.testing.servers import TansuBroker

from .conftest import FAST_GROUP, Kafka, Seen, eventually

WORKER = Path(__file__).parent / "apps" / "worker.py"


def start_worker(
    kafka: Kafka, topic: str, group: str, output: Path, **settings: str
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **settings,
        "KAFKA_BOOTSTRAP": kafka.address,
        "KAFKA_TOPIC": topic,
        "KAFKA_GROUP": group,
        "KAFKA_OUTPUT": str(output),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "streamfn.cli", "run", f"{WORKER}:app", "--no-http"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def processed(output: Path) -> list[tuple[str, int]]:
    if not output.exists():
        return []
    lines = output.read_text().splitlines()
    return [(p, int(o)) for p, o in (line.split() for line in lines if line.count(" ") == 1)]


@pytest.mark.slow
async def test_a_worker_killed_with_sigkill_loses_nothing_after_a_restart(
    kafka: Kafka, tmp_path: Path
) -> None:
    topic = await kafka.create_topic(partitions=2)
    group = "g-kill-" + topic
    await kafka.produce(topic, [b"%d" % i for i in range(600)], key=lambda i: b"k%d" % i)
    output = tmp_path / "processed"

    first = start_worker(kafka, topic, group, output)
    try:
        await eventually(lambda: len(processed(output)) >= 150)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert len(set(processed(output))) < 600, "the kill came too late to test anything"

    second = start_worker(kafka, topic, group, output)
    try:
        await eventually(lambda: len(set(processed(output))) == 600, timeout=60)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0

    # At-least-once: records after the last commit of the killed worker come twice, none is lost.
    assert len(processed(output)) >= 600
    assert {p for p, _ in processed(output)} == {f"{topic}-0", f"{topic}-1"}
    assert sum(c or 0 for c in await kafka.committed(group, topic, 2)) == 600


@pytest.mark.slow
async def test_duplicates_after_sigkill_stay_within_the_batches_in_flight_and_the_bound(
    kafka: Kafka, tmp_path: Path
) -> None:
    """A worker draining a backlog as fast as it can is killed: what the restarted worker runs
    again is at most, per partition, the batch in flight and ``max_uncommitted_records``
    (one batch by default), whatever the commits' latency."""
    partitions, batch = 4, 100
    total = 8_000
    topic = await kafka.create_topic(partitions=partitions)
    group = "g-dup-" + topic
    await kafka.produce(topic, [b"%d" % i for i in range(total)], key=lambda i: b"k%d" % i)
    output = tmp_path / "processed"
    settings = {"KAFKA_BATCH_SIZE": str(batch), "KAFKA_WORK_SECONDS": "0"}

    first = start_worker(kafka, topic, group, output, **settings)
    try:
        await eventually(lambda: len(processed(output)) >= total // 4, timeout=60)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert len(set(processed(output))) < total, "the kill came too late to test anything"

    second = start_worker(kafka, topic, group, output, **settings)
    try:
        await eventually(lambda: len(set(processed(output))) == total, timeout=90)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0

    duplicates = len(processed(output)) - total
    assert 0 <= duplicates <= partitions * (1 + 1) * batch


class _NoAssignments:
    async def assigned(self, partitions: Collection[str]) -> None:
        raise AssertionError("no broker, no assignment")

    async def revoked(self, partitions: Collection[str]) -> None:
        raise AssertionError("no broker, no assignment")


async def test_a_broker_down_at_start_up_is_a_clear_source_error_after_connect_timeout(
    unused_address: str, caplog: pytest.LogCaptureFixture
) -> None:
    source = KafkaSource(
        "orders", bootstrap_servers=unused_address, group_id="g", connect_timeout=2.0
    )
    started = time.monotonic()

    with (
        caplog.at_level(logging.WARNING, "streamfn.kafka"),
        pytest.raises(SourceError, match=f"cannot connect to Kafka at {unused_address} within 2 s"),
    ):
        await source.run(MappingConfig(), _NoAssignments())

    assert 1.9 < time.monotonic() - started < 6
    retries = [r for r in caplog.records if r.getMessage() == "cannot connect to Kafka; retrying"]
    assert 2 <= len(retries) <= 6  # backing off, not spinning
    assert all(unused_address in r.source for r in retries)


async def test_a_mapping_whose_broker_never_comes_reconnects_with_a_backoff(
    unused_address: str,
) -> None:
    app = App("no-broker")
    source = KafkaSource(
        "orders", bootstrap_servers=unused_address, group_id="g", connect_timeout=0.3
    )
    app.consume(source)(Seen().handler)

    async with app.running():  # the app goes on; the mapping retries its connection
        mapping = app.mappings[0]
        await eventually(lambda: mapping.stats.unreachable is not None, timeout=30)
        assert mapping.state == "Enabled" and mapping.error is None
        assert f"cannot connect to Kafka at {unused_address}" in mapping.stats.unreachable


@pytest.mark.slow
async def test_a_worker_waits_for_a_broker_that_starts_late(
    unused_address: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = int(unused_address.rsplit(":", 1)[1])
    topic = "late-broker"
    seen = Seen()
    app = App("late")
    # The topic appears after the consumer subscribed: refresh metadata often to notice it.
    options = {**FAST_GROUP, "metadata_max_age_ms": 500}
    source = KafkaSource(
        topic, bootstrap_servers=unused_address, group_id="g-late", consumer_options=options
    )
    app.consume(source, batch_size=10)(seen.handler)

    broker = TansuBroker(port=port)
    try:
        with caplog.at_level(logging.WARNING, "streamfn.kafka"):
            async with app.running():
                await eventually(lambda: any("retrying" in r.getMessage() for r in caplog.records))
                broker.start()
                await Kafka(unused_address).produce(
                    topic, [b"%d" % i for i in range(5)], partition=0
                )
                await seen.wait_for(lambda: len(seen.distinct()) == 5)
    finally:
        broker.stop()


@pytest.mark.slow
async def test_a_worker_resumes_after_the_broker_restarts_with_durable_storage(
    durable_broker: TansuBroker,
) -> None:
    kafka = Kafka(durable_broker.address)
    topic = await kafka.create_topic()
    await kafka.produce(topic, [b"%d" % i for i in range(50)])
    source = kafka.source(topic)
    seen = Seen()
    app = App("restart")
    app.consume(source, batch_size=10)(seen.handler)

    async with app.running():
        await seen.wait_for(lambda: len(seen.distinct()) == 50)
        durable_broker.stop()
        durable_broker.start()
        await kafka.produce(topic, [b"%d" % i for i in range(50, 100)])
        await seen.wait_for(lambda: len(seen.distinct()) == 100, timeout=90)

    first_seen = list(dict.fromkeys(seen.offsets(f"{topic}-0")))
    assert first_seen == list(range(100))
