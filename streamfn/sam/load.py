"""Loading a template: read it, check its parameters, expand SAM, apply Conditions, and set up
the resolver of intrinsic functions over what is left. Every error is one line that starts
with the template file and names the resource and property (``template.yaml:
Resources.Orders.Properties.Timeout: ...``), raised as a ConfigError (``streamfn`` exits 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .defaults import DEFAULT_ACCOUNT_ID
from .expand import FunctionCode, expand
from .intrinsics import Resolver
from .parameters import resolve_parameters
from .resources import TemplateResources
from .template_yaml import read_template


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """What a run says about the template's surroundings.

    ``account_id`` and ``region`` are the pseudo parameters and the ARNs' parts (the default
    account is moto's, AWS's documentation's); ``resource_names`` maps logical ids to physical
    names (a deployed stack's queues); ``kafka_bootstrap`` maps an MSK cluster's ARN or
    logical id (or ``""``: any Kafka mapping) to its brokers; ``mq_brokers`` maps an Amazon
    MQ broker's ARN or logical id (or ``""``: any MQ mapping) to its URL."""

    parameter_overrides: Mapping[str, str] = field(default_factory=dict)
    region: str = "us-east-1"
    account_id: str = DEFAULT_ACCOUNT_ID
    stack_name: str = "streamfn"
    resource_names: Mapping[str, str] = field(default_factory=dict)
    kafka_bootstrap: Mapping[str, str] = field(default_factory=dict)
    mq_brokers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Template:
    """A loaded template: its resources after expansion and Conditions, and the resolver."""

    path: Path
    options: LoadOptions
    parameters: dict[str, Any]
    resources: TemplateResources
    resolver: Resolver
    codes: dict[str, FunctionCode]
    sam: bool

    @property
    def base_dir(self) -> Path:
        return self.path.resolve().parent


def load_template(path: str | Path, options: LoadOptions | None = None) -> Template:
    """Load ``path``; a ConfigError of one line prefixed with the file on any problem."""
    path = Path(path)
    options = options or LoadOptions()
    try:
        return _load(path, options)
    except ConfigError as exc:
        message = str(exc)
        if not message.startswith(str(path)):
            message = f"{path}: {message}"
        raise ConfigError(message) from exc


def _load(path: Path, options: LoadOptions) -> Template:
    raw = read_template(path)
    pseudo: dict[str, Any] = {
        "AWS::Region": options.region,
        "AWS::AccountId": options.account_id,
        "AWS::Partition": "aws",
        "AWS::StackName": options.stack_name,
        "AWS::StackId": (
            f"arn:aws:cloudformation:{options.region}:{options.account_id}:"
            f"stack/{options.stack_name}/streamfn"
        ),
        "AWS::URLSuffix": "amazonaws.com",
        "AWS::NotificationARNs": [],
    }
    parameters = resolve_parameters(raw.get("Parameters"), options.parameter_overrides, pseudo)
    declared = {k: v for k, v in parameters.items() if k not in pseudo}
    sam = "Transform" in raw
    expanded, codes = expand(raw, {**declared, **pseudo}, options.region)
    for section in ("Conditions", "Mappings"):
        if not isinstance(expanded.get(section) or {}, dict):
            raise ConfigError(f"{section}: must be a mapping")
    all_resources: dict[str, Any] = expanded["Resources"]
    for logical_id, resource in all_resources.items():
        if not isinstance(resource, dict) or not isinstance(resource.get("Type"), str):
            raise ConfigError(f"Resources.{logical_id}.Type: every resource needs a Type")
    resources = TemplateResources(
        all_resources, options.resource_names, options.region, options.account_id
    )
    resolver = Resolver(
        parameters, expanded.get("Conditions") or {}, expanded.get("Mappings") or {}, resources
    )
    resources.resolver = resolver
    unknown = set(options.resource_names) - set(all_resources)
    if unknown:
        raise ConfigError(f"--resource-name {sorted(unknown)[0]}: no such resource")
    active = {
        logical_id: resource
        for logical_id, resource in all_resources.items()
        if "Condition" not in resource
        or resolver.condition(resource["Condition"], f"Resources.{logical_id}.Condition")
    }
    resources.resources = active
    return Template(path, options, parameters, resources, resolver, codes, sam)
