"""The Invoke API against the answers real AWS gave to the same requests.

``aws_snapshots/lambda-invoke.json`` holds Invoke responses recorded from AWS (SOURCE.md in that
folder says where from). Each is replayed here with boto3 against a streamfn app whose functions
do what the recorded ones did, and botocore's parsed response must equal the recorded one:
the status code, what botocore reads from the headers (``ExecutedVersion``, ``FunctionError``,
``LogResult``, ``x-amzn-ErrorType`` as ``Error.Code``, ``Retry-After`` as
``retryAfterSeconds``) and every body field, no more and no less. The recording's placeholders
(``<uuid>``, ``<region>``, ``<function-name:1>``...) match any text; the app uses the recording's
account, so ARNs compare as they are. Recorded entries that are not replayed say why in
``NOT_REPLAYED``, and a recording added later fails until it is replayed or explained.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from streamfn import App, Context

from .support import DEADLINE, Served, serving

RECORDED: dict[str, Any] = json.loads(
    (Path(__file__).parent / "aws_snapshots" / "lambda-invoke.json").read_text()
)["invoke"]
ACCOUNT = "111111111111"  # the recording's (masked) account
REGION = "us-east-1"
USER_LOG = logging.getLogger("tests.http.aws_snapshots")
USER_LOG.setLevel(logging.INFO)

#: The request each recorded response answers, as the recording test sent it.
REQUESTS: dict[str, dict[str, Any]] = {
    "request_response": {
        "FunctionName": "echo",
        "Payload": b"{}",
        "InvocationType": "RequestResponse",
    },
    "no_return_payload": {
        "FunctionName": "no_return",
        "Payload": b"{}",
        "InvocationType": "RequestResponse",
    },
    "event": {"FunctionName": "echo", "Payload": b"{}", "InvocationType": "Event"},
    "dry_run": {"FunctionName": "echo", "Payload": b"{}", "InvocationType": "DryRun"},
    "handler_error": {"FunctionName": "handler_error"},
    "timeout": {"FunctionName": "sleeper"},
    "unknown_function": {"FunctionName": "doesnotexist"},
    "invalid_json_payload": {
        "FunctionName": "echo",
        "Payload": bytes.fromhex(RECORDED["invalid_json_payload"]["request_payload_hex"]),
    },
    "log_tail": {"FunctionName": "echo", "Payload": b"{}", "LogType": "Tail"},
    "qualifier_version": {
        "FunctionName": "integration",
        "Qualifier": "1",
        "LogType": "Tail",
        "Payload": b'{"foo": "bar with \'quotes\\""}',
    },
    "request_id": {"FunctionName": "request_id"},
    "reserved_concurrency_throttle": {
        "FunctionName": "throttled",
        "Qualifier": "$LATEST",
        "Payload": b'{"hello": "world"}',
    },
    "response_too_large": {"FunctionName": "response_size", "Payload": b'{"bytenum": 7340032}'},
    "invalid_invoke_arn": {"FunctionName": f"arn:aws:lambda:{REGION}:123400000000@function:myfn"},
}
NOT_REPLAYED = {
    "timeout_2024": "AWS's answer to a timeout until 2024; the `timeout` recording is today's",
    "client_context_nodejs": "the Node.js runtime's context object, which Python's does not have",
    "request_too_large_createfunction": "CreateFunction, an operation streamfn does not serve",
}
#: The decoded X-Amz-Log-Result recorded alongside a response, by case.
LOG_TAILS = {"log_tail": "logs", "qualifier_version": "log_result"}
#: Recorded alongside a response but not compared with anything streamfn answers.
NOT_COMPARED = {
    ("request_id", "log_entries"): "CloudWatch Logs lines, not part of the Invoke response",
}


def snapshot_app() -> App:
    """Functions doing what the recording's functions did (their files named below)."""
    app = App("aws-snapshots", region=REGION, account_id=ACCOUNT)

    @app.function()
    def echo(event: Any, context: Context) -> Any:  # lambda_echo.py
        print(json.dumps(event))
        return event

    @app.function()
    def no_return(event: Any, context: Context) -> None:
        return None

    @app.function(name="handler_error")
    def handler(event: Any, context: Context) -> None:  # lambda_handler_error.py
        raise Exception("Handler fails")

    @app.function(timeout=1)
    async def sleeper(event: Any, context: Context) -> None:  # lambda_timeout.py, Timeout=1
        await asyncio.Event().wait()

    @app.function()
    def integration(event: Any, context: Context) -> dict[str, Any]:  # lambda_integration.py
        print("Lambda log message - print function")
        USER_LOG.info("Lambda log message - logging module")
        return {
            "event": event,
            "context": {
                "invoked_function_arn": context.invoked_function_arn,
                "function_version": context.function_version,
                "function_name": context.function_name,
                "memory_limit_in_mb": context.memory_limit_in_mb,
                "aws_request_id": context.aws_request_id,
                "log_group_name": context.log_group_name,
                "log_stream_name": context.log_stream_name,
                "client_context": context.client_context,
            },
        }

    app.publish_version("integration")  # the recording invokes its version 1

    @app.function()
    def request_id(event: Any, context: Context) -> str:  # lambda_request_id.py
        USER_LOG.info("RequestId log message")
        return context.aws_request_id

    @app.function(reserved_concurrency=0)  # the recording's function had no free concurrency
    def throttled(event: Any, context: Context) -> None:
        raise AssertionError("a throttled function must not run")

    @app.function()
    def response_size(event: Any, context: Context) -> str:  # lambda_response_size.py
        size: int = event["bytenum"]
        return "a" * size

    return app


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serving(snapshot_app()) as served:
        yield served


async def replay(served: Served, request: dict[str, Any]) -> dict[str, Any]:
    """botocore's parsed answer, reduced as the recording was: the payload read (as an object
    when it is a JSON object), ResponseMetadata down to the status code."""

    def call() -> dict[str, Any]:
        try:
            response: dict[str, Any] = served.client.invoke(**request)
        except ClientError as exc:
            error: dict[str, Any] = exc.response
            return error
        text = response["Payload"].read().decode()
        try:
            payload = json.loads(text)
        except ValueError:
            payload = None
        response["Payload"] = payload if isinstance(payload, dict) else text
        return response

    async with asyncio.timeout(DEADLINE):
        response = await asyncio.to_thread(call)
    response["ResponseMetadata"] = {
        "HTTPStatusCode": response["ResponseMetadata"]["HTTPStatusCode"]
    }
    return response


_PLACEHOLDER = re.compile(r"<([^<>]+)>")


def matches(recorded: str, actual: str) -> bool:
    """Whether ``actual`` is ``recorded`` with each placeholder filled in: any text, but
    ``<a:len(N)>``, which is N times "a"."""
    parts, end = [], 0
    for placeholder in _PLACEHOLDER.finditer(recorded):
        parts.append(re.escape(recorded[end : placeholder.start()]))
        repeated = re.fullmatch(r"a:len\((\d+)\)", placeholder[1])
        parts.append("a" * int(repeated[1]) if repeated else ".+?")
        end = placeholder.end()
    parts.append(re.escape(recorded[end:]))
    return re.fullmatch("".join(parts), actual, re.DOTALL) is not None


def differences(recorded: Any, actual: Any, path: str = "$") -> list[str]:
    """Where ``actual`` departs from ``recorded``: a missing or extra key, a different value."""
    if isinstance(recorded, dict) and isinstance(actual, dict):
        found = [f"{path}.{k}: missing" for k in sorted(recorded.keys() - actual.keys())]
        found += [
            f"{path}.{k}: not in AWS's answer ({actual[k]!r})"
            for k in sorted(actual.keys() - recorded.keys())
        ]
        for key in sorted(recorded.keys() & actual.keys()):
            found += differences(recorded[key], actual[key], f"{path}.{key}")
        return found
    if isinstance(recorded, list) and isinstance(actual, list) and len(recorded) == len(actual):
        return [
            d
            for i, pair in enumerate(zip(recorded, actual, strict=True))
            for d in differences(*pair, f"{path}[{i}]")
        ]
    if isinstance(recorded, str) and isinstance(actual, str):
        return [] if matches(recorded, actual) else [f"{path}: {actual!r}, AWS: {recorded!r}"]
    if type(recorded) is type(actual) and recorded == actual:
        return []
    return [f"{path}: {actual!r}, AWS: {recorded!r}"]


def as_placeholders(recorded: Any) -> Any:
    """The recording with the values its recorder replaced by bare words, and the frames of a
    stack trace (AWS's file and line, not ours), turned into placeholders."""
    if isinstance(recorded, dict):
        return {
            k: "<log-result>" if k == "LogResult" else as_placeholders(v)
            for k, v in recorded.items()
        }
    if isinstance(recorded, list):
        return [as_placeholders(v) for v in recorded]
    if isinstance(recorded, str):
        recorded = re.sub(r'File "[^"]+", line \d+', 'File "<file>", line <line>', recorded)
        return recorded.replace("\tdate\t", "\t<date>\t")
    return recorded


def response_of(case: str) -> tuple[str, dict[str, Any]]:
    """The name and content of the recorded Invoke response of ``case``."""
    [(name, response)] = [
        (name, value)
        for name, value in RECORDED[case]["recorded"].items()
        if "ResponseMetadata" in value
    ]
    return name, response


def test_every_recorded_invoke_is_replayed_or_explained() -> None:
    replayed = {*REQUESTS, *NOT_REPLAYED, "name_qualifier_validation"}
    assert set(RECORDED) == replayed
    for case in REQUESTS:
        response, _ = response_of(case)
        others = {(case, name) for name in RECORDED[case]["recorded"] if name != response}
        assert others <= {*NOT_COMPARED, *LOG_TAILS.items()}


@pytest.mark.parametrize("case", sorted(REQUESTS))
async def test_invoke_answers_as_aws_did(served: Served, case: str) -> None:
    _, recorded = response_of(case)
    actual = await replay(served, REQUESTS[case])
    assert differences(as_placeholders(recorded), actual) == []


@pytest.mark.parametrize(("case", "logs"), sorted(LOG_TAILS.items()))
async def test_log_tail_lines_as_aws_wrote_them(served: Served, case: str, logs: str) -> None:
    """X-Amz-Log-Result, decoded and split as the recording test split it. AWS adds
    ``Init Duration`` to the REPORT line of an environment's first invocation; streamfn has no
    init phase and never writes it, so that one field is left out of the comparison."""
    recorded: list[str] = next(iter(RECORDED[case]["recorded"][logs].values()))
    recorded = [line.replace("Init Duration: <duration> ms\t", "") for line in recorded]
    response = await replay(served, REQUESTS[case])
    tail = base64.b64decode(response["LogResult"]).decode()
    if case == "log_tail":  # split keeping line ends, REPORT included
        actual = tail.splitlines(keepends=True)
    else:  # split without line ends, REPORT left out
        actual = [line for line in tail.splitlines() if not line.startswith("REPORT")]
    assert differences(as_placeholders(recorded), actual) == []


VALIDATION = RECORDED["name_qualifier_validation"]["cases"]


def reduced(error: dict[str, Any]) -> dict[str, Any]:
    """An error reduced as the recording test reduced it: the code and the sorted constraint
    violations of a ValidationException, else the code and the message."""
    code, message = error["Error"]["Code"], error["Error"]["Message"]
    counted = re.fullmatch(r"(\d+) validation errors? detected: (.*)", message, re.DOTALL)
    if code == "ValidationException" and counted is not None:
        return {"Code": code, "Count": int(counted[1]), "Errors": sorted(counted[2].split("; "))}
    return {"Code": code, "Message": message}


@pytest.mark.parametrize("case", sorted(VALIDATION))
async def test_name_and_qualifier_validation_answers_as_aws_did(served: Served, case: str) -> None:
    request = {
        key: value.format(account_id=ACCOUNT, region_name=REGION)
        for key, value in VALIDATION[case]["request"].items()
    }
    error = await replay(served, request)
    assert differences(VALIDATION[case]["recorded"], reduced(error)) == []
