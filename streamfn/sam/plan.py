"""What a loaded template asks streamfn to run, as plain typed records: the plan.

Every resource, and every property of the resources streamfn runs, lands in exactly one place:
it is run (a function, version, alias, URL, async config, mapping or schedule), it is
``ignored`` because it changes nothing on a worker (IAM roles, permissions, tags, log groups:
each with the reason), or it is ``unsupported`` (layers, VPCs, API Gateway, S3/SNS push
events, ...: each with the reason). ``streamfn validate`` prints all three; ``streamfn run``
refuses a plan with unsupported parts unless told to skip them. Nothing is dropped unlisted.
The readers that fill a plan are ``read_functions``, ``read_mappings`` and ``read_schedules``;
``planner`` runs them over the template.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .expand import FunctionCode
from .load import Template
from .schedule import Schedule


@dataclass(frozen=True, slots=True)
class Note:
    """A part of the template and what happens to it (ignored or unsupported, and why)."""

    resource: str
    part: str
    reason: str

    def __str__(self) -> str:
        return f"{self.resource}{'.' + self.part if self.part else ''}: {self.reason}"


@dataclass(slots=True)
class FunctionPlan:
    logical_id: str
    name: str
    runtime: str
    handler: str
    code: FunctionCode
    code_dir: Path | None
    environment: dict[str, str]
    timeout: float
    memory_size: int
    reserved_concurrency: int | None


@dataclass(frozen=True, slots=True)
class VersionPlan:
    logical_id: str
    function: str
    number: str


@dataclass(frozen=True, slots=True)
class AliasPlan:
    logical_id: str
    function: str
    name: str
    version: str
    weights: dict[str, float]


@dataclass(frozen=True, slots=True)
class UrlPlan:
    logical_id: str
    function: str
    qualifier: str | None
    auth_type: str
    cors: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class InvokeConfigPlan:
    logical_id: str
    function: str
    qualifier: str
    maximum_retry_attempts: int | None
    maximum_event_age: int | None
    on_success: str | None
    on_failure: str | None


@dataclass(frozen=True, slots=True)
class MappingPlan:
    """An event source mapping: its function (and qualifier), the source's kind and where it
    is (``source``: the keyword arguments of the source's constructor but for the ones the
    run adds), and the CreateEventSourceMapping settings for :mod:`streamfn.aws_mapping`."""

    logical_id: str
    function: str
    qualifier: str | None
    kind: str
    source: dict[str, Any]
    settings: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SchedulePlan:
    logical_id: str
    function: str
    qualifier: str | None
    schedule: Schedule
    expression: str
    payload: Any  # the event, or None for EventBridge's Scheduled Event
    enabled: bool


@dataclass(slots=True)
class Plan:
    template: Template
    functions: dict[str, FunctionPlan] = field(default_factory=dict)  # by function name
    versions: list[VersionPlan] = field(default_factory=list)
    aliases: list[AliasPlan] = field(default_factory=list)
    urls: list[UrlPlan] = field(default_factory=list)
    invoke_configs: list[InvokeConfigPlan] = field(default_factory=list)
    mappings: list[MappingPlan] = field(default_factory=list)
    schedules: list[SchedulePlan] = field(default_factory=list)
    resources: dict[str, str] = field(default_factory=dict)  # logical id -> type, creatable
    ignored: list[Note] = field(default_factory=list)
    images: set[str] = field(default_factory=set)  # functions not run: container images
    unsupported: list[Note] = field(default_factory=list)

    def ignore(self, resource: str, part: str, reason: str) -> None:
        self.ignored.append(Note(resource, part, reason))

    def refuse(self, resource: str, part: str, reason: str) -> None:
        self.unsupported.append(Note(resource, part, reason))
