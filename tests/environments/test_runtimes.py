"""AWS's runtime interface clients run unchanged as execution environments over streamfn's
Runtime API: ``awslambdaric`` running a Python handler, and a custom runtime ``bootstrap``
written in bash with curl, each invoked with boto3 and as a mapping's handler."""

from __future__ import annotations

import base64
import json
import shutil
import sys
from pathlib import Path

import pytest

from streamfn import App
from streamfn.execution import Command, runtime_api
from streamfn.testing import MemorySource, wait_until

from ..http.support import invoke, serving

BOOTSTRAP = str(Path(__file__).with_name("bootstrap"))
REPORT = ["ReportBatchItemFailures"]

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="the bootstrap needs curl")


def ric(handler: str, **env: str) -> Command:
    return Command([sys.executable, "-m", "awslambdaric", handler], handler=handler, env=env)


async def test_awslambdaric_runs_a_python_handler_invoked_with_boto3_and_by_a_mapping(
    tmp_path: Path,
) -> None:
    batches = tmp_path / "batches"
    app = App()
    app.function(name="ric_echo", timeout=5)(ric("tests.environments.handlers.echo"))
    app.function(name="ric_fail")(ric("tests.environments.handlers.fail"))
    source = MemorySource()
    app.consume(source, name="ric_partial", event_format="lambda", function_response_types=REPORT)(
        ric("tests.environments.handlers.partial", BATCHES_OUT=str(batches))
    )
    async with serving(app) as served:
        response, first = await invoke(
            served.client, FunctionName="ric_echo", Payload=json.dumps({"n": 1})
        )
        tailed, second = await invoke(
            served.client, FunctionName="ric_echo", Payload="2", LogType="Tail"
        )
        response, error = await invoke(served.client, FunctionName="ric_fail", Payload="3")
        for value in (b"ok", b"bad", b"ok"):
            source.append("p0", value)
        await wait_until(lambda: source.committed.get("p0") == 3)
    assert first["event"] == {"n": 1} and first["function_name"] == "ric_echo"
    assert first["request_id"] != second["request_id"]
    assert 0 < first["remaining_ms"] <= 5000
    assert (second["pid"], second["invocations"]) == (first["pid"], 2)  # warm, module state
    log = base64.b64decode(tailed["LogResult"]).decode()
    assert "echo 2\n" in log  # the runtime's own output, in the tail
    assert log.startswith(f"START RequestId: {second['request_id']} Version: $LATEST\n")
    assert response["FunctionError"] == "Unhandled"
    assert (error["errorType"], error["errorMessage"]) == ("ValueError", "bad 3")
    assert batches.read_text() == "0 1 2\n1 2\n"  # the stream rewound to the failed record


async def test_a_bash_bootstrap_runs_invoked_with_boto3_and_by_a_mapping() -> None:
    app = App()
    app.function(name="sh", timeout=5)(Command([BOOTSTRAP]))
    source = MemorySource()
    app.consume(source, name="sh_batch", event_format="lambda")(Command([BOOTSTRAP]))
    async with serving(app) as served:
        _, payload = await invoke(served.client, FunctionName="sh", Payload=json.dumps([1, 2]))
        response, error = await invoke(served.client, FunctionName="sh", Payload='"fail"')
        source.append("p0", b"one")
        source.append("p0", b"two")
        await wait_until(lambda: source.committed.get("p0") == 2)
    assert payload["echo"] == [1, 2] and payload["function"] == "sh"
    assert payload["arn"] == "arn:aws:lambda:us-east-1:000000000000:function:sh"
    assert payload["deadline_ms"] > 0
    assert response["FunctionError"] == "Unhandled"
    assert error == {"errorMessage": "shell said no", "errorType": "ShellError"}


async def test_a_bootstrap_init_error_is_answered_and_so_is_an_init_past_its_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime_api, "INIT_TIMEOUT", 0.5)  # Lambda's 10 s, shortened
    app = App()
    app.function(name="refuses")(Command([BOOTSTRAP], env={"BOOTSTRAP_INIT_FAIL": "1"}))
    app.function(name="stalls", timeout=0.5)(Command(["sleep", "60"]))
    refused = await app.invoke("refuses", None)
    assert refused.error == {
        "errorMessage": "bootstrap refused to start",
        "errorType": "InitFailed",
    }
    stalled = await app.invoke("stalls", None)  # never asks for an event: init never ends
    assert stalled.error is not None and stalled.error["errorType"] == "Runtime.InitError"
