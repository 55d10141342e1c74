"""Amazon MQ events from SAM templates: the broker's address given with ``--mq-broker`` (a
template holds only its ARN), the BASIC_AUTH secret read from Secrets Manager on the moto
server, and messages from the machine's real RabbitMQ (in a virtual host of the test's own,
the mapping's VIRTUAL_HOST) and from a real ActiveMQ reaching the handler as Lambda's
``aws:rmq`` / ``aws:mq`` events. Planning, validate's listing and the one-line refusals too."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiormq
import boto3
import pytest

from streamfn.cli import build_parser
from streamfn.connectors.activemq.stomp import StompConnection
from streamfn.errors import ConfigError
from streamfn.sam import LoadOptions, build_app, command, plan_template, prepare
from streamfn.sam.report import describe
from streamfn.testing import wait_until
from streamfn.testing.activemq import ActiveMQBroker, activemq_home, java_binary
from tests.rabbitmq.conftest import URL, rabbitmqctl

from .support import DEADLINE, RECORDER, build, records, write_app

TEMPLATE = """\
    Transform: AWS::Serverless-2016-10-31
    Parameters:
      Records: {Type: String}
      Queue: {Type: String}
      Secret: {Type: String}
      VirtualHost: {Type: String}
    Resources:
      Broker:
        Type: AWS::AmazonMQ::Broker
        Properties:
          BrokerName: orders-mq
          EngineType: RABBITMQ
          EngineVersion: "3.13"
          HostInstanceType: mq.m5.large
          DeploymentMode: SINGLE_INSTANCE
          PubliclyAccessible: false
          AutoMinorVersionUpgrade: true
          Users: [{Username: admin, Password: not-used-here}]
      Consume:
        Type: AWS::Serverless::Function
        Properties:
          Runtime: python3.12
          CodeUri: src/
          Handler: consume.handle
          Environment: {Variables: {RECORDS: !Ref Records}}
          Events:
            Orders:
              Type: MQ
              Properties:
                Broker: !GetAtt Broker.Arn
                Queues: [!Ref Queue]
                BatchSize: 2
                SourceAccessConfigurations:
                  - {Type: BASIC_AUTH, URI: !Ref Secret}
                  - {Type: VIRTUAL_HOST, URI: !Ref VirtualHost}
"""
ACTIVEMQ_TEMPLATE = """\
    Resources:
      Consume:
        Type: AWS::Lambda::Function
        Properties:
          Runtime: python3.12
          Code: src
          Handler: consume.handle
          Role: arn:aws:iam::123456789012:role/consume
          Environment: {Variables: {RECORDS: %(records)s}}
      Mapping:
        Type: AWS::Lambda::EventSourceMapping
        Properties:
          FunctionName: !Ref Consume
          EventSourceArn: %(broker)s
          Queues: [%(queue)s]
          SourceAccessConfigurations: [{Type: BASIC_AUTH, URI: %(secret)s}]
"""
CODE = {
    "src/recorder.py": RECORDER,
    "src/consume.py": """\
        import base64

        from recorder import record

        def handle(event, context):
            if event["eventSource"] == "aws:rmq":
                groups = event["rmqMessagesByQueue"]
                messages = [m for key in sorted(groups) for m in groups[key]]
            else:
                groups, messages = None, event["messages"]
            record(
                source=event["eventSource"],
                arn=event["eventSourceArn"],
                queues=sorted(groups) if groups else None,
                bodies=[base64.b64decode(m["data"]).decode() for m in messages],
            )
    """,
}
ACTIVEMQ_ARN = "arn:aws:mq:us-east-1:123456789012:broker:legacy:b-0000-activemq"


def _secret(username: str, password: str) -> str:
    """A new secret on moto (where AWS_ENDPOINT_URL points) with BASIC_AUTH's JSON; its ARN."""
    client = boto3.client("secretsmanager")
    value = json.dumps({"username": username, "password": password})
    return str(client.create_secret(Name=f"mq-{uuid.uuid4().hex[:12]}", SecretString=value)["ARN"])


@pytest.fixture(scope="module")
def vhost() -> Iterator[str]:
    """A RabbitMQ virtual host of this module's own, guest allowed everything in it."""
    name = f"streamfn-sam-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield name
    finally:
        rabbitmqctl("delete_vhost", name)


@pytest.fixture(scope="module")
def activemq() -> Iterator[ActiveMQBroker]:
    try:
        activemq_home()
        java_binary()
    except FileNotFoundError as exc:
        pytest.skip(f"ActiveMQ is not installed here ({exc}); run scripts/setup")
    with ActiveMQBroker() as broker:
        yield broker


def _overrides(out: Path, queue: str, secret: str, vhost: str) -> dict[str, str]:
    return {"Records": str(out), "Queue": queue, "Secret": secret, "VirtualHost": vhost}


async def test_rabbitmq_messages_reach_the_handler_with_the_secrets_credentials(
    tmp_path: Path, aws_endpoint: str, vhost: str
) -> None:
    queue, out = f"orders-{uuid.uuid4().hex[:8]}", tmp_path / "records.jsonl"
    connection = await aiormq.connect(f"{URL}/{vhost}")
    try:
        channel = await connection.channel()
        await channel.queue_declare(queue, durable=True)
        for i in range(3):
            await channel.basic_publish(b"order %d" % i, routing_key=queue)
        path = write_app(tmp_path, TEMPLATE, CODE)
        options = LoadOptions(
            parameter_overrides=_overrides(out, queue, _secret("guest", "guest"), vhost),
            mq_brokers={"Broker": URL},
        )
        plan = plan_template(path, options)
        built = build(
            path,
            parameter_overrides=options.parameter_overrides,
            mq_brokers=options.mq_brokers,
            secrets=await prepare.read_secrets(plan),
        )
        (mapping,) = built.app.mappings
        assert mapping.config.batch_size == 2

        async with built.app.running(*built.servers):
            await wait_until(
                lambda: sum(len(r["bodies"]) for r in records(out)) == 3, timeout=DEADLINE
            )
        await channel.queue_delete(queue)
    finally:
        await connection.close()
    seen = records(out)
    assert [b for r in seen for b in r["bodies"]] == ["order 0", "order 1", "order 2"]
    broker_arn = plan.template.resources.arn("Broker")
    assert broker_arn.startswith("arn:aws:mq:us-east-1:123456789012:broker:orders-mq:b-")
    assert {(r["source"], r["arn"]) for r in seen} == {("aws:rmq", broker_arn)}
    assert {q for r in seen for q in r["queues"]} == {f"{queue}::{vhost}"}


async def test_activemq_messages_reach_the_handler_with_the_secrets_credentials(
    tmp_path: Path, aws_endpoint: str, activemq: ActiveMQBroker
) -> None:
    queue, out = f"orders-{uuid.uuid4().hex[:8]}", tmp_path / "records.jsonl"
    secret = _secret(*activemq.credentials())
    template = ACTIVEMQ_TEMPLATE % {
        "records": out, "broker": ACTIVEMQ_ARN, "queue": queue, "secret": secret
    }  # fmt: skip
    path = write_app(tmp_path, template, CODE)
    broker = {ACTIVEMQ_ARN: f"stomp://{activemq.host}:{activemq.port}"}
    plan = plan_template(path, LoadOptions(mq_brokers=broker))
    built = build(path, mq_brokers=broker, secrets=await prepare.read_secrets(plan))
    async with await StompConnection.open(
        activemq.host, activemq.port, *activemq.credentials()
    ) as producer:
        for i in range(2):
            await producer.send(f"/queue/{queue}", b"order %d" % i, {})
    async with built.app.running(*built.servers):
        await wait_until(lambda: sum(len(r["bodies"]) for r in records(out)) == 2, timeout=DEADLINE)
    seen = records(out)
    assert [b for r in seen for b in r["bodies"]] == ["order 0", "order 1"]
    assert {(r["source"], r["arn"]) for r in seen} == {("aws:mq", ACTIVEMQ_ARN)}


def test_validate_lists_the_mq_mapping_and_ignores_the_broker(tmp_path: Path) -> None:
    path = write_app(tmp_path, TEMPLATE, CODE)
    secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:mq-creds"
    options = LoadOptions(
        parameter_overrides=_overrides(tmp_path / "r", "orders", secret, "shop"),
        mq_brokers={"": "amqps://b-1.mq.example:5671"},
    )
    listing = describe(plan_template(path, options))
    assert (
        "  ConsumeOrders: rabbitmq orders at amqps://b-1.mq.example:5671 (virtual host shop, "
        f"BASIC_AUTH secret {secret}) -> Consume  BatchSize=2\n"
    ) in listing
    assert "Broker: AWS::AmazonMQ::Broker: the broker runs elsewhere" in listing
    assert "Unsupported" not in listing


def test_activemq_planning_reads_host_port_and_secret(tmp_path: Path) -> None:
    secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:amq"
    template = ACTIVEMQ_TEMPLATE % {
        "records": "r", "broker": ACTIVEMQ_ARN, "queue": "orders", "secret": secret
    }  # fmt: skip
    path = write_app(tmp_path, template, CODE)
    plan = plan_template(path, LoadOptions(mq_brokers={ACTIVEMQ_ARN: "stomp://mq.internal"}))
    (mapping,) = plan.mappings
    assert (mapping.kind, mapping.source) == (
        "activemq",
        {"queue": "orders", "broker_arn": ACTIVEMQ_ARN, "secret": secret,
         "host": "mq.internal", "port": 61613},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("brokers", "message"),
    [
        ({}, "Resources.ConsumeOrders.Properties.EventSourceArn: the address of Amazon MQ "
             "broker arn:aws:mq:us-east-1:123456789012:broker:orders-mq:b-"),
        ({"Other": "amqp://mq"}, "the address of Amazon MQ broker"),
        ({"Broker": "stomp://mq"}, "broker Broker is EngineType RABBITMQ, but --mq-broker "
                                   "gives stomp://mq, which reaches ACTIVEMQ"),
    ],
)  # fmt: skip
def test_an_unknown_or_mismatched_broker_is_one_line(
    tmp_path: Path, brokers: dict[str, str], message: str
) -> None:
    path = write_app(tmp_path, TEMPLATE, CODE)
    overrides = _overrides(tmp_path / "r", "orders", "arn:secret", "/")
    with pytest.raises(ConfigError) as error:
        plan_template(path, LoadOptions(parameter_overrides=overrides, mq_brokers=brokers))
    assert message in str(error.value) and "\n" not in str(error.value)
    assert str(error.value).startswith(f"{path}: Resources.ConsumeOrders.Properties.")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("stomp+ssl://mq:61614", "streamfn's ActiveMQ source has no TLS"),
        ("http://mq", "expected amqp://HOST[:PORT]"),
        ("amqp://guest:guest@mq/shop", "come from the mapping's BASIC_AUTH secret"),
    ],
)
def test_mq_broker_option_refuses_what_no_source_reads(url: str, message: str) -> None:
    args = build_parser().parse_args(["validate", "t.yaml", "--mq-broker", f"Broker={url}"])
    with pytest.raises(
        ConfigError, match=f"^--mq-broker {re.escape(repr(url))}: .*{re.escape(message)}"
    ):
        command.options(args)


async def test_an_unreadable_secret_is_one_line_naming_the_mapping(
    tmp_path: Path, aws_endpoint: str
) -> None:
    path = write_app(tmp_path, TEMPLATE, CODE)
    missing = f"arn:aws:secretsmanager:us-east-1:123456789012:secret:none-{uuid.uuid4().hex}"
    options = LoadOptions(
        parameter_overrides=_overrides(tmp_path / "r", "orders", missing, "/"),
        mq_brokers={"": URL},
    )
    plan = plan_template(path, options)
    with pytest.raises(ConfigError) as error:
        await prepare.read_secrets(plan)
    assert str(error.value).startswith(
        f"{path}: Resources.ConsumeOrders.Properties.SourceAccessConfigurations: secret "
        f"{missing}: cannot read it from Secrets Manager at {aws_endpoint}: "
        "ResourceNotFoundException: "
    )
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("secrets", "message"),
    [
        ({}, "BASIC_AUTH secret arn:s was not read"),
        ({"arn:s": {"username": "guest"}}, "secret arn:s (BASIC_AUTH) has no 'password'"),
    ],
)
def test_a_secret_not_read_or_incomplete_is_one_line_naming_the_mapping(
    tmp_path: Path, secrets: dict[str, dict[str, str]], message: str
) -> None:
    path = write_app(tmp_path, TEMPLATE, CODE)
    overrides = _overrides(tmp_path / "r", "orders", "arn:s", "/")
    plan = plan_template(path, LoadOptions(parameter_overrides=overrides, mq_brokers={"": URL}))
    with pytest.raises(ConfigError) as error:
        build_app(plan, state_dir=tmp_path / "state", secrets=secrets)
    assert str(error.value).startswith(f"{path}: Resources.ConsumeOrders.Properties: ")
    assert message in str(error.value) and "\n" not in str(error.value)
