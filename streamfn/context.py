"""A context object with every member of Lambda's Python context (awslambdaric's LambdaContext)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class CognitoIdentity:
    cognito_identity_id: str | None = None
    cognito_identity_pool_id: str | None = None


@dataclass(slots=True)
class Client:
    installation_id: str | None = None
    app_title: str | None = None
    app_version_name: str | None = None
    app_version_code: str | None = None
    app_package_name: str | None = None


@dataclass(slots=True)
class ClientContext:
    client: Client | None = None
    custom: dict[str, Any] | None = None
    env: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClientContext:
        raw_client = data.get("client")
        client = None
        if isinstance(raw_client, dict):
            client = Client(
                installation_id=raw_client.get("installation_id"),
                app_title=raw_client.get("app_title"),
                app_version_name=raw_client.get("app_version_name"),
                app_version_code=raw_client.get("app_version_code"),
                app_package_name=raw_client.get("app_package_name"),
            )
        return cls(client=client, custom=data.get("custom"), env=data.get("env"))


@dataclass(slots=True)
class Context:
    """Passed as the second handler argument, on streamfn as on Lambda."""

    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: str
    aws_request_id: str
    log_group_name: str
    log_stream_name: str
    deadline: float = field(repr=False)  # time.monotonic() at which the invocation times out
    identity: CognitoIdentity = field(default_factory=CognitoIdentity)
    client_context: ClientContext | None = None
    tenant_id: str | None = None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))
