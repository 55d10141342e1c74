"""An event source mapping copied from AWS (``App.consume(source, aws={...})``): the
CreateEventSourceMapping fields that are not the mapping's settings but name what
``App.consume`` is given directly. None is dropped: each is checked against what it names or
turned into it.

- ``FunctionName`` must name the function the mapping feeds (its version included);
- ``EventSourceArn`` must be an ARN of the service the source reads (its resource is not
  compared: a source may be given a name and learn its ARN only once connected);
- ``DestinationConfig.OnFailure.Destination`` becomes the mapping's on_failure destination
  where Lambda accepts that kind of destination for the source and streamfn has one: an SQS
  queue ARN (:class:`~streamfn.connectors.sqs.SQSDestination`) or, for Kafka,
  ``kafka://<topic>`` on the source's own cluster. An SNS topic or S3 bucket is refused, as
  is anything Lambda refuses (a Lambda function, an on-success destination, any destination
  for an SQS source).

Example::

    esm = {
        "FunctionName": "orders",
        "EventSourceArn": "arn:aws:kinesis:us-east-1:123456789012:stream/orders",
        "BatchSize": 500,
        "DestinationConfig": {"OnFailure": {"Destination": "arn:aws:sqs:us-east-1:1234:dlq"}},
    }

    @app.consume(KinesisSource("orders"), aws=esm)
    def orders(batch, context): ...
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config import AWS_CONSUME_FIELDS, FunctionConfig, MappingConfig
from .destinations import Destination
from .errors import ConfigError
from .source import QueueSource, Source
from .versions import LATEST, FunctionName

#: The service in the EventSourceArn of a source of each kind.
_SOURCE_SERVICES = {
    "kinesis": "kinesis",
    "dynamodb": "dynamodb",
    "sqs": "sqs",
    "kafka": "kafka",
    "rabbitmq": "mq",  # EventSourceArn is the Amazon MQ broker's ARN
    "activemq": "mq",
}
#: What Lambda accepts as an event source mapping's on-failure destination, by source kind. An
#: SQS source takes none: its queue's redrive policy moves failing messages on; nor does an
#: Amazon MQ source: the broker's dead-letter handling does (README, "RabbitMQ").
_ON_FAILURE_SERVICES: dict[str, tuple[str, ...]] = {
    "kinesis": ("sqs", "sns", "s3"),
    "dynamodb": ("sqs", "sns", "s3"),
    "kafka": ("sqs", "sns", "s3", "kafka"),
    "sqs": (),
    "rabbitmq": (),
    "activemq": (),
}
#: Where failing messages go instead, for the sources that take no on-failure destination.
_DEAD_LETTERING = {
    "sqs": "the queue's redrive policy (maxReceiveCount) moves failing messages to its "
    "dead-letter queue",
    "rabbitmq": "the queue's dead-letter exchange (x-dead-letter-exchange, with a quorum "
    "queue's x-delivery-limit) takes failing messages",
    "activemq": "the broker's redelivery policy moves failing messages to its dead-letter "
    "queue (ActiveMQ.DLQ)",
}
_ARN = re.compile(r"arn:aws[a-zA-Z-]*:([a-z0-9-]+):.*", re.DOTALL)
_KAFKA_TOPIC = "kafka://"
_DESTINATION = "DestinationConfig.OnFailure.Destination"


@dataclass(frozen=True, slots=True)
class AwsMapping:
    """A CreateEventSourceMapping dict read for one source: the mapping's settings
    (``config``), the on_failure destination it names, and the FunctionName it names, checked
    by :meth:`check_function` once the function is registered."""

    config: MappingConfig
    on_failure: Destination | None
    function_name: str | None

    @classmethod
    def parse(cls, aws: Mapping[str, Any], source: Source | QueueSource) -> AwsMapping:
        if "ScalingConfig" in aws:
            _check_scaling(aws["ScalingConfig"])
        config = MappingConfig.from_aws(
            {k: v for k, v in aws.items() if k not in AWS_CONSUME_FIELDS}
        )
        if "EventSourceArn" in aws:
            _check_source(aws["EventSourceArn"], source)
        if "SourceAccessConfigurations" in aws:
            _check_access(aws["SourceAccessConfigurations"], source)
        on_failure = None
        if "DestinationConfig" in aws:
            on_failure = _on_failure(aws["DestinationConfig"], source)
        function_name = aws.get("FunctionName")
        if function_name is not None and not isinstance(function_name, str):
            raise ConfigError.out_of_range("FunctionName", function_name, "a function name or ARN")
        return cls(config, on_failure, function_name)

    def check_function(self, function: FunctionConfig) -> None:
        """Refuse a FunctionName that names another function, version, region or account than
        the one this mapping feeds."""
        if self.function_name is None:
            return
        named = FunctionName.parse(self.function_name)
        if named is None or (
            named.name,
            named.qualifier or LATEST,
            named.region or function.region,
            named.account or function.account_id,
        ) != (function.name, function.version, function.region, function.account_id):
            raise ConfigError(
                f"FunctionName={self.function_name!r} does not name the function this mapping "
                f"feeds, {function.arn}:{function.version}"
            )


def _check_scaling(scaling: object) -> None:
    """``ScalingConfig`` holds ``MaximumConcurrency`` only; MappingConfig.from_aws reads that
    one key, so anything else (a typo, a field AWS adds later) is refused here, not lost."""
    if not isinstance(scaling, Mapping) or not set(scaling) <= {"MaximumConcurrency"}:
        raise ConfigError.out_of_range(
            "ScalingConfig", scaling, '{"MaximumConcurrency": <2-1000>} or {}'
        )


def _check_source(arn: object, source: Source | QueueSource) -> None:
    service = _SOURCE_SERVICES.get(source.kind)
    if service is None:
        raise ConfigError(
            f"EventSourceArn={arn!r} cannot be checked against a source of kind "
            f"{source.kind!r}: leave it out, the mapping reads {source.describe()}"
        )
    parsed = _ARN.fullmatch(arn) if isinstance(arn, str) else None
    if parsed is None or parsed[1] != service:
        raise ConfigError(
            f"EventSourceArn={arn!r} is not the ARN of a {service} source, but the mapping "
            f"reads {source.describe()}"
        )


def _check_access(configurations: object, source: Source | QueueSource) -> None:
    """Refuse ``SourceAccessConfigurations`` that do not describe how the source connects: the
    secrets stay on the source (``KafkaSource(security=...)``), this only checks they agree."""
    if source.kind == "kafka":
        check = getattr(getattr(source, "security", None), "check_aws", None)
    elif source.kind in ("rabbitmq", "activemq"):
        check = getattr(source, "check_aws", None)
    else:
        check = None
    if check is None:
        raise ConfigError(
            f"SourceAccessConfigurations: {source.describe()} takes no access configurations; "
            "configure its credentials on the source"
        )
    check(configurations)


def _on_failure(config: object, source: Source | QueueSource) -> Destination | None:
    """The destination ``DestinationConfig`` names; None when it names none (an empty
    Destination is how AWS removes one)."""
    if not isinstance(config, Mapping) or not set(config) <= {"OnFailure", "OnSuccess"}:
        raise ConfigError.out_of_range(
            "DestinationConfig", config, '{"OnFailure": {"Destination": "<ARN>"}}'
        )
    if _target(config, "OnSuccess"):
        raise ConfigError(
            f"DestinationConfig.OnSuccess={config['OnSuccess']!r}: Lambda takes no on-success "
            "destination for an event source mapping"
        )
    target = _target(config, "OnFailure")
    return _destination(target, source) if target else None


def _target(config: Mapping[str, Any], condition: str) -> str:
    """The Destination of ``config[condition]``, "" when it has none."""
    entry = config.get(condition) or {}
    if isinstance(entry, Mapping) and set(entry) <= {"Destination"}:
        target = entry.get("Destination") or ""
        if isinstance(target, str):
            return target
    raise ConfigError.out_of_range(
        f"DestinationConfig.{condition}", entry, '{"Destination": "<ARN>"}'
    )


def _destination(target: str, source: Source | QueueSource) -> Destination:
    """The destination ``target`` names, if Lambda accepts it for ``source`` and streamfn
    has one of its kind; a ConfigError naming the field otherwise."""
    allowed = _ON_FAILURE_SERVICES.get(source.kind)
    if allowed is None:
        raise ConfigError(
            f"{_DESTINATION}={target!r}: which destinations Lambda accepts for a source of "
            f"kind {source.kind!r} is not known; pass on_failure= instead"
        )
    if not allowed:
        raise ConfigError(
            f"{_DESTINATION}={target!r}: Lambda takes no on-failure destination for an "
            f"{source.kind} source: {_DEAD_LETTERING[source.kind]}"
        )
    parsed = _ARN.fullmatch(target)
    service = "kafka" if target.startswith(_KAFKA_TOPIC) else parsed[1] if parsed else ""
    if service not in allowed:
        raise ConfigError(
            f"{_DESTINATION}={target!r}: Lambda accepts only {_kinds(allowed)} as the "
            f"on-failure destination of a {source.kind} source"
        )
    if service not in ("sqs", "kafka"):
        raise ConfigError(
            f"{_DESTINATION}={target!r}: streamfn has no {service.upper()} destination; pass "
            "on_failure= another one (SQSDestination, KafkaDestination, WebhookDestination, "
            "FileDestination)"
        )
    try:
        if service == "sqs":
            from streamfn.connectors.sqs import SQSDestination  # the aws extra, when used

            return SQSDestination(target)
        return _kafka_topic(target[len(_KAFKA_TOPIC) :], source)
    except (ConfigError, ImportError) as exc:
        raise ConfigError(f"{_DESTINATION}={target!r}: {exc}") from exc


def _kafka_topic(topic: str, source: Source | QueueSource) -> Destination:
    from streamfn.connectors.kafka import KafkaSource  # the kafka extra, when used

    if not isinstance(source, KafkaSource):
        raise ConfigError(
            "a Kafka topic destination is a topic of the source's cluster, and this source "
            "is no KafkaSource: pass on_failure=KafkaDestination(...)"
        )
    return source.failure_topic(topic)


def _kinds(services: tuple[str, ...]) -> str:
    names = {"sqs": "an SQS queue", "sns": "an SNS topic", "s3": "an S3 bucket"}
    names["kafka"] = "a Kafka topic (kafka://<topic>)"
    return ", ".join(names[s] for s in services[:-1]) + f" or {names[services[-1]]}"
