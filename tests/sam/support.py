"""Helpers for the template tests: a SAM app written into a temporary directory, its queues,
streams and tables created on moto, the app planned and built the way ``streamfn run`` builds
it, and what its handlers recorded read back."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import boto3

from streamfn.sam import Built, LoadOptions, build_app, plan_template
from streamfn.sam.plan import Plan

DEADLINE = 20.0


def write_app(
    directory: Path, template: str, code: dict[str, str] | None = None, name: str = "template.yaml"
) -> Path:
    """``template`` (dedented) at ``directory/name`` and ``code`` files under it."""
    for relative, text in (code or {}).items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    path = directory / name
    path.write_text(textwrap.dedent(template))
    return path


def build(
    path: Path,
    *,
    create: bool = False,
    state_dir: Path | None = None,
    app_options: dict[str, Any] | None = None,
    **options: Any,
) -> Built:
    plan = plan_template(path, LoadOptions(**options))
    if create:
        create_resources(plan)
    return build_app(
        plan, state_dir=state_dir or path.parent / ".streamfn", app_options=app_options
    )


#: A module for the apps' handlers: ``record(...)`` appends one JSON line to the file named by
#: RECORDS. Handlers run in execution environments (processes of their own), so what they
#: saw comes back through a file, as it would from Lambda through a log.
RECORDER = """\
    import json
    import os


    def record(**item):
        with open(os.environ["RECORDS"], "a") as file:
            file.write(json.dumps(item) + "\\n")
"""


def records(path: Path) -> list[dict[str, Any]]:
    """What the handlers recorded so far (a line being written is left for the next read)."""
    if not path.exists():
        return []
    lines = path.read_text().split("\n")[:-1]
    return [json.loads(line) for line in lines]


def create_resources(plan: Plan) -> None:
    """The template's queues, streams and tables on moto (where AWS_ENDPOINT_URL points),
    with the properties that shape what the functions see."""
    template = plan.template
    resources = template.resources
    ordered = sorted(plan.resources, key=lambda i: "RedrivePolicy" in resources.properties(i))
    for logical_id in ordered:
        kind, name = plan.resources[logical_id], resources.name(logical_id)
        path = f"Resources.{logical_id}.Properties"
        props = template.resolver.value(resources.properties(logical_id), path)
        if kind == "AWS::SQS::Queue":
            attributes = {
                k: json.dumps(v)
                if isinstance(v, dict)
                else str(v).lower()
                if isinstance(v, bool)
                else str(v)
                for k, v in props.items()
                if k not in ("QueueName", "Tags")
            }
            boto3.client("sqs").create_queue(QueueName=name, Attributes=attributes)
        elif kind == "AWS::Kinesis::Stream":
            kinesis = boto3.client("kinesis")
            kinesis.create_stream(StreamName=name, ShardCount=int(props.get("ShardCount", 1)))
            kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.1})
        else:
            fields = {k: v for k, v in props.items() if k != "TableName"}
            if "StreamSpecification" in fields:
                fields["StreamSpecification"] = {
                    "StreamEnabled": True,
                    **fields["StreamSpecification"],
                }
            boto3.client("dynamodb").create_table(TableName=name, **fields)
