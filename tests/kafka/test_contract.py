"""KafkaSource's side of the Source contract: the shared scenarios (streamfn.testing.contracts)
on tansu, then Kafka's own, record by record; and KafkaDestination."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from streamfn import ConfigError, DestinationError, Record, Source
from streamfn.connectors.kafka import KafkaDestination, KafkaSource
from streamfn.connectors.kafka._client import split_partition_id
from streamfn.testing.contracts import SourceContract

from .conftest import Kafka


class KafkaStream:
    """One test's two-partition topic, read by sources of one consumer group."""

    partitions = 2

    def __init__(self, kafka: Kafka, topic: str) -> None:
        self.kafka, self.topic = kafka, topic
        self.group = f"g-{uuid.uuid4().hex[:12]}"

    def source(self) -> KafkaSource:
        return self.kafka.source(self.topic, self.group)

    async def append(self, partition: str, values: Sequence[bytes]) -> None:
        _, number = split_partition_id(partition)
        await self.kafka.produce(self.topic, values, partition=number)


class TestKafkaSource(SourceContract):
    timeout = 20.0

    @pytest.fixture
    async def source_harness(self, kafka: Kafka) -> KafkaStream:
        return KafkaStream(kafka, await kafka.create_topic(KafkaStream.partitions, "contract"))


def source(**options: Any) -> KafkaSource:
    return KafkaSource("orders", bootstrap_servers="127.0.0.1:9092", group_id="g", **options)


def test_kafka_source_implements_the_source_protocol_with_aws_defaults() -> None:
    kafka = source()
    assert isinstance(kafka, Source)
    assert (kafka.kind, kafka.default_batch_size, kafka.default_batching_window) == (
        "kafka",
        100,
        0.5,
    )
    assert kafka.describe() == "kafka://127.0.0.1:9092/orders"


def test_item_identifier_is_the_partition_and_offset() -> None:
    record = Record("my-topic-3", 42, b"v")
    assert source().item_identifier(record) == {"partition": "my-topic-3", "offset": 42}
    assert source().identify("my-topic-3", {"partition": "my-topic-3", "offset": 42}) == 42
    assert source().identify("my-topic-3", {"partition": "my-topic-3", "offset": "42"}) == 42


@pytest.mark.parametrize(
    "identifier",
    [
        "42",
        42,
        None,
        {"partition": "other-0", "offset": 42},
        {"partition": "my-topic-3"},
        {"partition": "my-topic-3", "offset": True},
        {"partition": "my-topic-3", "offset": "forty"},
    ],
)
def test_identify_rejects_anything_but_this_partitions_dict(identifier: Any) -> None:
    with pytest.raises(ValueError):
        source().identify("my-topic-3", identifier)


def test_event_size_bounds_a_record_with_a_key_and_headers() -> None:
    """What the broker contract does not produce: a key, headers (a null value, names to
    escape) and a large offset, each counted at least as the Lambda event writes them."""
    kafka = source()
    headers = [("trace", b"\x00\xff" * 20), ("é", None), ('q"', b"")]
    record = Record("orders-7", 2**40, b"v" * 1000, b"key", 1545084650.987, headers, 1)
    envelope = len(orjson.dumps(kafka.lambda_event("orders-7", [])))
    alone = len(orjson.dumps(kafka.lambda_event("orders-7", [record]))) - envelope
    assert alone < kafka.event_size(record) <= alone + 128


def test_partition_ids_split_at_the_last_dash() -> None:
    assert split_partition_id("my-topic-12") == ("my-topic", 12)
    with pytest.raises(ValueError):
        split_partition_id("no_number")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"group_id": "bad#group"}, "group_id='bad#group' is invalid"),
        ({"topic": []}, "topic=[] is invalid"),
        ({"security_protocol": "TLS"}, "security_protocol='TLS' is invalid"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI"}, "sasl_mechanism="),
        ({"sasl_mechanism": "PLAIN"}, "needs security_protocol SASL_PLAINTEXT or SASL_SSL"),
        ({"consumer_options": {"enable_auto_commit": True}}, "the engine commits"),
        ({"consumer_options": {"group_id": "x"}}, "it is set by group_id"),
        ({"consumer_options": {"max_pol_records": 5}}, "not an option of AIOKafkaConsumer"),
        ({"connect_timeout": 0}, "connect_timeout=0 is invalid"),
    ],
)
def test_bad_settings_are_refused_at_construction_naming_the_field(
    options: dict[str, Any], message: str
) -> None:
    settings: dict[str, Any] = {"topic": "orders", "bootstrap_servers": "b:9092", "group_id": "g"}
    with pytest.raises(ConfigError, match=re.escape(message)):
        KafkaSource(**{**settings, **options})


def test_sasl_scram_and_other_consumer_options_are_accepted() -> None:
    kafka = source(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="user",
        sasl_plain_password="secret",
        group_instance_id="worker-1",
        consumer_options={"max_partition_fetch_bytes": 2 << 20, "client_id": "me"},
    )
    assert kafka.group_instance_id == "worker-1"


def test_an_msk_cluster_arn_makes_the_event_amazon_msks() -> None:
    arn = "arn:aws:kafka:us-east-1:123456789012:cluster/demo/abc-1"
    kafka = source(cluster_arn=arn)
    record = Record("orders-0", 15, b'{"k":"v"}', b"key", 1545084650.987, (), 1)

    event = kafka.lambda_event("orders-0", [record])

    assert event == {
        "eventSource": "aws:kafka",
        "eventSourceArn": arn,
        "bootstrapServers": "127.0.0.1:9092",
        "records": {
            "orders-0": [
                {
                    "topic": "orders",
                    "partition": 0,
                    "offset": 15,
                    "timestamp": 1545084650987,
                    "timestampType": "LOG_APPEND_TIME",
                    "key": base64.b64encode(b"key").decode(),
                    "value": base64.b64encode(b'{"k":"v"}').decode(),
                    "headers": [],
                }
            ]
        },
    }
    name, info = kafka.batch_info("orders-0", [record])
    assert name == "KafkaBatchInfo"
    assert info["eventSourceArn"] == arn
    assert info["payloadSize"] == len(orjson.dumps(event))
    assert info["recordsInfo"]["orders-0"]["firstRecordTimestamp"] == "2018-12-17T22:10:50.987Z"


def test_filter_view_decodes_json_or_text_and_omits_binary() -> None:
    view = source().filter_view
    assert view(Record("orders-2", 7, b'{"a": 1}', b"k", 1.5, (), 0)) == {
        "topic": "orders",
        "partition": 2,
        "offset": 7,
        "timestamp": 1500,
        "value": {"a": 1},
        "key": "k",
    }
    assert view(Record("orders-2", 7, b"plain", None, 1.5, (), 0))["value"] == "plain"
    assert "value" not in view(Record("orders-2", 7, b"\xff\xfe", None, 1.5, (), 0))


async def test_commit_is_a_no_op_for_a_partition_not_owned() -> None:
    await source().commit("orders-0", Record("orders-0", 1, b""))


async def test_kafka_destination_starts_lazily_keeps_the_key_and_can_be_reused(
    kafka: Kafka,
) -> None:
    topic = await kafka.create_topic(prefix="destination")
    destination = KafkaDestination(topic, bootstrap_servers=kafka.address)
    assert destination.include_payload
    try:
        await destination.send({"n": 1}, key=b"original-key")
    finally:
        await destination.close()
    async with destination:  # reusable after close
        await destination.send({"n": 2})

    first, second = await kafka.read(topic, 2)
    assert (first.key, orjson.loads(first.value)) == (b"original-key", {"n": 1})
    assert (second.key, orjson.loads(second.value)) == (None, {"n": 2})


async def test_kafka_destination_without_a_broker_raises_destination_error(
    unused_address: str,
) -> None:
    destination = KafkaDestination("failures", bootstrap_servers=unused_address)
    with pytest.raises(DestinationError, match="cannot connect"):
        await destination.send({"n": 1})
