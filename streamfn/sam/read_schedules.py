"""The readers of ``AWS::Events::Rule`` (schedule rules) and ``AWS::Scheduler::Schedule``:
Lambda targets become timers; event patterns and other targets are listed as unsupported."""

from __future__ import annotations

import json
import re
from typing import Any

from .intrinsics import located
from .plan import Plan, SchedulePlan
from .props import Props
from .schedule import parse_schedule

_LAMBDA_ARN = re.compile(r"arn:aws[a-zA-Z-]*:lambda:[^:]*:[^:]*:function:.+")

# -- schedules ------------------------------------------------------------------------------


def rule(plan: Plan, logical_id: str) -> None:
    props = Props(plan.template, logical_id)
    expression = props.string("ScheduleExpression")
    if expression is None:
        plan.refuse(
            logical_id,
            "EventPattern",
            "event patterns need an event bus; streamfn runs schedule rules only",
        )
        return
    schedule = parse_schedule(expression, None, props.path("ScheduleExpression"))
    enabled = (props.string("State", "ENABLED") or "ENABLED") == "ENABLED"
    props.get("Name")
    props.get("Description")
    targets = props.get("Targets", [])
    if not isinstance(targets, list):
        raise located(props.path("Targets"), "must be a list")
    for i, target in enumerate(targets):
        where = props.path(f"Targets[{i}]")
        arn = target.get("Arn") if isinstance(target, dict) else None
        if not isinstance(arn, str) or not _LAMBDA_ARN.fullmatch(arn):
            plan.refuse(logical_id, f"Targets[{i}]", f"{arn}: only Lambda targets are run")
            continue
        name = plan.template.resources.function_name(arn, f"{where}.Arn")
        payload: Any = None
        if "Input" in target:
            payload = _json(target["Input"], f"{where}.Input")
        for key in set(target) - {"Arn", "Id", "Input"}:
            if key in ("RetryPolicy", "DeadLetterConfig", "RoleArn"):
                plan.ignore(
                    logical_id,
                    f"Targets[{i}].{key}",
                    "delivery to the local queue "
                    "does not fail as EventBridge's can; the function's async "
                    "retries and destinations apply",
                )
            else:
                plan.refuse(logical_id, f"Targets[{i}].{key}", "not supported for schedules")
        plan.schedules.append(
            SchedulePlan(
                logical_id, name.name, name.qualifier, schedule, expression, payload, enabled
            )
        )
    for key in props.rest():
        plan.refuse(logical_id, key, "streamfn does not know this rule property")


def scheduler(plan: Plan, logical_id: str) -> None:
    props = Props(plan.template, logical_id)
    expression = props.required("ScheduleExpression")
    zone = props.string("ScheduleExpressionTimezone")
    start, end = props.string("StartDate"), props.string("EndDate")
    schedule = parse_schedule(expression, zone, props.path("ScheduleExpression"), start, end)
    enabled = (props.string("State", "ENABLED") or "ENABLED") == "ENABLED"
    target = props.mapping("Target")
    arn = target.get("Arn")
    props.get("FlexibleTimeWindow")
    props.get("Name")
    props.get("Description")
    props.get("GroupName")
    if not isinstance(arn, str) or not _LAMBDA_ARN.fullmatch(arn):
        plan.refuse(logical_id, "Target", f"{arn}: only Lambda targets are run")
        return
    name = plan.template.resources.function_name(arn, props.path("Target.Arn"))
    payload = _json(target["Input"], props.path("Target.Input")) if "Input" in target else {}
    for key in set(target) - {"Arn", "Input", "RoleArn"}:
        if key in ("RetryPolicy", "DeadLetterConfig"):
            plan.ignore(
                logical_id,
                f"Target.{key}",
                "delivery to the local queue does not "
                "fail as the scheduler's can; the function's async settings apply",
            )
        else:
            plan.refuse(logical_id, f"Target.{key}", "not supported for schedules")
    for key in props.rest():
        plan.refuse(logical_id, key, "streamfn does not know this schedule property")
    plan.schedules.append(
        SchedulePlan(logical_id, name.name, name.qualifier, schedule, expression, payload, enabled)
    )


def _json(value: Any, path: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value
