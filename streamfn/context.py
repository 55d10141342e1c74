"""A context object with every member of Lambda's Python context (awslambdaric's LambdaContext)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from time import monotonic
from typing import Any


@dataclass(frozen=True, slots=True)
class CognitoIdentity:
    """Who called through Amazon Cognito: never anyone on streamfn, so every context shares one
    empty, immutable instance."""

    cognito_identity_id: str | None = None
    cognito_identity_pool_id: str | None = None


NO_IDENTITY = CognitoIdentity()


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


@dataclass(frozen=True, slots=True)
class FunctionInfo:
    """What every invocation of one function version shares. The log stream is named once, as
    a Lambda sandbox names its stream when it starts."""

    function_name: str
    function_version: str
    function_arn: str
    memory_limit_in_mb: str
    log_group_name: str
    log_stream_name: str
    timeout: float  # seconds


class Context:
    """Passed as the second handler argument, on streamfn as on Lambda, with every member of
    Lambda's Python context. Built once per invocation, so it holds only the request's own
    fields and reads the rest from the version's shared :class:`FunctionInfo`."""

    __slots__ = (
        "_info",
        "aws_request_id",
        "client_context",
        "deadline",
        "identity",
        "invoked_function_arn",
        "tenant_id",
    )

    def __init__(
        self,
        info: FunctionInfo,
        aws_request_id: str,
        invoked_function_arn: str | None = None,
        client_context: ClientContext | None = None,
        tenant_id: str | None = None,
    ) -> None:
        """The context of an invocation starting now: its deadline runs from here."""
        self._info = info
        self.aws_request_id = aws_request_id
        self.deadline = monotonic() + info.timeout  # when the invocation times out
        self.invoked_function_arn = invoked_function_arn or info.function_arn
        self.client_context = client_context
        self.identity = NO_IDENTITY
        self.tenant_id = tenant_id

    @property
    def function_name(self) -> str:
        return self._info.function_name

    @property
    def function_version(self) -> str:
        return self._info.function_version

    @property
    def memory_limit_in_mb(self) -> str:
        return self._info.memory_limit_in_mb

    @property
    def log_group_name(self) -> str:
        return self._info.log_group_name

    @property
    def log_stream_name(self) -> str:
        return self._info.log_stream_name

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))

    def __repr__(self) -> str:
        return (
            f"Context(function_name={self.function_name!r}, "
            f"function_version={self.function_version!r}, "
            f"invoked_function_arn={self.invoked_function_arn!r}, "
            f"aws_request_id={self.aws_request_id!r})"
        )
