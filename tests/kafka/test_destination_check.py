"""KafkaDestination's start-up check on tansu: the topic must be in the cluster's metadata, so a
misspelt on-failure topic stops the app before anything runs (and is not created by it)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streamfn import App, Batch, ConfigError
from streamfn.connectors.kafka import KafkaDestination
from streamfn.destinations import CheckedDestination

from .conftest import Kafka


async def topics(kafka: Kafka) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.address)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def test_check_passes_for_an_existing_topic(kafka: Kafka) -> None:
    topic = await kafka.create_topic(prefix="failures")
    destination = KafkaDestination(topic, bootstrap_servers=kafka.address)
    assert isinstance(destination, CheckedDestination)
    await destination.check()


async def test_check_refuses_a_missing_topic_and_does_not_create_it(kafka: Kafka) -> None:
    missing = f"missing-{uuid.uuid4().hex[:12]}"
    with pytest.raises(ConfigError) as refused:
        await KafkaDestination(missing, bootstrap_servers=kafka.address).check()
    assert str(refused.value) == (
        f"Kafka topic {missing!r} does not exist at {kafka.address}: create it before starting"
    )
    assert missing not in await topics(kafka)


async def test_a_mapping_whose_on_failure_topic_is_missing_does_not_start(kafka: Kafka) -> None:
    topic = await kafka.create_topic()
    missing = f"missing-{uuid.uuid4().hex[:12]}"
    source = kafka.source(topic)
    app = App()

    @app.consume(source, on_failure=KafkaDestination(missing, bootstrap_servers=kafka.address))
    async def orders(batch: Batch, context: Any) -> None: ...

    with pytest.raises(ConfigError) as refused:
        async with app.running():
            pytest.fail("the app started")
    assert str(refused.value).startswith(
        f"on_failure of mapping '{source.describe()} -> orders': Kafka topic {missing!r} "
        "does not exist"
    )
