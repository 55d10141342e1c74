"""Amazon MQ mappings (SAM's ``MQ`` event, or an ``AWS::Lambda::EventSourceMapping`` on a
broker's ARN): the queue, the broker's address, and the access they name.

A template holds a broker's ARN (or an ``AWS::AmazonMQ::Broker`` resource), never its address,
so the run gives it: ``--mq-broker [BROKER=]URL``, BROKER the ARN or the broker resource's
logical id (none: every MQ mapping), as ``--kafka-bootstrap-servers`` gives an MSK cluster's
brokers. The URL's scheme says the engine: ``amqp://`` / ``amqps://`` RabbitMQ
(``RabbitMQSource``), ``stomp://`` ActiveMQ (``ActiveMQSource``); a broker resource's
``EngineType`` must agree. ``SourceAccessConfigurations`` are AWS's: ``BASIC_AUTH`` (required,
as on AWS) names the Secrets Manager secret with the user name and password, read when the run
starts (:mod:`.prepare`); ``VIRTUAL_HOST`` (RabbitMQ only) the virtual host; VPC entries say
where AWS's pollers run and are ignored.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError
from .intrinsics import located
from .plan import Plan
from .props import Props

BROKER = "AWS::AmazonMQ::Broker"
#: The engine each URL scheme reaches, and the source kind that reads it.
_SCHEMES = {"amqp": "RABBITMQ", "amqps": "RABBITMQ", "stomp": "ACTIVEMQ"}
_KINDS = {"RABBITMQ": "rabbitmq", "ACTIVEMQ": "activemq"}
_STOMP_PORT = 61613
#: SourceAccessConfigurations types by engine (VPC entries aside).
_ACCESS = {"RABBITMQ": ("BASIC_AUTH", "VIRTUAL_HOST"), "ACTIVEMQ": ("BASIC_AUTH",)}


def broker_engine(url: str, option: str = "--mq-broker") -> str:
    """RABBITMQ or ACTIVEMQ, as ``url``'s scheme says; a ConfigError naming ``option`` for a
    URL that names no host, holds credentials or a path, or has another scheme."""
    parts = urlsplit(url)
    if parts.scheme == "stomp+ssl":
        raise ConfigError(
            f"{option} {url!r}: ActiveMQ is read over plain STOMP (stomp://host:port); "
            "streamfn's ActiveMQ source has no TLS"
        )
    engine = _SCHEMES.get(parts.scheme)
    if engine is None or not parts.hostname:
        raise ConfigError(
            f"{option} {url!r}: expected amqp://HOST[:PORT], amqps://HOST[:PORT] (RabbitMQ) "
            "or stomp://HOST[:PORT] (ActiveMQ)"
        )
    if parts.username or parts.password or parts.path not in ("", "/") or parts.query:
        raise ConfigError(
            f"{option} {url!r}: the user and password come from the mapping's BASIC_AUTH "
            "secret and the virtual host from VIRTUAL_HOST, not from the URL"
        )
    return engine


def mq_source(plan: Plan, logical_id: str, props: Props, arn: str) -> tuple[str, dict[str, Any]]:
    """The source kind (``rabbitmq`` or ``activemq``) of an MQ mapping on broker ``arn`` and
    its keywords: ``queue``, the broker's address, ``broker_arn``, ``secret`` (the
    BASIC_AUTH secret) and, for RabbitMQ, ``access`` (the SourceAccessConfigurations that
    ``RabbitMQAccess.from_aws`` reads)."""
    resources = plan.template.resources
    queues = props.get("Queues")
    if not isinstance(queues, list) or len(queues) != 1 or not isinstance(queues[0], str):
        raise located(props.path("Queues"), "an Amazon MQ mapping reads exactly one queue")
    broker_id = next(
        (i for i in resources.resources if resources.type(i) == BROKER and resources.arn(i) == arn),
        None,
    )
    given = plan.template.options.mq_brokers
    url = next((given[k] for k in (arn, broker_id, "") if k is not None and k in given), None)
    if url is None:
        raise located(
            props.path("EventSourceArn"),
            f"the address of Amazon MQ broker {arn} is not known: give it with "
            "--mq-broker [BROKER=]URL (amqp://, amqps:// or stomp://)",
        )
    engine = broker_engine(url)
    if broker_id is not None:
        declared = plan.template.resolver.value(
            resources.properties(broker_id).get("EngineType"),
            f"Resources.{broker_id}.Properties.EngineType",
        )
        if str(declared).upper() != engine:
            raise located(
                props.path("EventSourceArn"),
                f"broker {broker_id} is EngineType {declared}, but --mq-broker gives {url}, "
                f"which reaches {engine}",
            )
    access = _access(plan, logical_id, props, engine)
    source: dict[str, Any] = {"queue": queues[0], "broker_arn": arn, "secret": access["BASIC_AUTH"]}
    if engine == "RABBITMQ":
        source.update(
            url=url.rstrip("/"), access=[{"Type": k, "URI": v} for k, v in access.items()]
        )
    else:
        parts = urlsplit(url)
        source.update(host=parts.hostname, port=parts.port or _STOMP_PORT)
    return _KINDS[engine], source


def _access(plan: Plan, logical_id: str, props: Props, engine: str) -> dict[str, str]:
    """SourceAccessConfigurations as Type -> URI, checked as AWS checks them for ``engine``:
    one BASIC_AUTH (a secret's ARN), at most one VIRTUAL_HOST for RabbitMQ."""
    path = props.path("SourceAccessConfigurations")
    entries = props.get("SourceAccessConfigurations") or []
    if not isinstance(entries, list):
        raise located(path, 'must be a list of {"Type", "URI"}')
    found: dict[str, str] = {}
    for entry in entries:
        kind = entry.get("Type") if isinstance(entry, dict) else None
        uri = entry.get("URI") if isinstance(entry, dict) else None
        if kind in ("VPC_SUBNET", "VPC_SECURITY_GROUP"):
            plan.ignore(logical_id, "SourceAccessConfigurations", f"{kind}: network placement")
            continue
        if kind not in _ACCESS[engine] or not isinstance(uri, str) or not uri or kind in found:
            raise located(
                path,
                f"{entry!r}: a {engine} mapping takes one {{Type, URI}} of each of "
                f"{', '.join(_ACCESS[engine])}",
            )
        found[kind] = uri
    if "BASIC_AUTH" not in found:
        raise located(
            path, "an Amazon MQ mapping needs BASIC_AUTH: the ARN of a Secrets Manager secret"
        )
    return found
