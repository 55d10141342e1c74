"""What the template's resources are called and what ``Ref``/``Fn::GetAtt`` of them return.

A resource's physical name is its explicit name property (``QueueName``, ``Name``,
``TableName``, ``FunctionName`` ...), else its logical id (``.fifo`` added for a FIFO queue),
unless ``--resource-name Logical=NAME`` names it: that is how a template is pointed at the
queues, streams and tables of a stack CloudFormation already deployed, whose names it
generated. ARNs are built from that name with the region and account the run is given, so
every reference to a resource agrees with the others and with the sources built from it.

A DynamoDB table's ``StreamArn`` carries the label :data:`LATEST_STREAM`: the real label is
only known once the table exists, so a mapping on it reads the table's latest stream.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from ..versions import FunctionName
from .intrinsics import Resolver, located

LATEST_STREAM = "streamfn-latest"

#: The property that names a resource of each type, where the type has one.
_NAME_PROPERTY = {
    "AWS::SQS::Queue": "QueueName",
    "AWS::Kinesis::Stream": "Name",
    "AWS::DynamoDB::Table": "TableName",
    "AWS::Lambda::Function": "FunctionName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::S3::Bucket": "BucketName",
    "AWS::IAM::Role": "RoleName",
    "AWS::Events::Rule": "Name",
    "AWS::Scheduler::Schedule": "Name",
    "AWS::MSK::Cluster": "ClusterName",
    "AWS::AmazonMQ::Broker": "BrokerName",
}


class TemplateResources:
    """The resources left once Conditions are applied, as ``Ref``/``Fn::GetAtt`` see them."""

    def __init__(
        self,
        resources: Mapping[str, Any],
        names: Mapping[str, str],
        region: str,
        account_id: str,
    ) -> None:
        self.resources = resources
        self.names = names
        self.region = region
        self.account_id = account_id
        self.resolver: Resolver | None = None
        self._naming: set[str] = set()
        self._versions: dict[str, tuple[str, str]] | None = None

    def type(self, logical_id: str) -> str:
        return str(self.resources[logical_id].get("Type", ""))

    def properties(self, logical_id: str) -> dict[str, Any]:
        properties = self.resources[logical_id].get("Properties") or {}
        if not isinstance(properties, dict):
            raise located(f"Resources.{logical_id}.Properties", "must be a mapping")
        return properties

    def has(self, logical_id: str) -> bool:
        return logical_id in self.resources

    def name(self, logical_id: str) -> str:
        """The physical name of a resource."""
        if logical_id in self.names:
            return self.names[logical_id]
        kind = self.type(logical_id)
        prop = _NAME_PROPERTY.get(kind)
        properties = self.properties(logical_id)
        if prop and prop in properties:
            if logical_id in self._naming:
                raise located(f"Resources.{logical_id}.Properties.{prop}", "refers to itself")
            self._naming.add(logical_id)
            try:
                assert self.resolver is not None
                path = f"Resources.{logical_id}.Properties.{prop}"
                return self.resolver.string(properties[prop], path)
            finally:
                self._naming.discard(logical_id)
        if kind == "AWS::SQS::Queue" and str(properties.get("FifoQueue")).lower() == "true":
            return f"{logical_id}.fifo"
        return logical_id

    def arn(self, logical_id: str) -> str:
        kind = self.type(logical_id)
        name = self.name(logical_id)
        r, a = self.region, self.account_id
        if kind == "AWS::SQS::Queue":
            return f"arn:aws:sqs:{r}:{a}:{name}"
        if kind == "AWS::Kinesis::Stream":
            return f"arn:aws:kinesis:{r}:{a}:stream/{name}"
        if kind == "AWS::DynamoDB::Table":
            return f"arn:aws:dynamodb:{r}:{a}:table/{name}"
        if kind == "AWS::Lambda::Function":
            return f"arn:aws:lambda:{r}:{a}:function:{name}"
        if kind == "AWS::SNS::Topic":
            return f"arn:aws:sns:{r}:{a}:{name}"
        if kind == "AWS::S3::Bucket":
            return f"arn:aws:s3:::{name}"
        if kind == "AWS::IAM::Role":
            return f"arn:aws:iam::{a}:role/{name}"
        if kind == "AWS::MSK::Cluster":
            return f"arn:aws:kafka:{r}:{a}:cluster/{name}/{logical_id}"
        if kind == "AWS::AmazonMQ::Broker":
            return f"arn:aws:mq:{r}:{a}:broker:{name}:{self._broker_id(logical_id)}"
        if kind == "AWS::Events::Rule":
            return f"arn:aws:events:{r}:{a}:rule/{name}"
        if kind == "AWS::Scheduler::Schedule":
            return f"arn:aws:scheduler:{r}:{a}:schedule/default/{name}"
        if kind in ("AWS::Lambda::Version", "AWS::Lambda::Alias"):
            return str(self.ref(logical_id, f"Resources.{logical_id}"))
        service = kind.split("::")[1].lower() if kind.count("::") == 2 else "cloudformation"
        return f"arn:aws:{service}:{r}:{a}:{logical_id}"

    def ref(self, logical_id: str, path: str) -> Any:
        kind = self.type(logical_id)
        if kind == "AWS::SQS::Queue":
            return self.queue_url(self.name(logical_id))
        if kind in ("AWS::SNS::Topic", "AWS::MSK::Cluster"):
            return self.arn(logical_id)
        if kind == "AWS::AmazonMQ::Broker":
            return self._broker_id(logical_id)
        if kind == "AWS::Lambda::Version":
            function, number = self.version(logical_id)
            return f"{self._function_arn(function)}:{number}"
        if kind == "AWS::Lambda::Alias":
            function, alias = self.alias(logical_id)
            return f"{self._function_arn(function)}:{alias}"
        return self.name(logical_id)

    def get_att(self, logical_id: str, attribute: str, path: str) -> Any:
        kind = self.type(logical_id)
        if attribute == "Arn":
            return self.arn(logical_id)
        if kind == "AWS::SQS::Queue" and attribute in ("QueueName", "QueueUrl"):
            name = self.name(logical_id)
            return name if attribute == "QueueName" else self.queue_url(name)
        if kind == "AWS::DynamoDB::Table" and attribute == "StreamArn":
            return f"{self.arn(logical_id)}/stream/{LATEST_STREAM}"
        if kind == "AWS::Lambda::Version" and attribute == "Version":
            return self.version(logical_id)[1]
        if kind == "AWS::Lambda::Url" and attribute == "FunctionUrl":
            return f"/urls/{self._url_function(logical_id)}/"
        if kind == "AWS::IAM::Role" and attribute == "RoleId":
            return f"AROA{logical_id.upper()}"
        raise located(path, f"{logical_id} ({kind}) has no attribute {attribute!r} here")

    def queue_url(self, name: str) -> str:
        """A queue's URL where its clients will reach it: the SQS endpoint the environment
        names (``AWS_ENDPOINT_URL_SQS``, ``AWS_ENDPOINT_URL``), else AWS's own."""
        import os

        endpoint = os.environ.get("AWS_ENDPOINT_URL_SQS") or os.environ.get("AWS_ENDPOINT_URL")
        base = endpoint.rstrip("/") if endpoint else f"https://sqs.{self.region}.amazonaws.com"
        return f"{base}/{self.account_id}/{name}"

    def function_name(self, value: Any, path: str) -> FunctionName:
        """A FunctionName or function ARN (with qualifier) as resolved from the template."""
        parsed = FunctionName.parse(value) if isinstance(value, str) else None
        if parsed is None:
            raise located(path, f"{value!r} is not a function name or ARN")
        return parsed

    def version(self, logical_id: str) -> tuple[str, str]:
        """(function name, version number) of an ``AWS::Lambda::Version``: versions are
        numbered 1, 2, ... per function in the order the template lists them, as publishing
        them one after the other would."""
        if self._versions is None:
            self._versions = {}
            counts: dict[str, int] = {}
            for other, resource in self.resources.items():
                if resource.get("Type") == "AWS::Lambda::Version":
                    function = self._target(other).name
                    counts[function] = counts.get(function, 0) + 1
                    self._versions[other] = (function, str(counts[function]))
        return self._versions[logical_id]

    def alias(self, logical_id: str) -> tuple[str, str]:
        path = f"Resources.{logical_id}.Properties.Name"
        assert self.resolver is not None
        name = self.resolver.string(self.properties(logical_id).get("Name"), path)
        return self._target(logical_id).name, name

    def _target(self, logical_id: str) -> FunctionName:
        path = f"Resources.{logical_id}.Properties.FunctionName"
        assert self.resolver is not None
        value = self.resolver.value(self.properties(logical_id).get("FunctionName"), path)
        return self.function_name(value, path)

    def _url_function(self, logical_id: str) -> str:
        path = f"Resources.{logical_id}.Properties.TargetFunctionArn"
        assert self.resolver is not None
        value = self.resolver.value(self.properties(logical_id).get("TargetFunctionArn"), path)
        return self.function_name(value, path).name

    def _broker_id(self, logical_id: str) -> str:
        """An Amazon MQ broker's id (``b-`` and a UUID, which AWS makes up at creation): one
        derived from the broker's name, region and account, so every reference agrees."""
        key = f"{self.region}:{self.account_id}:{self.name(logical_id)}"
        return f"b-{uuid.uuid5(uuid.NAMESPACE_URL, key)}"

    def _function_arn(self, name: str) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{name}"
