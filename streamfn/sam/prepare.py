"""What a run does where the AWS clients point before it builds the app: create the template's
own queues, streams and tables (``streamfn run --create-resources``) and read the Secrets
Manager secrets its Amazon MQ mappings' ``BASIC_AUTH`` names.

Both happen before the handlers are imported (module-level code may look its queue up, as it
would at a cold start on Lambda), and both go through
:mod:`streamfn.connectors.aws_resources`, imported here only when needed: it needs the ``aws``
extra, and a template without them runs without it.

From code::

    plan = plan_template("template.yaml", options)
    await create_resources(plan)
    built = build_app(plan, secrets=await read_secrets(plan))
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import ConfigError
from .plan import Plan


async def create_resources(plan: Plan, *, timeout: float = 60.0) -> list[str]:
    """Create the template's queues, streams and tables that are missing (see
    :func:`streamfn.connectors.aws_resources.create_resources`); the logical ids created."""
    if not plan.resources:
        return []
    template = plan.template
    aws = _connector(plan, "--create-resources")
    resources = [
        aws.Resource(
            logical_id,
            kind,
            template.resources.name(logical_id),
            template.resolver.value(
                template.resources.properties(logical_id), f"Resources.{logical_id}.Properties"
            ),
        )
        for logical_id, kind in plan.resources.items()
    ]
    try:
        created: list[str] = await aws.create_resources(
            resources, template.options.region, timeout=timeout
        )
    except ConfigError as exc:
        raise ConfigError(f"{template.path}: {exc}") from exc
    return created


async def read_secrets(plan: Plan, *, timeout: float = 30.0) -> dict[str, dict[str, Any]]:
    """The JSON of every secret the plan's MQ mappings name (ARN -> object), for
    ``build_app(plan, secrets=...)``; a secret that cannot be read is a ConfigError naming
    the mapping."""
    wanted = {
        m.source["secret"]: f"Resources.{m.logical_id}.Properties.SourceAccessConfigurations"
        for m in plan.mappings
        if m.source.get("secret")
    }
    if not wanted:
        return {}
    aws = _connector(plan, "BASIC_AUTH secrets")
    try:
        secrets: dict[str, dict[str, Any]] = await aws.read_secrets(
            wanted, plan.template.options.region, timeout=timeout
        )
    except ConfigError as exc:
        raise ConfigError(f"{plan.template.path}: {exc}") from exc
    return secrets


def prepare(plan: Plan, *, create: bool) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """For the CLI, before the app's own event loop runs: the resources created (with
    ``create``) and the secrets read."""

    async def both() -> tuple[list[str], dict[str, dict[str, Any]]]:
        created = await create_resources(plan) if create else []
        return created, await read_secrets(plan)

    return asyncio.run(both())


def _connector(plan: Plan, what: str) -> Any:
    try:
        from streamfn.connectors import aws_resources
    except ImportError as exc:
        raise ConfigError(f"{plan.template.path}: {what} needs the 'aws' extra: {exc}") from exc
    return aws_resources
