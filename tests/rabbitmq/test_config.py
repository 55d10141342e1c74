"""RabbitMQSource's settings, checked at construction (or at run for the mapping's own),
AWS's SourceAccessConfigurations for MQ, and the delivery-tag ledger behind batch acks."""

from __future__ import annotations

import aiormq
import pytest

from streamfn import App, ConfigError
from streamfn.connectors.rabbitmq import RabbitMQAccess, RabbitMQSource, Secret
from streamfn.connectors.rabbitmq.acks import TagLedger

SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:MQaccess-abc"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "amqp://user:pw@h:5672"}, "access=RabbitMQAccess"),
        ({"url": "amqp://h:5672/vhost"}, "access=RabbitMQAccess"),
        ({"url": "http://h"}, "url='http://h' is invalid"),
        ({"consumers": 0}, "consumers=0 is invalid"),
        ({"prefetch": 70_000}, "prefetch=70000 is invalid: must be an integer 1-65535"),
        ({"connect_timeout": 0}, "connect_timeout=0 is invalid"),
    ],
)
def test_bad_settings_are_refused_by_name(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RabbitMQSource("orders", **kwargs)  # type: ignore[arg-type]


def test_credentials_stay_out_of_descriptions() -> None:
    access = RabbitMQAccess("svc", "s3cret", virtual_host="shop")
    source = RabbitMQSource("orders", "amqps://mq.example:5671", access=access)
    assert source.describe() == "rabbitmq://mq.example:5671/orders::shop"
    assert "s3cret" not in repr(access)
    assert source.tls and source.port == 5671
    assert RabbitMQSource("q", "amqp://h").port == 5672


async def test_a_partial_batch_response_is_refused_as_lambda_refuses_it_for_mq() -> None:
    app = App()
    source = RabbitMQSource("orders")
    app.consume(source, function_response_types=["ReportBatchItemFailures"], name="f")(
        lambda batch, context: None
    )
    with pytest.raises(ConfigError, match="no partial batch response"):
        await source.run(app.mappings[0].config, app.mappings[0])


def test_source_access_configurations_become_credentials_and_virtual_host() -> None:
    access = RabbitMQAccess.from_aws(
        [
            {"Type": "BASIC_AUTH", "URI": SECRET},
            {"Type": "VIRTUAL_HOST", "URI": "shop"},
            {"Type": "VPC_SUBNET", "URI": "subnet:subnet-1"},
        ],
        {SECRET: {"username": "svc", "password": "pw"}},
    )
    assert (access.username, access.password.reveal(), access.virtual_host) == (
        "svc",
        "pw",
        "shop",
    )
    assert (
        RabbitMQAccess.from_aws(
            [{"Type": "BASIC_AUTH", "URI": SECRET}], {SECRET: {"username": "u", "password": "p"}}
        ).virtual_host
        == "/"
    )
    with pytest.raises(ConfigError, match="BASIC_AUTH is required"):
        RabbitMQAccess.from_aws([{"Type": "VIRTUAL_HOST", "URI": "shop"}], {})
    with pytest.raises(ConfigError, match="no secret given"):
        RabbitMQAccess.from_aws([{"Type": "BASIC_AUTH", "URI": SECRET}], {})
    with pytest.raises(ConfigError, match="has no 'password'"):
        RabbitMQAccess.from_aws(
            [{"Type": "BASIC_AUTH", "URI": SECRET}], {SECRET: {"username": "u"}}
        )
    with pytest.raises(ConfigError, match="SourceAccessConfigurations entry"):
        RabbitMQAccess.from_aws([{"Type": "SASL_SCRAM_512_AUTH", "URI": SECRET}], {})


def test_check_aws_compares_the_virtual_host() -> None:
    source = RabbitMQSource("orders", access=RabbitMQAccess(virtual_host="shop"))
    auth = {"Type": "BASIC_AUTH", "URI": SECRET}
    source.check_aws([auth, {"Type": "VIRTUAL_HOST", "URI": "shop"}])
    with pytest.raises(ConfigError, match="VIRTUAL_HOST '/'"):
        source.check_aws([auth])
    with pytest.raises(ConfigError, match="BASIC_AUTH is required"):
        source.check_aws([{"Type": "VIRTUAL_HOST", "URI": "shop"}])


def test_secrets_come_from_the_environment_or_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("RMQ_PW", "from-env")
    assert RabbitMQAccess("u", Secret.env("RMQ_PW")).password.reveal() == "from-env"
    with pytest.raises(ConfigError, match="not set"):
        Secret.env("RMQ_NO_SUCH_VARIABLE")


def test_the_ledger_acks_a_batch_of_the_oldest_tags_in_one_frame() -> None:
    ledger = TagLedger()
    assert ledger.settle([1, 2, 3]) == [(3, True)]
    assert ledger.settle([4]) == [(4, False)]
    # a later batch settled first (filtered out) goes tag by tag; multiple never reaches 5
    assert ledger.settle([7, 8]) == [(7, False), (8, False)]
    assert ledger.floor == 4
    assert ledger.settle([5, 6]) == [(6, True)]
    assert ledger.floor == 8 and not ledger.above
    assert ledger.settle([]) == []


@pytest.mark.parametrize("vhost", ["/", "shop", "a/b c", "x-y_z.1"])
async def test_virtual_host_and_password_reach_the_client_as_given(vhost: str) -> None:
    access = RabbitMQAccess("u@x", "p:%/@w", virtual_host=vhost)
    url = RabbitMQSource("q", access=access)._url()
    connection = aiormq.Connection(url)  # parses the URL as the source's connect does
    assert (connection.vhost, url.user, url.password) == (vhost, "u@x", "p:%/@w")
