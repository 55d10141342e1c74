"""Planning a loaded template: each resource to its reader (functions, mappings, schedules),
or to the list of what is ignored or unsupported, with the reason."""

from __future__ import annotations

from typing import Any

from .intrinsics import located
from .load import Template
from .plan import Plan
from .read_functions import alias, function, invoke_config, url, version
from .read_mappings import event_source_mapping
from .read_schedules import rule, scheduler

#: Resource types that change nothing a worker does, and why.
_IGNORED_TYPES = {
    "AWS::IAM::Role": "IAM: handlers run with the worker's own AWS credentials",
    "AWS::IAM::Policy": "IAM: handlers run with the worker's own AWS credentials",
    "AWS::IAM::ManagedPolicy": "IAM: handlers run with the worker's own AWS credentials",
    "AWS::Lambda::Permission": (
        "resource policy for AWS callers; the Invoke API authenticates with "
        "--access-keys-file instead"
    ),
    "AWS::SQS::QueuePolicy": "queue access policy: enforced by SQS, not by the worker",
    "AWS::SNS::TopicPolicy": "topic access policy: enforced by SNS, not by the worker",
    "AWS::Logs::LogGroup": "logs go to the worker's stdout (--log-format)",
    "AWS::CloudWatch::Alarm": "alarms: use the worker's /metrics (deploy/ has alert rules)",
    "AWS::SNS::Topic": "used by handlers through the AWS SDK, not run by streamfn",
    "AWS::SSM::Parameter": "used by handlers through the AWS SDK, not run by streamfn",
    "AWS::SecretsManager::Secret": "used by handlers through the AWS SDK, not run by streamfn",
    "AWS::AmazonMQ::Broker": "the broker runs elsewhere: an MQ mapping on it reaches it at "
    "the address --mq-broker gives",
    "AWS::AmazonMQ::Configuration": "broker configuration: applied by the broker",
    "AWS::AmazonMQ::ConfigurationAssociation": "broker configuration: applied by the broker",
}
#: Resource types a template's functions read or write: reached at the endpoint the run is
#: pointed at.
ENDPOINT_RESOURCES = ("AWS::SQS::Queue", "AWS::Kinesis::Stream", "AWS::DynamoDB::Table")
_UNSUPPORTED_TYPES = {
    "AWS::ApiGateway::": "API Gateway events: call the function over its function URL or "
    "the Invoke API instead",
    "AWS::ApiGatewayV2::": "API Gateway events: call the function over its function URL or "
    "the Invoke API instead",
    "AWS::Lambda::LayerVersion": "layers: put the layer's packages in the worker's image",
    "AWS::Lambda::LayerVersionPermission": "layers: put the layer's packages in the image",
    "AWS::SNS::Subscription": "SNS push events: SNS cannot deliver to a self-hosted worker; "
    "subscribe an SQS queue and map the queue instead",
    "AWS::CloudFormation::Stack": "nested stacks and applications: run each template",
    "AWS::Serverless::Application": "nested applications: run each template",
    "AWS::StepFunctions::": "state machines are not run by streamfn",
    "AWS::Cognito::": "Cognito triggers are pushed by Cognito; streamfn cannot receive them",
    "AWS::IoT::": "IoT rules push events; streamfn cannot receive them",
    "AWS::Pipes::Pipe": "EventBridge Pipes are not run by streamfn",
    "AWS::Events::EventBus": "event buses: streamfn runs schedules only",
    "AWS::AppSync::": "AppSync resolvers are not run by streamfn",
    "AWS::CodeDeploy::": "gradual deployments (DeploymentPreference) shift traffic through "
    "CodeDeploy on AWS; give the alias RoutingConfig weights instead",
}


def build_plan(template: Template) -> Plan:
    """The plan of ``template``; a ConfigError naming the resource and property when a value
    is wrong (as opposed to unsupported, which is listed)."""
    plan = Plan(template)
    resources = template.resources
    order = ["AWS::Lambda::Function", "AWS::Lambda::Version", "AWS::Lambda::Alias"]
    ids = sorted(
        resources.resources,
        key=lambda i: order.index(t) if (t := resources.type(i)) in order else len(order),
    )
    for logical_id in ids:
        kind = resources.type(logical_id)
        reader = _READERS.get(kind)
        if reader is not None:
            reader(plan, logical_id)
        elif kind in ENDPOINT_RESOURCES:
            plan.resources[logical_id] = kind
        elif kind == "AWS::S3::Bucket":
            _bucket(plan, logical_id)
        elif kind in _IGNORED_TYPES:
            plan.ignore(logical_id, "", f"{kind}: {_IGNORED_TYPES[kind]}")
        else:
            reason = next(
                (r for prefix, r in _UNSUPPORTED_TYPES.items() if kind.startswith(prefix)),
                "streamfn does not run this resource type",
            )
            plan.refuse(logical_id, "", f"{kind}: {reason}")
    _check_targets(plan)
    return plan


def _bucket(plan: Plan, logical_id: str) -> None:
    props = plan.template.resources.properties(logical_id)
    notifications = props.get("NotificationConfiguration") or {}
    if isinstance(notifications, dict) and notifications.get("LambdaConfigurations"):
        plan.refuse(
            logical_id,
            "NotificationConfiguration",
            "S3 push events: S3 cannot deliver to a self-hosted worker; send the bucket's "
            "notifications to an SQS queue and map the queue instead",
        )
    else:
        plan.ignore(logical_id, "", "AWS::S3::Bucket: used by handlers through the AWS SDK")


def _check_targets(plan: Plan) -> None:
    """Every reference to a function names one of the template's functions; what targets a
    function that is not run (a container image) is not run either, and listed."""
    lists: list[list[Any]] = [
        plan.versions, plan.aliases, plan.urls, plan.invoke_configs, plan.mappings,
        plan.schedules,
    ]  # fmt: skip
    for items in lists:
        for item in list(items):
            if item.function in plan.images:
                items.remove(item)
                plan.refuse(item.logical_id, "", f"its function {item.function!r} is not run")
            elif item.function not in plan.functions:
                raise located(
                    f"Resources.{item.logical_id}",
                    f"refers to function {item.function!r}, which the template does not define",
                )
    weighted = {(a.function, a.name) for a in plan.aliases if a.weights}
    for mapping in list(plan.mappings):
        if (mapping.function, mapping.qualifier) in weighted:
            plan.mappings.remove(mapping)
            plan.refuse(
                mapping.logical_id,
                "FunctionName",
                f"alias {mapping.qualifier!r} splits its traffic by weight; a mapping feeds "
                "one version here: point it at a version or an alias without weights",
            )


_READERS = {
    "AWS::Lambda::Function": function,
    "AWS::Lambda::Version": version,
    "AWS::Lambda::Alias": alias,
    "AWS::Lambda::Url": url,
    "AWS::Lambda::EventInvokeConfig": invoke_config,
    "AWS::Lambda::EventSourceMapping": event_source_mapping,
    "AWS::Events::Rule": rule,
    "AWS::Scheduler::Schedule": scheduler,
}
