"""Helpers for the template tests: a SAM app written into a temporary directory, its queues,
streams and tables created on moto, the app planned and built the way ``streamfn run`` builds
it, and what its handlers recorded read back."""

from __future__ import annotations

import asyncio
import json
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from streamfn.sam import Built, LoadOptions, build_app, plan_template, prepare
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
    secrets: dict[str, dict[str, Any]] | None = None,
    **options: Any,
) -> Built:
    plan = plan_template(path, LoadOptions(**options))
    if create:
        create_resources(plan)
    return build_app(
        plan,
        state_dir=state_dir or path.parent / ".streamfn",
        app_options=app_options,
        secrets=secrets,
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


def create_resources(plan: Plan) -> list[str]:
    """The template's queues, streams and tables on moto (where AWS_ENDPOINT_URL points), as
    ``streamfn run --create-resources`` creates them; on a thread with a loop of its own, so
    synchronous tests and async ones (inside a running loop) both can call it."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, prepare.create_resources(plan)).result()
