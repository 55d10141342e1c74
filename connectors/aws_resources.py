"""The AWS resources a template's run needs where the AWS clients point (real AWS, or an
emulator through ``AWS_ENDPOINT_URL*``), on aiobotocore (extra ``aws``).

:func:`create_resources` is ``streamfn run TEMPLATE --create-resources``: it creates the
template's own SQS queues, Kinesis streams and DynamoDB tables that are missing, so a template
runs against moto or LocalStack without a separate set-up step. One that exists is left as it
is (not compared, not updated). What shapes what the functions see is passed on: a queue's
attributes with its redrive policy, a stream's shard count or on-demand mode, a table's keys,
indexes, billing and stream view type; the rest (tags, encryption, retention, TTL, ...) keeps the
service's defaults. A queue comes after the queue its redrive policy names, since SQS refuses a
dead-letter target that does not exist yet.

:func:`read_secrets` reads the Secrets Manager secrets an Amazon MQ mapping's ``BASIC_AUTH``
names, as Lambda's poller reads them before it connects.

Both are bounded by one deadline, waits for a stream or table to turn ACTIVE included, and
every failure is a one-line ConfigError naming the resource (or the mapping) and the endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamfn.errors import ConfigError

from ._extras import require

require("aws_resources", "aws", "aiobotocore")

from aiobotocore.session import AioSession  # noqa: E402
from botocore.exceptions import BotoCoreError, ClientError  # noqa: E402

QUEUE = "AWS::SQS::Queue"
STREAM = "AWS::Kinesis::Stream"
TABLE = "AWS::DynamoDB::Table"
_SERVICES = {QUEUE: "sqs", STREAM: "kinesis", TABLE: "dynamodb"}
#: Error codes by which each service says the resource is not there.
_MISSING = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "ResourceNotFoundException"}
)
#: Queue properties that are not queue attributes.
_NOT_ATTRIBUTES = frozenset({"QueueName", "Tags"})
#: Table properties CreateTable takes as they are written in a template.
_TABLE_FIELDS = (
    "AttributeDefinitions", "KeySchema", "BillingMode", "ProvisionedThroughput",
    "GlobalSecondaryIndexes", "LocalSecondaryIndexes",
)  # fmt: skip
_POLL = 0.1  # seconds between two looks at a stream or table that is not ACTIVE yet


@dataclass(frozen=True, slots=True)
class Resource:
    """A template resource to create: its logical id (for messages), type, physical name and
    properties, intrinsic functions resolved."""

    logical_id: str
    kind: str
    name: str
    properties: Mapping[str, Any]


async def create_resources(
    resources: Sequence[Resource], region: str, *, timeout: float = 60.0
) -> list[str]:
    """Create those of ``resources`` that are missing; return the logical ids created, in
    the order they were created. All of it within ``timeout`` seconds."""
    created: list[str] = []
    current: Resource | None = None
    async with _Clients(region) as clients:
        try:
            async with asyncio.timeout(timeout):
                for current in _ordered(resources):
                    client = await clients.get(_SERVICES[current.kind])
                    try:
                        if await _create(client, current):
                            created.append(current.logical_id)
                    except (BotoCoreError, ClientError) as exc:
                        raise ConfigError(
                            f"Resources.{current.logical_id}: cannot create {current.kind} "
                            f"{current.name!r} at {_endpoint(client)}: {_one_line(exc)}"
                        ) from exc
        except TimeoutError:
            assert current is not None
            raise ConfigError(
                f"Resources.{current.logical_id}: {current.kind} {current.name!r} was not "
                f"created and ACTIVE within {timeout:g} s"
            ) from None
    return created


async def read_secrets(
    wanted: Mapping[str, str], region: str, *, timeout: float = 30.0
) -> dict[str, dict[str, Any]]:
    """The JSON object of each secret in ``wanted`` (secret ARN or name -> where it is named,
    for messages), read with GetSecretValue in the ARN's region (``region`` for a name)."""
    found: dict[str, dict[str, Any]] = {}
    async with _Clients(region) as clients:
        for secret_id, where in wanted.items():
            prefix = f"{where}: secret {secret_id}"
            client = await clients.get("secretsmanager", _secret_region(secret_id))
            try:
                async with asyncio.timeout(timeout):
                    reply = await client.get_secret_value(SecretId=secret_id)
            except TimeoutError:
                raise ConfigError(
                    f"{prefix}: Secrets Manager at {_endpoint(client)} did not answer within "
                    f"{timeout:g} s"
                ) from None
            except (BotoCoreError, ClientError) as exc:
                raise ConfigError(
                    f"{prefix}: cannot read it from Secrets Manager at {_endpoint(client)}: "
                    f"{_one_line(exc)}"
                ) from exc
            try:
                value = json.loads(reply.get("SecretString") or "")
            except ValueError:
                value = None
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{prefix}: its SecretString is not a JSON object "
                    '({"username": ..., "password": ...})'
                )
            found[secret_id] = value
    return found


class _Clients:
    """One client per service and region, opened on first use and closed together."""

    def __init__(self, region: str) -> None:
        self.region = region
        self._session = AioSession()
        self._stack = contextlib.AsyncExitStack()
        self._clients: dict[tuple[str, str], Any] = {}

    async def __aenter__(self) -> _Clients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def get(self, service: str, region: str | None = None) -> Any:
        key = (service, region or self.region)
        if key not in self._clients:
            context = self._session.create_client(service, region_name=key[1])
            self._clients[key] = await self._stack.enter_async_context(context)
        return self._clients[key]


def _ordered(resources: Sequence[Resource]) -> list[Resource]:
    """``resources`` with every queue after the queue its redrive policy names (a chain of
    dead-letter queues included); otherwise in the order given."""
    queues = {r.name: r for r in resources if r.kind == QUEUE}
    done: dict[str, Resource] = {}
    visiting: set[str] = set()

    def visit(resource: Resource) -> None:
        if resource.logical_id in done:
            return
        if resource.logical_id in visiting:
            raise ConfigError(
                f"Resources.{resource.logical_id}.Properties.RedrivePolicy: the dead-letter "
                "queues form a cycle"
            )
        visiting.add(resource.logical_id)
        target = queues.get(_redrive_target(resource))
        if target is not None and target is not resource:
            visit(target)
        visiting.discard(resource.logical_id)
        done[resource.logical_id] = resource

    for resource in resources:
        visit(resource)
    return list(done.values())


def _redrive_target(resource: Resource) -> str:
    """The name of the queue a queue's RedrivePolicy sends to ("" without one)."""
    policy = resource.properties.get("RedrivePolicy") if resource.kind == QUEUE else None
    if isinstance(policy, str):
        with contextlib.suppress(ValueError):
            policy = json.loads(policy)
    arn = policy.get("deadLetterTargetArn") if isinstance(policy, dict) else None
    return arn.rsplit(":", 1)[-1] if isinstance(arn, str) else ""


async def _create(client: Any, resource: Resource) -> bool:
    """Create ``resource`` unless it exists; whether it was created."""
    name, props = resource.name, resource.properties
    if resource.kind == QUEUE:
        if await _exists(client.get_queue_url(QueueName=name)):
            return False
        attributes = {k: _attribute(v) for k, v in props.items() if k not in _NOT_ATTRIBUTES}
        await client.create_queue(QueueName=name, Attributes=attributes)
        return True
    if resource.kind == STREAM:
        if await _exists(client.describe_stream_summary(StreamName=name)):
            return False
        mode = props.get("StreamModeDetails")
        if isinstance(mode, dict) and mode.get("StreamMode") == "ON_DEMAND":
            await client.create_stream(StreamName=name, StreamModeDetails=mode)
        else:
            await client.create_stream(StreamName=name, ShardCount=int(props.get("ShardCount", 1)))
        while await _stream_status(client, name) != "ACTIVE":
            await asyncio.sleep(_POLL)
        return True
    if await _exists(client.describe_table(TableName=name)):
        return False
    fields = {k: props[k] for k in _TABLE_FIELDS if k in props}
    if "ProvisionedThroughput" not in fields:
        # CloudFormation needs ProvisionedThroughput for PROVISIONED tables: without it the
        # template can only mean on-demand.
        fields["BillingMode"] = "PAY_PER_REQUEST"
    stream = props.get("StreamSpecification")
    if isinstance(stream, dict) and "StreamViewType" in stream:
        fields["StreamSpecification"] = {
            "StreamEnabled": True,
            "StreamViewType": stream["StreamViewType"],
        }
    await client.create_table(TableName=name, **fields)
    while (await client.describe_table(TableName=name))["Table"]["TableStatus"] != "ACTIVE":
        await asyncio.sleep(_POLL)
    return True


async def _exists(call: Any) -> bool:
    """Whether a describe call finds its resource; its other errors are raised."""
    try:
        await call
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in _MISSING:
            return False
        raise
    return True


async def _stream_status(client: Any, name: str) -> str:
    summary = await client.describe_stream_summary(StreamName=name)
    return str(summary["StreamDescriptionSummary"]["StreamStatus"])


def _attribute(value: Any) -> str:
    """A queue property as SQS's string attribute: a policy object as JSON, a boolean as
    ``true``/``false``."""
    if isinstance(value, dict | list):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _secret_region(secret_id: str) -> str | None:
    parts = secret_id.split(":")
    return parts[3] if secret_id.startswith("arn:") and len(parts) > 3 and parts[3] else None


def _endpoint(client: Any) -> str:
    return str(client.meta.endpoint_url)


def _one_line(exc: BaseException) -> str:
    """``Code: message`` of a service's refusal, else the error's text, on one line."""
    text = str(exc)
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        if error.get("Code") and error.get("Message"):
            text = f"{error['Code']}: {error['Message']}"
    return re.sub(r"\s+", " ", text).strip()
