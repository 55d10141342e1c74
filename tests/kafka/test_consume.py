"""Consuming a real broker: order, parallelization by key, the Lambda event, failure handling."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from typing import Any

import orjson
import pytest

from streamfn import App, Batch, Record
from streamfn.connectors.kafka import KafkaDestination
from streamfn.testing import MemoryDestination

from .conftest import FAST_RETRY, Kafka, Seen


async def test_records_of_each_partition_arrive_in_offset_order(kafka: Kafka) -> None:
    topic = await kafka.create_topic(partitions=3)
    await kafka.produce(topic, [b"%d" % i for i in range(300)], key=lambda i: b"k%d" % (i % 7))
    source = kafka.source(topic)
    seen = Seen()
    app = App("ordering")
    app.consume(source, batch_size=25)(seen.handler)

    async with app.running():
        await seen.wait_for(lambda: len(seen.distinct()) == 300)

    partitions = {p for p, _, _, _ in seen.records}
    assert partitions == {f"{topic}-{n}" for n in range(3)}
    for p in partitions:
        assert seen.offsets(p) == list(range(len(seen.offsets(p))))
    committed = await kafka.committed(source.group_id, topic, 3)
    assert sum(c or 0 for c in committed) == 300


async def test_parallelization_factor_keeps_the_order_of_each_key(kafka: Kafka) -> None:
    topic = await kafka.create_topic()
    keys = [b"k%d" % (i % 8) for i in range(400)]
    await kafka.produce(topic, [b"%d" % i for i in range(400)], key=keys.__getitem__)
    seen = Seen()
    running = 0
    most = 0
    app = App("parallel")

    @app.consume(kafka.source(topic), batch_size=10, parallelization_factor=4)
    async def handler(batch: Batch, context: Any) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.005)  # some work, so batches of different keys overlap
        seen.add(batch)
        running -= 1

    async with app.running():
        await seen.wait_for(lambda: len(seen.distinct()) == 400)

    by_key: dict[bytes | None, list[int]] = {}
    for _, offset, key, _ in seen.records:
        by_key.setdefault(key, []).append(offset)
    assert len(by_key) == 8
    for offsets in by_key.values():
        assert offsets == sorted(offsets)
    assert most > 1


async def test_lambda_event_format_is_the_self_managed_kafka_event(kafka: Kafka) -> None:
    topic = await kafka.create_topic()
    timestamp = 1_700_000_000_123
    await kafka.produce(
        topic,
        [b'{"a": 1}', b"\xff"],
        key=lambda i: b"k1" if i == 0 else None,
        timestamp_ms=timestamp,
        headers=[("h1", b"v1")],
    )
    events: list[dict[str, Any]] = []
    done = asyncio.Event()
    app = App("lambda-format")

    @app.consume(kafka.source(topic), event_format="lambda", batch_size=10)
    async def handler(event: dict[str, Any], context: Any) -> None:
        events.append(event)
        if sum(len(rs) for e in events for rs in e["records"].values()) == 2:
            done.set()

    async with app.running(), asyncio.timeout(30):
        await done.wait()

    records = [r for e in events for r in e["records"][f"{topic}-0"]]
    assert {e["eventSource"] for e in events} == {"SelfManagedKafka"}
    assert {e["bootstrapServers"] for e in events} == {kafka.address}
    assert all(set(e) == {"eventSource", "bootstrapServers", "records"} for e in events)
    assert records == [
        {
            "topic": topic,
            "partition": 0,
            "offset": 0,
            "timestamp": timestamp,
            "timestampType": "CREATE_TIME",
            "key": base64.b64encode(b"k1").decode(),
            "value": base64.b64encode(b'{"a": 1}').decode(),
            "headers": [{"h1": [118, 49]}],
        },
        {
            "topic": topic,
            "partition": 0,
            "offset": 1,
            "timestamp": timestamp,
            "timestampType": "CREATE_TIME",
            "value": base64.b64encode(b"\xff").decode(),
            "headers": [{"h1": [118, 49]}],
        },
    ]


async def test_partial_batch_response_rewinds_to_the_lowest_reported_offset(
    kafka: Kafka,
) -> None:
    topic = await kafka.create_topic()
    await kafka.produce(topic, [b"%d" % i for i in range(20)])
    source = kafka.source(topic)
    seen = Seen()
    failed = False
    app = App("partial")

    @app.consume(
        source,
        batch_size=20,
        function_response_types=["ReportBatchItemFailures"],
        **FAST_RETRY,
    )
    async def handler(batch: Batch, context: Any) -> dict[str, Any]:
        nonlocal failed
        seen.add(batch)
        reported = [
            {"itemIdentifier": {"partition": r.partition, "offset": r.offset}}
            for r in batch
            if r.offset in (7, 9) and not failed
        ]
        failed = failed or bool(reported)
        return {"batchItemFailures": reported}

    async with app.running():
        await seen.wait_for(lambda: failed and len(seen.distinct()) == 20)
        await seen.wait_for(lambda: Counter(o for _, o, _, _ in seen.records)[7] == 2)

    counts = Counter(offset for _, offset, _, _ in seen.records)
    assert all(counts[o] == 1 for o in range(7))
    assert counts[7] == 2 and counts[9] == 2
    assert await kafka.committed(source.group_id, topic) == [20]


async def test_an_item_identifier_for_another_partition_retries_the_whole_batch(
    kafka: Kafka,
) -> None:
    topic = await kafka.create_topic()
    await kafka.produce(topic, [b"%d" % i for i in range(5)])
    seen = Seen()
    first: list[int] = []
    app = App("partial-invalid")

    @app.consume(
        kafka.source(topic),
        batch_size=5,
        function_response_types=["ReportBatchItemFailures"],
        **FAST_RETRY,
    )
    async def handler(batch: Batch, context: Any) -> dict[str, Any]:
        seen.add(batch)
        if first:
            return {"batchItemFailures": []}
        first.extend(r.offset for r in batch)
        wrong = {"partition": "elsewhere-0", "offset": batch[-1].offset}
        return {"batchItemFailures": [{"itemIdentifier": wrong}]}

    async with app.running():
        await seen.wait_for(lambda: seen.batches >= 2 and len(seen.distinct()) == 5)

    counts = Counter(offset for _, offset, _, _ in seen.records)
    assert first
    assert all(counts[offset] == 2 for offset in first)


async def test_a_valid_and_an_invalid_item_identifier_retry_the_whole_batch(
    kafka: Kafka,
) -> None:
    """AWS: "Any invalid topic-partition_number or offset returned that was not present in the
    invoked event will be treated as failure and entire batch will be retried", so the valid
    entry must not let the records before it be committed."""
    topic = await kafka.create_topic()
    await kafka.produce(topic, [b"%d" % i for i in range(5)])
    seen = Seen()
    first: list[int] = []
    app = App("partial-mixed")

    @app.consume(
        kafka.source(topic),
        batch_size=5,
        event_format="lambda",
        function_response_types=["ReportBatchItemFailures"],
        **FAST_RETRY,
    )
    async def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        [(partition, records)] = event["records"].items()
        seen.add(Record(partition, r["offset"], b"") for r in records)
        if first:
            return {"batchItemFailures": []}
        first.extend(r["offset"] for r in records)
        last = first[-1]
        return {
            "batchItemFailures": [
                {"itemIdentifier": {"partition": partition, "offset": last}},
                {"itemIdentifier": {"partition": partition, "offset": last + 100}},
            ]
        }

    async with app.running():
        await seen.wait_for(lambda: seen.batches >= 2 and len(seen.distinct()) == 5)

    counts = Counter(offset for _, offset, _, _ in seen.records)
    assert first == [0, 1, 2, 3, 4]
    assert all(counts[offset] == 2 for offset in first)


async def test_poison_record_is_isolated_by_bisect_and_sent_to_a_kafka_failure_topic(
    kafka: Kafka,
) -> None:
    topic = await kafka.create_topic()
    failures_topic = await kafka.create_topic(prefix="failures")
    values = [b"poison" if i == 9 else b"%d" % i for i in range(16)]
    await kafka.produce(topic, values, key=lambda i: b"key-%d" % i)
    source = kafka.source(topic)
    destination = KafkaDestination(failures_topic, bootstrap_servers=kafka.address)
    seen = Seen()
    alone = 0  # invocations with the poison record on its own
    app = App("poison")

    @app.consume(
        source,
        batch_size=16,
        bisect_batch_on_function_error=True,
        on_failure=destination,
        **FAST_RETRY,
    )
    async def handler(batch: Batch, context: Any) -> None:
        nonlocal alone
        if any(r.value == b"poison" for r in batch):
            alone += len(batch) == 1
            raise ValueError("poison")
        seen.add(batch)

    try:
        async with app.running():
            await seen.wait_for(lambda: len(seen.distinct()) == 15)
            [message] = await kafka.read(failures_topic, 1)
    finally:
        await destination.close()

    assert 9 not in {offset for _, offset, _, _ in seen.records}
    assert alone == 11  # infinite retries with a destination: capped at 10 retries, as on AWS
    assert message.key == b"key-9"
    failure = orjson.loads(message.value)
    assert failure["requestContext"]["condition"] == "RetryAttemptsExhausted"
    info = failure["KafkaBatchInfo"]
    assert info["batchSize"] == 1
    assert info["bootstrapServers"] == kafka.address
    assert info["payloadSize"] > 0
    assert info["recordInfo"]["offset"] == "9"
    assert info["recordInfo"]["timestamp"].endswith("Z")
    payload = failure["payload"]
    [record] = payload["records"][f"{topic}-0"]
    assert base64.b64decode(record["value"]) == b"poison"
    assert await kafka.committed(source.group_id, topic) == [16]


MSK_ARN = "arn:aws:kafka:us-east-1:123456789012:cluster/demo/751d2973-a626-431c-9d4e-d7975eb44dd7-2"


@pytest.mark.parametrize("cluster_arn", [None, MSK_ARN], ids=["self-managed", "msk"])
async def test_on_failure_record_names_the_event_source_as_the_event_does(
    kafka: Kafka, cluster_arn: str | None
) -> None:
    """KafkaBatchInfo.eventSourceArn is the event's: the MSK cluster's ARN, or, for
    self-managed Kafka, whose events carry none, absent (never null)."""
    topic = await kafka.create_topic()
    await kafka.produce(topic, [b"poison"])
    destination = MemoryDestination()
    events: list[dict[str, Any]] = []
    app = App("failure-arn")

    @app.consume(
        kafka.source(topic, cluster_arn=cluster_arn),
        event_format="lambda",
        maximum_retry_attempts=0,
        on_failure=destination,
        **FAST_RETRY,
    )
    async def handler(event: dict[str, Any], context: Any) -> None:
        events.append(event)
        raise ValueError("poison")

    async with app.running():
        [record] = await destination.wait_for(1, timeout=30)

    [event] = events
    info = record["KafkaBatchInfo"]
    assert ("eventSourceArn" in info) == ("eventSourceArn" in event) == (cluster_arn is not None)
    assert info.get("eventSourceArn") == event.get("eventSourceArn") == cluster_arn
