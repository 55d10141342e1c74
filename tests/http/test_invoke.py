"""The Invoke API over real sockets: boto3's lambda client for what SDK users see, raw HTTP for
what boto3 cannot send (bad JSON, oversized or chunked bodies, odd headers), and the
``streamfn run`` CLI as a subprocess."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from streamfn import App, ConfigError, Context
from streamfn.connectors import http
from streamfn.connectors.http.wire import Message

from .support import (
    ACCOUNT,
    APPS,
    ARN,
    DEADLINE,
    Served,
    invoke,
    invoke_error,
    lambda_client,
    log_record,
    raw_request,
    serving,
    start_cli,
    streamfn_run,
    wait_until_refusing,
)


@dataclass
class Probe:
    """What the handlers saw, and the gate that holds ``blocking`` in flight."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    completed: list[str] = field(default_factory=list)
    received: asyncio.Queue[tuple[Any, str]] = field(default_factory=asyncio.Queue)


USER_LOG = logging.getLogger("tests.http.user")
USER_LOG.setLevel(logging.INFO)


def make_app(probe: Probe) -> App:
    app = App("http-test", account_id=ACCOUNT)

    @app.function()
    async def echo(event: Any, context: Context) -> Any:
        return event

    @app.function()
    async def whoami(event: Any, context: Context) -> dict[str, Any]:
        cc = context.client_context
        return {
            "requestId": context.aws_request_id,
            "arn": context.invoked_function_arn,
            "custom": cc.custom if cc else None,
        }

    @app.function()
    async def boom(event: Any, context: Context) -> None:
        raise ValueError("bad input")

    @app.function(reserved_concurrency=1)
    async def blocking(event: Any, context: Context) -> str:
        probe.entered.set()
        await probe.gate.wait()
        probe.completed.append(context.aws_request_id)
        return "released"

    @app.function(reserved_concurrency=0)
    async def disabled(event: Any, context: Context) -> None:
        raise AssertionError("a function with reserved concurrency 0 must never run")

    @app.function()
    async def record(event: Any, context: Context) -> None:
        await probe.received.put((event, context.aws_request_id))

    @app.function()
    def sync_handler(event: Any, context: Context) -> dict[str, Any]:
        return {"thread": threading.current_thread().name, "event": event}

    @app.function(timeout=0.25)
    async def sleepy(event: Any, context: Context) -> None:
        await asyncio.Event().wait()  # never set: runs into the function timeout

    @app.function()
    async def unserialisable(event: Any, context: Context) -> set[int]:
        return {1, 2}

    @app.function()
    async def huge(event: Any, context: Context) -> str:
        return "x" * http.RESPONSE_LIMIT  # with its quotes, two bytes over the limit

    @app.function()
    async def chatty(event: Any, context: Context) -> str:
        USER_LOG.info("working on %s", event["marker"])
        print(f"printed {event['marker']}")
        await asyncio.sleep(event.get("sleep", 0))
        USER_LOG.info("x" * event.get("noise", 0))
        if event.get("fail"):
            raise ValueError(f"failed {event['marker']}")
        return event["marker"]

    return app


@dataclass
class Server(Served):
    probe: Probe = field(default_factory=Probe)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    probe = Probe()
    app = make_app(probe)
    async with serving(app) as served:
        try:
            yield Server(**vars(served), probe=probe)
        finally:
            probe.gate.set()


async def test_invoke_returns_the_handler_result(server: Server) -> None:
    async with asyncio.timeout(DEADLINE):
        payload = {"a": [1, 2, {"b": None}], "s": "é"}
        response, result = await invoke(
            server.client, FunctionName="echo", Payload=json.dumps(payload)
        )
    assert response["StatusCode"] == 200
    assert response["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in response
    assert result == payload


async def test_request_id_header_is_the_invocation_request_id(server: Server) -> None:
    async with asyncio.timeout(DEADLINE):
        response, result = await invoke(server.client, FunctionName="whoami")
    assert result["requestId"] == response["ResponseMetadata"]["RequestId"]
    assert result["arn"] == f"{ARN}:whoami"


async def test_empty_body_is_a_null_event(server: Server) -> None:
    async with asyncio.timeout(DEADLINE):
        response = await raw_request(server.port, "POST", "/2015-03-31/functions/echo/invocations")
    assert response.status == 200
    assert response.body == b"null"
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-amz-executed-version"] == "$LATEST"


async def test_function_error_is_a_200_with_unhandled_and_the_error_object(
    server: Server,
) -> None:
    async with asyncio.timeout(DEADLINE):
        response, error = await invoke(server.client, FunctionName="boom", Payload=b"{}")
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "bad input"
    assert error["requestId"] == response["ResponseMetadata"]["RequestId"]
    assert isinstance(error["stackTrace"], list)


async def test_handler_timeout_reports_task_timed_out(server: Server) -> None:
    async with asyncio.timeout(DEADLINE):
        response, error = await invoke(server.client, FunctionName="sleepy")
    assert response["FunctionError"] == "Unhandled"
    request_id = response["ResponseMetadata"]["RequestId"]
    assert error == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {request_id} Error: Task timed out after 0.25 seconds",
    }


async def test_sync_handler_runs_on_the_handler_threads(server: Server) -> None:
    async with asyncio.timeout(DEADLINE):
        _, result = await invoke(server.client, FunctionName="sync_handler", Payload=b"[1]")
    assert result["event"] == [1]
    assert result["thread"].startswith("streamfn-handler")


async def test_unserialisable_result_is_a_marshal_error(server: Server) -> None:
    async with asyncio.timeout(DEADLINE):
        response, error = await invoke(server.client, FunctionName="unserialisable")
    assert response["FunctionError"] == "Unhandled"
    assert error["errorType"] == "Runtime.MarshalError"
    assert error["errorMessage"].startswith("Unable to marshal response: ")


async def test_response_over_the_limit_is_a_function_error(server: Server) -> None:
    async with asyncio.timeout(DEADLINE):
        response, error = await invoke(server.client, FunctionName="huge")
    assert response["FunctionError"] == "Unhandled"
    assert error == {
        "errorMessage": (
            f"Response payload size exceeded maximum allowed payload size "
            f"({http.RESPONSE_LIMIT} bytes)."
        ),
        "errorType": "Function.ResponseSizeTooLarge",
    }


async def test_unknown_function_is_resource_not_found(server: Server) -> None:
    async with asyncio.timeout(DEADLINE):
        error = await invoke_error(server.client, FunctionName="missing")
        raw = await raw_request(server.port, "POST", "/2015-03-31/functions/missing/invocations")
    assert error["Error"]["Code"] == "ResourceNotFoundException"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert raw.status == 404
    assert raw.headers["x-amzn-errortype"] == "ResourceNotFoundException"
    assert raw.headers["x-amzn-requestid"]
    assert raw.json() == {
        "Type": "User",
        "Message": f"Function not found: {ARN}:missing:$LATEST",
    }


@pytest.mark.parametrize(
    ("function_name", "qualifier", "invoked_arn"),
    [
        ("whoami", None, f"{ARN}:whoami"),
        ("whoami:$LATEST", None, f"{ARN}:whoami:$LATEST"),
        ("whoami", "$LATEST", f"{ARN}:whoami:$LATEST"),
        (f"{ACCOUNT}:function:whoami", None, f"{ARN}:whoami"),
        (f"{ARN}:whoami", None, f"{ARN}:whoami"),
        (f"{ARN}:whoami:$LATEST", "$LATEST", f"{ARN}:whoami:$LATEST"),
    ],
)
async def test_function_name_forms_and_qualifier(
    server: Server, function_name: str, qualifier: str | None, invoked_arn: str
) -> None:
    kwargs = {"Qualifier": qualifier} if qualifier else {}
    async with asyncio.timeout(DEADLINE):
        response, result = await invoke(server.client, FunctionName=function_name, **kwargs)
    assert response["StatusCode"] == 200
    assert result["arn"] == invoked_arn


@pytest.mark.parametrize(
    ("function_name", "qualifier", "code"),
    [
        ("whoami", "v7", "ResourceNotFoundException"),
        ("whoami:prod", None, "ResourceNotFoundException"),
        (
            "arn:aws:lambda:eu-west-1:000000000000:function:whoami",
            None,
            "ResourceNotFoundException",
        ),
        ("111111111111:function:whoami", None, "ResourceNotFoundException"),
        ("whoami:$LATEST", "v1", "InvalidParameterValueException"),
    ],
)
async def test_unknown_qualifier_or_foreign_arn_is_refused(
    server: Server, function_name: str, qualifier: str | None, code: str
) -> None:
    kwargs = {"Qualifier": qualifier} if qualifier else {}
    async with asyncio.timeout(DEADLINE):
        error = await invoke_error(server.client, FunctionName=function_name, **kwargs)
    assert error["Error"]["Code"] == code


async def test_malformed_function_name_is_a_validation_error(server: Server) -> None:
    async with asyncio.timeout(DEADLINE):
        raw = await raw_request(server.port, "POST", "/2015-03-31/functions/a:b:c/invocations")
    assert raw.status == 400
    assert raw.headers["x-amzn-errortype"] == "ValidationException"


async def test_invalid_json_body_is_invalid_request_content(server: Server) -> None:
    async with asyncio.timeout(DEADLINE):
        raw = await raw_request(
            server.port, "POST", "/2015-03-31/functions/echo/invocations", b"{not json"
        )
    assert raw.status == 400
    assert raw.headers["x-amzn-errortype"] == "InvalidRequestContentException"
    assert raw.headers["x-amzn-requestid"]
    body = raw.json()
    assert body["Type"] == "User"
    assert body["message"].startswith("Could not parse request body into json: ")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_body_over_6_mb_is_413(server: Server, chunked: bool) -> None:
    body = b'"' + b"x" * (http.SYNC_PAYLOAD_LIMIT - 1) + b'"'  # one byte over
    async with asyncio.timeout(DEADLINE):
        raw = await raw_request(
            server.port, "POST", "/2015-03-31/functions/echo/invocations", body, chunked=chunked
        )
    assert raw.status == 413
    assert raw.headers["x-amzn-errortype"] == "RequestEntityTooLargeException"
    assert raw.json() == {
        "Type": "User",
        "message": "Request must be smaller than 6291456 bytes for the InvokeFunction operation",
    }


async def test_body_over_6_mb_via_boto3(server: Server) -> None:
    payload = b'"' + b"x" * http.SYNC_PAYLOAD_LIMIT + b'"'
    async with asyncio.timeout(DEADLINE):
        error = await invoke_error(server.client, FunctionName="echo", Payload=payload)
    assert error["Error"]["Code"] == "RequestEntityTooLargeException"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 413


async def test_body_of_exactly_6_mb_is_accepted(server: Server) -> None:
    payload = b'"' + b"x" * (http.SYNC_PAYLOAD_LIMIT - 2) + b'"'
    async with asyncio.timeout(DEADLINE):
        response, result = await invoke(server.client, FunctionName="echo", Payload=payload)
    assert response["StatusCode"] == 200
    assert len(result) == http.SYNC_PAYLOAD_LIMIT - 2


async def test_reserved_concurrency_in_use_is_429(server: Server) -> None:
    async with asyncio.timeout(DEADLINE):
        first = asyncio.create_task(invoke(server.client, FunctionName="blocking"))
        await server.probe.entered.wait()
        raw = await raw_request(server.port, "POST", "/2015-03-31/functions/blocking/invocations")
        error = await invoke_error(server.client, FunctionName="blocking")
        server.probe.gate.set()
        response, result = await first
        _, again = await invoke(server.client, FunctionName="blocking")
    assert raw.status == 429
    assert "retry-after" not in raw.headers
    assert raw.headers["x-amzn-errortype"] == "TooManyRequestsException"
    assert raw.json() == {
        "Type": "User",
        "message": "Rate Exceeded.",
        "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded",
    }
    assert error["Error"]["Code"] == "TooManyRequestsException"
    assert error["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert (response["StatusCode"], result, again) == (200, "released", "released")


async def test_reserved_concurrency_zero_is_always_429_when_synchronous(server: Server) -> None:
    async with asyncio.timeout(DEADLINE):
        error = await invoke_error(server.client, FunctionName="disabled")
        response, _ = await invoke(server.client, FunctionName="disabled", InvocationType="Event")
    assert error["Error"]["Code"] == "TooManyRequestsException"
    assert response["StatusCode"] == 202  # queued, then sent on as ZeroReservedConcurrency


async def test_client_context_reaches_the_handler(server: Server) -> None:
    context = {"custom": {"tenant": "t1"}, "env": {"locale": "en"}, "client": {"app_title": "a"}}
    encoded = base64.b64encode(json.dumps(context).encode()).decode()
    async with asyncio.timeout(DEADLINE):
        _, result = await invoke(server.client, FunctionName="whoami", ClientContext=encoded)
    assert result["custom"] == {"tenant": "t1"}


@pytest.mark.parametrize(
    "header",
    [
        "not base64!",
        base64.b64encode(b"{not json").decode(),
        base64.b64encode(b"[1, 2]").decode(),
        base64.b64encode(json.dumps({"custom": {"k": "v" * 2700}}).encode()).decode(),
    ],
    ids=["not-base64", "not-json", "not-an-object", "over-3583-bytes"],
)
async def test_invalid_client_context_is_400(server: Server, header: str) -> None:
    async with asyncio.timeout(DEADLINE):
        raw = await raw_request(
            server.port,
            "POST",
            "/2015-03-31/functions/whoami/invocations",
            headers={"X-Amz-Client-Context": header},
        )
    assert raw.status == 400
    assert raw.headers["x-amzn-errortype"] == "InvalidRequestContentException"


async def test_event_is_accepted_then_runs_in_the_background(server: Server) -> None:
    async with asyncio.timeout(DEADLINE):
        response, body = await invoke(
            server.client, FunctionName="record", InvocationType="Event", Payload=b'{"n": 1}'
        )
        event, request_id = await server.probe.received.get()
    assert response["StatusCode"] == 202
    assert body is None
    assert event == {"n": 1}
    assert request_id == response["ResponseMetadata"]["RequestId"]


async def test_failed_event_invocation_is_logged(server: Server) -> None:
    with log_record("streamfn.async", "async invocation failed") as failed:
        async with asyncio.timeout(DEADLINE):
            response, _ = await invoke(server.client, FunctionName="boom", InvocationType="Event")
            record = await failed
    assert response["StatusCode"] == 202
    assert record.__dict__["errorType"] == "ValueError"
    assert record.__dict__["requestId"] == response["ResponseMetadata"]["RequestId"]
    assert record.__dict__["attempt"] == 1


async def test_event_over_1_mb_is_413(server: Server) -> None:
    body = b'"' + b"x" * http.EVENT_PAYLOAD_LIMIT + b'"'
    async with asyncio.timeout(DEADLINE):
        raw = await raw_request(
            server.port,
            "POST",
            "/2015-03-31/functions/record/invocations",
            body,
            {"X-Amz-Invocation-Type": "Event"},
        )
    assert raw.status == 413
    assert raw.json()["message"] == (
        f"{len(body)} byte payload is too large for the Event invocation type "
        f"(limit {http.EVENT_PAYLOAD_LIMIT} bytes)"
    )


async def test_dry_run_is_204_and_does_not_run(server: Server) -> None:
    async with asyncio.timeout(DEADLINE):
        response, body = await invoke(server.client, FunctionName="record", InvocationType="DryRun")
        error = await invoke_error(server.client, FunctionName="missing", InvocationType="DryRun")
    assert response["StatusCode"] == 204
    assert body is None
    assert server.probe.received.empty()
    assert error["Error"]["Code"] == "ResourceNotFoundException"


async def test_unknown_invocation_type_is_400(server: Server) -> None:
    async with asyncio.timeout(DEADLINE):
        raw = await raw_request(
            server.port,
            "POST",
            "/2015-03-31/functions/echo/invocations",
            headers={"X-Amz-Invocation-Type": "Later"},
        )
    assert raw.status == 400
    assert raw.headers["x-amzn-errortype"] == "InvalidParameterValueException"


async def test_health_unknown_routes_and_wrong_methods(server: Server) -> None:
    async with asyncio.timeout(DEADLINE):
        health = await raw_request(server.port, "GET", "/health")
        unknown = await raw_request(server.port, "GET", "/2015-03-31/functions")
        wrong = await raw_request(server.port, "GET", "/2015-03-31/functions/echo/invocations")
        post_health = await raw_request(server.port, "POST", "/health")
    assert (health.status, health.json()) == (200, {"status": "ok"})
    assert unknown.status == 404
    assert unknown.headers["x-amzn-errortype"] == "UnknownOperationException"
    assert (wrong.status, wrong.headers["allow"]) == (405, "POST")
    assert (post_health.status, post_health.headers["allow"]) == (405, "GET")
    for response in (health, unknown, wrong, post_health):
        assert response.headers["x-amzn-requestid"]


async def test_stop_lets_in_flight_requests_finish(server: Server) -> None:
    async with asyncio.timeout(DEADLINE):
        in_flight = asyncio.create_task(invoke(server.client, FunctionName="blocking"))
        await server.probe.entered.wait()
        server.stop.set()
        await wait_until_refusing(server.port)
        server.probe.gate.set()
        response, result = await in_flight
        await server.task
    assert (response["StatusCode"], result) == (200, "released")


async def test_stop_waits_for_accepted_events(server: Server) -> None:
    async with asyncio.timeout(DEADLINE):
        response, _ = await invoke(server.client, FunctionName="blocking", InvocationType="Event")
        await server.probe.entered.wait()
        server.stop.set()
        await wait_until_refusing(server.port)
        assert not server.task.done()
        server.probe.gate.set()
        await server.task
    assert server.probe.completed == [response["ResponseMetadata"]["RequestId"]]


async def test_port_in_use_is_a_config_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        async with asyncio.timeout(DEADLINE):
            with pytest.raises(ConfigError, match=rf"^cannot listen on 127\.0\.0\.1:{port}: "):
                await http.serve(App(), asyncio.Event(), port=port)


async def test_asgi_app_is_mountable_without_a_server() -> None:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/health", "query_string": b"", "headers": []}
    async with asyncio.timeout(DEADLINE):
        await http.asgi_app(App())(scope, receive, send)
    assert sent[0]["status"] == 200
    assert json.loads(sent[1]["body"]) == {"status": "ok"}


async def test_cli_serves_the_invoke_api_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    async with streamfn_run(f"{APPS}/hello_app.py:app", "--state-dir", str(tmp_path)) as cli:
        client = lambda_client(cli.port)
        async with asyncio.timeout(DEADLINE):
            response, result = await invoke(
                client, FunctionName="hello", Payload=b'{"name": "cli"}'
            )
        client.close()
        returncode = await cli.terminate()
    assert result == {
        "message": "hello cli",
        "requestId": response["ResponseMetadata"]["RequestId"],
    }
    assert returncode == 0
    assert cli.lines[-1]["message"] == "stopped"
    listening = next(line for line in cli.lines if line["message"] == "listening")
    assert listening["host"] == "127.0.0.1"  # loopback unless told otherwise
    greeting = next(line for line in cli.lines if line["message"] == "greeting cli")
    assert greeting["requestId"] == response["ResponseMetadata"]["RequestId"]


async def test_cli_bad_target_exits_2() -> None:
    async with asyncio.timeout(DEADLINE):
        proc = await start_cli("run", "nope:app", "--port", "0")
        _, stderr = await proc.communicate()
    assert proc.returncode == 2
    assert "streamfn: error: cannot import 'nope'" in stderr.decode()


async def test_cli_busy_port_exits_2(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        async with asyncio.timeout(DEADLINE):
            proc = await start_cli(
                "run", f"{APPS}/hello_app.py:app", "--port", str(port), "--state-dir", str(tmp_path)
            )
            _, stderr = await proc.communicate()
    assert proc.returncode == 2
    assert f"streamfn: error: cannot listen on 127.0.0.1:{port}: " in stderr.decode()


def decode_tail(response: dict[str, Any]) -> str:
    return base64.b64decode(response["LogResult"]).decode(errors="replace")


async def test_log_type_tail_returns_the_invocations_log(server: Server) -> None:
    async with asyncio.timeout(DEADLINE):
        response, result = await invoke(
            server.client, FunctionName="chatty", LogType="Tail", Payload=b'{"marker": "m1"}'
        )
        plain, _ = await invoke(server.client, FunctionName="chatty", Payload=b'{"marker": "m2"}')
    request_id = response["ResponseMetadata"]["RequestId"]
    lines = decode_tail(response).splitlines()
    assert result == "m1"
    assert lines[0] == f"START RequestId: {request_id} Version: $LATEST"
    assert lines[1].startswith("[INFO]\t") and lines[1].endswith(f"\t{request_id}\tworking on m1")
    assert "printed m1" in lines
    assert lines[-2] == f"END RequestId: {request_id}"
    assert lines[-1].startswith(f"REPORT RequestId: {request_id}\tDuration: ")
    assert "Billed Duration: " in lines[-1] and "Memory Size: 128 MB" in lines[-1]
    assert "LogResult" not in plain


async def test_tail_of_a_failed_invocation_shows_the_error(server: Server) -> None:
    async with asyncio.timeout(DEADLINE):
        response, error = await invoke(
            server.client,
            FunctionName="chatty",
            LogType="Tail",
            Payload=b'{"marker": "m3", "fail": true}',
        )
    assert (response["FunctionError"], error["errorMessage"]) == ("Unhandled", "failed m3")
    assert "[ERROR] ValueError: failed m3" in decode_tail(response)


async def test_tail_is_the_last_4_kb(server: Server) -> None:
    async with asyncio.timeout(DEADLINE):
        response, _ = await invoke(
            server.client,
            FunctionName="chatty",
            LogType="Tail",
            Payload=b'{"marker": "m4", "noise": 10000}',
        )
    tail = base64.b64decode(response["LogResult"])
    assert len(tail) == 4096
    assert tail.decode().splitlines()[-1].startswith("REPORT RequestId: ")


async def test_tails_of_concurrent_invocations_do_not_mix(server: Server) -> None:
    async def call(marker: str) -> str:
        payload = json.dumps({"marker": marker, "sleep": 0.05}).encode()
        response, _ = await invoke(
            server.client, FunctionName="chatty", LogType="Tail", Payload=payload
        )
        return decode_tail(response)

    async with asyncio.timeout(DEADLINE):
        tails = await asyncio.gather(*(call(f"c{i}") for i in range(4)))
    for i, tail in enumerate(tails):
        markers = {f"c{j}" for j in range(4) if f"working on c{j}" in tail}
        assert markers == {f"c{i}"}


async def test_unknown_log_type_is_400_and_form_content_type_is_415(server: Server) -> None:
    path = "/2015-03-31/functions/echo/invocations"
    async with asyncio.timeout(DEADLINE):
        log_type = await raw_request(server.port, "POST", path, headers={"X-Amz-Log-Type": "All"})
        form = await raw_request(
            server.port,
            "POST",
            path,
            b"a=1",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        json_type = await raw_request(
            server.port, "POST", path, b"{}", headers={"Content-Type": "application/json"}
        )
    assert log_type.status == 400
    assert log_type.headers["x-amzn-errortype"] == "InvalidParameterValueException"
    assert form.status == 415
    assert form.headers["x-amzn-errortype"] == "UnsupportedMediaTypeException"
    assert form.json() == {
        "Type": "User",
        "message": "The content type of the Invoke request body is not JSON.",
    }
    assert json_type.status == 200


async def test_invalid_qualifier_parameter_is_a_validation_error(server: Server) -> None:
    async with asyncio.timeout(DEADLINE):
        raw = await raw_request(
            server.port, "POST", "/2015-03-31/functions/echo/invocations?Qualifier=a%2Fb"
        )
    assert raw.status == 400
    assert raw.headers["x-amzn-errortype"] == "ValidationException"
