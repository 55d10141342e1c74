"""The reader of ``AWS::Lambda::EventSourceMapping``: its settings for
:mod:`streamfn.aws_mapping`, and the source it reads: SQS, Kinesis, DynamoDB Streams, MSK or
self-managed Kafka, or Amazon MQ (:mod:`.read_mq`); DocumentDB is listed as unsupported."""

from __future__ import annotations

from typing import Any

from .intrinsics import located
from .plan import MappingPlan, Plan
from .props import Props, boolean, integer
from .read_mq import mq_source
from .resources import LATEST_STREAM

# -- event source mappings ------------------------------------------------------------------

#: CreateEventSourceMapping settings :mod:`streamfn.aws_mapping` reads, and their types.
_ESM_INTEGERS = (
    "BatchSize", "MaximumBatchingWindowInSeconds", "ParallelizationFactor",
    "MaximumRetryAttempts", "MaximumRecordAgeInSeconds", "TumblingWindowInSeconds",
)  # fmt: skip
_ESM_BOOLEANS = ("BisectBatchOnFunctionError", "Enabled")
_ESM_PASSED = (
    "FunctionResponseTypes", "FilterCriteria", "ScalingConfig", "StartingPosition",
    "StartingPositionTimestamp", "DestinationConfig", "Tags", "KMSKeyArn", "MetricsConfig",
    "EventSourceArn",
)  # fmt: skip
_ESM_UNSUPPORTED = {
    "Queues": "only an Amazon MQ mapping (on a broker's ARN) reads Queues",
    "DocumentDBEventSourceConfig": "DocumentDB change streams are not read by streamfn",
    "ProvisionedPollerConfig": "streamfn has no provisioned mode: it polls every partition it owns",
}


def event_source_mapping(plan: Plan, logical_id: str) -> None:
    template = plan.template
    props = Props(template, logical_id)
    target = template.resources.function_name(props.get("FunctionName"), props.path("FunctionName"))
    settings: dict[str, Any] = {}
    for key in _ESM_INTEGERS:
        if key in props.values:
            settings[key] = props.integer(key)
    for key in _ESM_BOOLEANS:
        if key in props.values:
            settings[key] = boolean(props.get(key), props.path(key))
    for key in _ESM_PASSED:
        if key in props.values:
            settings[key] = props.get(key)
    scaling = settings.get("ScalingConfig")
    if isinstance(scaling, dict) and "MaximumConcurrency" in scaling:
        where = props.path("ScalingConfig.MaximumConcurrency")
        settings["ScalingConfig"] = {
            **scaling,
            "MaximumConcurrency": integer(scaling["MaximumConcurrency"], where),
        }
    if "StartingPositionTimestamp" in settings:
        settings["StartingPositionTimestamp"] = props.number("StartingPositionTimestamp")
    arn = props.string("EventSourceArn")
    kind, source = _source(plan, logical_id, props, arn)
    for key in props.rest():
        reason = _ESM_UNSUPPORTED.get(key, "streamfn does not know this mapping property")
        plan.refuse(logical_id, key, reason)
    if kind is None:
        return
    plan.mappings.append(
        MappingPlan(logical_id, target.name, target.qualifier, kind, source, settings)
    )


def _source(
    plan: Plan, logical_id: str, props: Props, arn: str | None
) -> tuple[str | None, dict[str, Any]]:
    """The kind of source a mapping reads and its constructor's keywords (None when the
    source is unsupported, which is then listed)."""
    account = plan.template.options.account_id
    if arn is None:
        endpoints = props.mapping("SelfManagedEventSource").get("Endpoints")
        if not isinstance(endpoints, dict) or "KafkaBootstrapServers" not in endpoints:
            raise located(
                props.path("EventSourceArn"),
                "a mapping needs an EventSourceArn or SelfManagedEventSource",
            )
        servers = endpoints["KafkaBootstrapServers"]
        config = props.mapping("SelfManagedKafkaEventSourceConfig")
        return "kafka", _kafka(plan, logical_id, props, None, servers, config)
    parts = arn.split(":", 5)
    if len(parts) < 6 or parts[0] != "arn":
        raise located(props.path("EventSourceArn"), f"{arn!r} is not an ARN")
    service, region, owner, resource = parts[2], parts[3], parts[4], parts[5]
    own = owner == account
    if service == "sqs":
        return "sqs", {"queue": resource if own else arn, "region_name": region}
    if service == "kinesis" and resource.startswith("stream/"):
        name = resource.split("/")[1]
        return "kinesis", {"stream": name if own else arn, "region_name": region}
    if service == "dynamodb" and "/stream/" in resource:
        table, label = resource.split("/")[1], resource.rsplit("/", 1)[1]
        stream = table if label == LATEST_STREAM else arn
        return "dynamodb", {"stream": stream, "region_name": region}
    if service == "kafka":
        config = props.mapping("AmazonManagedKafkaEventSourceConfig")
        return "kafka", _kafka(plan, logical_id, props, arn, None, config)
    if service == "mq":
        return mq_source(plan, logical_id, props, arn)
    plan.refuse(logical_id, "EventSourceArn", f"{arn}: streamfn has no {service} source")
    return None, {}


def _kafka(
    plan: Plan,
    logical_id: str,
    props: Props,
    cluster_arn: str | None,
    servers: Any,
    config: dict[str, Any],
) -> dict[str, Any]:
    topics = props.get("Topics")
    if not isinstance(topics, list) or not topics:
        raise located(props.path("Topics"), "a Kafka mapping needs its Topics")
    bootstrap = plan.template.options.kafka_bootstrap
    cluster_id = next(
        (
            i
            for i in plan.template.resources.resources
            if cluster_arn
            and plan.template.resources.type(i) == "AWS::MSK::Cluster"
            and plan.template.resources.arn(i) == cluster_arn
        ),
        None,
    )
    given = next(
        (bootstrap[k] for k in (cluster_arn, cluster_id, "") if k is not None and k in bootstrap),
        None,
    )
    if given is not None:
        servers = given
    if servers is None:
        raise located(
            props.path("EventSourceArn"),
            f"the brokers of MSK cluster {cluster_arn} are not known: give them with "
            "--kafka-bootstrap-servers [CLUSTER=]HOST:PORT",
        )
    group = (
        config.get("ConsumerGroupId")
        if set(config) <= {"ConsumerGroupId", "SchemaRegistryConfig"}
        else None
    )
    if set(config) - {"ConsumerGroupId"}:
        plan.refuse(logical_id, "SchemaRegistryConfig", "schema registries are not read")
    access = props.get("SourceAccessConfigurations") or []
    for entry in access:
        kind = entry.get("Type") if isinstance(entry, dict) else None
        if kind in ("VPC_SUBNET", "VPC_SECURITY_GROUP"):
            plan.ignore(logical_id, "SourceAccessConfigurations", f"{kind}: network placement")
        else:
            plan.refuse(
                logical_id,
                "SourceAccessConfigurations",
                f"{kind}: credentials in Secrets Manager are not read; run the worker from "
                "code with KafkaSource(security=...)",
            )
    props.get("SelfManagedEventSource")
    props.get("SelfManagedKafkaEventSourceConfig")
    props.get("AmazonManagedKafkaEventSourceConfig")
    return {
        "topic": [str(t) for t in topics],
        "bootstrap_servers": servers if isinstance(servers, str) else [str(s) for s in servers],
        "group_id": str(group) if group else f"{plan.template.options.stack_name}-{logical_id}",
        "cluster_arn": cluster_arn,
    }
