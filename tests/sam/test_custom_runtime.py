"""Custom runtimes from a template: a ``provided.al2023`` function (SAM, and a plain
AWS::Lambda::Function) runs the executable ``bootstrap`` of its code directory over the Lambda
Runtime API, with the template's settings, invoked by the Invoke API and fed by an SQS
mapping; without a bootstrap, or in another language's runtime, it is listed as unsupported,
naming the function and what is missing."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import boto3
import pytest

from streamfn.errors import ConfigError
from streamfn.execution import Command
from streamfn.sam import LoadOptions, build_app, plan_template
from streamfn.sam.handlers import load_handler
from streamfn.sam.report import describe
from streamfn.testing import wait_until

from ..http.support import invoke, serving
from .support import DEADLINE, build, records, write_app

CODE = Path(__file__).resolve().with_name("custom_runtime")

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="the bootstrap needs curl")

TEMPLATE = f"""\
    Transform: AWS::Serverless-2016-10-31
    Parameters:
      Suffix: {{Type: String}}
      Records: {{Type: String}}
    Resources:
      Jobs:
        Type: AWS::SQS::Queue
        Properties:
          QueueName: !Sub "jobs-${{Suffix}}"
          VisibilityTimeout: 2
      Shell:
        Type: AWS::Serverless::Function
        Properties:
          Runtime: provided.al2023
          Handler: function.handler
          CodeUri: {CODE}
          Timeout: 4
          MemorySize: 256
          ReservedConcurrentExecutions: 2
          Environment: {{Variables: {{GREETING: hello, RECORDS: !Ref Records}}}}
          Events:
            Queue:
              Type: SQS
              Properties: {{Queue: !GetAtt Jobs.Arn, BatchSize: 2}}
      Plain:
        Type: AWS::Lambda::Function
        Properties:
          Runtime: provided.al2
          Handler: plain
          Code: {CODE}
          Role: arn:aws:iam::123456789012:role/plain
          Environment: {{Variables: {{GREETING: hi, RECORDS: !Sub "${{Records}}.plain"}}}}
      Py:
        Type: AWS::Serverless::Function
        Properties:
          Runtime: python3.11
          Handler: py.handler
          CodeUri: py
          Environment: {{Variables: {{PYTHON_ONLY: set for Py alone}}}}
"""
PY = {"py/py.py": "def handler(event, context):\n    return event\n"}


def test_the_fixture_bootstrap_is_executable_as_git_stores_it() -> None:
    mode = (CODE / "bootstrap").stat().st_mode
    assert stat.S_IMODE(mode) == 0o755


async def test_a_custom_runtime_runs_its_bootstrap_invoked_and_fed_by_sqs(
    tmp_path: Path, aws_endpoint: str
) -> None:
    path = write_app(tmp_path, TEMPLATE, PY)
    suffix = tmp_path.name[-20:].replace("_", "-")
    out = tmp_path / "records.jsonl"
    built = build(path, create=True, parameter_overrides={"Suffix": suffix, "Records": str(out)})
    shell = built.app.functions["Shell"]
    assert isinstance(shell.handler, Command)
    config = shell.config
    assert (config.timeout, config.memory_size, config.reserved_concurrency) == (4, 256, 2)
    sqs = boto3.client("sqs", endpoint_url=aws_endpoint)
    url = sqs.get_queue_url(QueueName=f"jobs-{suffix}")["QueueUrl"]
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"id": i}))

    def ids() -> list[int]:
        batches = [r["Records"] for r in records(out) if isinstance(r, dict) and "Records" in r]
        return sorted(json.loads(m["body"])["id"] for batch in batches for m in batch)

    async with serving(built.app) as served:
        _, answer = await invoke(served.client, FunctionName="Shell", Payload='{"n": 1}')
        plain = await built.app.invoke("Plain", [1, 2])
        await wait_until(lambda: ids() == [0, 1, 2], timeout=DEADLINE)
    assert answer == {
        "echo": {"n": 1},
        "handler": "function.handler",
        "cwd": str(CODE),
        "task_root": str(CODE),
        "banner": "read from the code directory",
        "greeting": "hello",
        "python_only": "unset",  # a Python function's variable stays out of other sandboxes
        "function": "Shell",
        "memory": 256,
        "timeout": 4,
    }
    assert plain.error is None
    assert {k: plain.value[k] for k in ("echo", "handler", "greeting", "memory", "timeout")} == {
        "echo": [1, 2],
        "handler": "plain",
        "greeting": "hi",  # another value than Shell's: each runtime has its own process
        "memory": 128,
        "timeout": 3,
    }
    batches = [r for r in records(out) if isinstance(r, dict) and "Records" in r]
    assert all(len(b["Records"]) <= 2 for b in batches)
    assert {m["eventSource"] for b in batches for m in b["Records"]} == {"aws:sqs"}


def test_validate_says_a_custom_runtime_runs_over_the_runtime_api(tmp_path: Path) -> None:
    path = write_app(tmp_path, TEMPLATE, PY)
    plan = plan_template(path, LoadOptions(parameter_overrides={"Suffix": "x", "Records": "r"}))
    text = describe(plan)
    assert plan.unsupported == []
    assert f"  Shell: provided.al2023 function.handler from CodeUri {CODE}; timeout 4 s" in text
    assert (
        f"    custom runtime: runs {CODE / 'bootstrap'} over the Lambda Runtime API, in a "
        f"process of its own, in {CODE} (LAMBDA_TASK_ROOT)"
    ) in text
    command = load_handler(plan.functions["Shell"], {"GREETING": "from the worker"})
    assert isinstance(command, Command)
    assert command.env == {"RECORDS": "r", "LAMBDA_TASK_ROOT": str(CODE)}  # the worker's wins


UNSUPPORTED = """\
    Transform: AWS::Serverless-2016-10-31
    Resources:
      Empty:
        Type: AWS::Serverless::Function
        Properties: {Runtime: provided.al2023, Handler: bootstrap, CodeUri: empty/}
      NotExecutable:
        Type: AWS::Serverless::Function
        Properties: {Runtime: provided, Handler: x, CodeUri: plain/}
      Node:
        Type: AWS::Serverless::Function
        Properties: {Runtime: nodejs20.x, Handler: index.handler, CodeUri: plain/}
      Inline:
        Type: AWS::Lambda::Function
        Properties:
          Runtime: provided.al2023
          Handler: x
          Code: {ZipFile: "echo hi"}
"""


def test_a_custom_runtime_without_a_bootstrap_is_unsupported_naming_the_file(
    tmp_path: Path,
) -> None:
    path = write_app(tmp_path, UNSUPPORTED, {"empty/.keep": "", "plain/bootstrap": "#!/bin/sh\n"})
    root = tmp_path.resolve()
    plan = plan_template(path, LoadOptions())
    notes = [str(n) for n in plan.unsupported]
    assert sorted(notes) == [
        f"Empty.Runtime: function 'Empty' (runtime provided.al2023) has no "
        f"{root / 'empty' / 'bootstrap'}: a custom runtime runs the executable bootstrap "
        "at the root of its code",
        "Inline.Runtime: function 'Inline' (runtime provided.al2023) has inline code; a "
        "custom runtime runs the executable bootstrap of its CodeUri directory",
        "Node.Runtime: function 'Node' uses runtime 'nodejs20.x'; streamfn runs Python "
        "functions, and other languages as a custom runtime (Runtime: provided.al2023 with an "
        "executable bootstrap in CodeUri), which it runs over the Lambda Runtime API",
        f"NotExecutable.Runtime: function 'NotExecutable' (runtime provided): "
        f"{root / 'plain' / 'bootstrap'} is not executable (chmod +x)",
    ]
    text = describe(plan)
    assert "Unsupported (streamfn run refuses them unless --skip-unsupported):" in text
    assert "custom runtime: runs" not in text
    with pytest.raises(ConfigError, match=r"Resources\.\w+\.Runtime: .*\(and 3 more\)"):
        build_app(plan, state_dir=tmp_path / "s")
    built = build_app(plan, skip_unsupported=True, state_dir=tmp_path / "s")
    assert built.skipped == ["Empty", "Inline", "Node", "NotExecutable"]
