"""Operational endpoints (health, readiness, Prometheus metrics) and robustness: clients that
are slow, greedy or gone cannot hold the server, and reserved concurrency holds under load."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from streamfn import App, Context
from streamfn.connectors import http
from streamfn.connectors.http.wire import Limits, Message

from .support import (
    DEADLINE,
    invoke,
    invoke_error,
    raw_request,
    read_response,
    serving,
    wait_until,
)

SAMPLE = re.compile(r'[a-z_]+(\{([a-z_]+="[^"]*",?)*\})? [0-9.e+Inf-]+')


def metric_values(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, checking every line is a comment or a well-formed sample."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# "):
            assert line.startswith(("# HELP ", "# TYPE ")), line
            continue
        assert SAMPLE.fullmatch(line), line
        name, _, value = line.rpartition(" ")
        values[name] = float(value)
    return values


async def test_health_and_readiness() -> None:
    app = App()
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/ready", "query_string": b"", "headers": []}
    await http.asgi_app(app)(scope, receive, send)  # not running: not ready
    async with serving(app) as served:
        ready = await raw_request(served.port, "GET", "/ready")
        health = await raw_request(served.port, "GET", "/health")
    assert sent[0]["status"] == 503
    assert (ready.status, ready.json()) == (200, {"status": "ready"})
    assert (health.status, health.json()) == (200, {"status": "ok"})


async def test_metrics_exposition(tmp_path: Path) -> None:
    app = App("metrics", state_dir=tmp_path, async_time_scale=0.001)
    entered, gate = asyncio.Event(), asyncio.Event()

    @app.function(reserved_concurrency=1)
    async def work(event: Any, context: Context) -> None:
        if event == "fail":
            raise ValueError("fail")
        if event == "hold":
            entered.set()
            await gate.wait()

    @app.function(maximum_retry_attempts=0)
    async def doomed(event: Any, context: Context) -> None:
        raise ValueError("doomed")

    async with serving(app) as served, asyncio.timeout(DEADLINE):
        await invoke(served.client, FunctionName="work", Payload=b'"ok"')
        await invoke(served.client, FunctionName="work", Payload=b'"fail"')
        holding = asyncio.create_task(invoke(served.client, FunctionName="work", Payload=b'"hold"'))
        await entered.wait()
        await invoke_error(served.client, FunctionName="work")
        await invoke(served.client, FunctionName="work", InvocationType="Event", Payload=b'"q"')
        await invoke(served.client, FunctionName="doomed", InvocationType="Event")
        await wait_until(
            lambda: app.metrics.dead_letters.labels("doomed", "RetriesExhausted").value == 1
        )
        during = await raw_request(served.port, "GET", "/metrics")
        gate.set()
        await holding
    values = metric_values(during.body.decode())
    assert during.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    labels = 'function="work",version="$LATEST"'
    assert values[f"streamfn_invocations_total{{{labels}}}"] == 2
    assert values[f"streamfn_errors_total{{{labels}}}"] == 1
    assert values['streamfn_throttles_total{function="work"}'] >= 2  # sync 429 + async retries
    assert values[f"streamfn_duration_seconds_count{{{labels}}}"] == 2
    assert values[f'streamfn_duration_seconds_bucket{{{labels},le="+Inf"}}'] == 2
    assert values['streamfn_concurrent_executions{function="work"}'] == 1
    assert values["streamfn_async_queue_depth"] == 1  # "q", throttled behind "hold"
    assert values["streamfn_async_oldest_event_age_seconds"] > 0
    assert values['streamfn_async_retries_total{function="work",reason="throttle"}'] >= 1
    assert (
        values['streamfn_async_dead_letters_total{function="doomed",condition="RetriesExhausted"}']
        == 1
    )


async def test_slow_headers_get_408_at_the_header_timeout() -> None:
    app = App()
    async with serving(app, Limits(header_timeout=0.2)) as served, asyncio.timeout(DEADLINE):
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(b"POST /2015-03-31/functions/x/invoc")  # and then nothing
        response = await read_response(reader)
        assert await reader.read() == b""  # closed by the server
        writer.close()
    assert response.status == 408
    assert response.headers["x-amzn-errortype"] == "RequestTimeoutException"
    assert response.json() == {
        "Type": "User",
        "message": "The request headers were not received within 0.2 seconds.",
    }


async def test_slow_body_gets_408_and_the_connection_closed() -> None:
    app = App()

    @app.function()
    async def echo(event: Any, context: Context) -> Any:
        return event

    async with serving(app, Limits(body_timeout=0.2)) as served, asyncio.timeout(DEADLINE):
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(
            b"POST /2015-03-31/functions/echo/invocations HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 100\r\n\r\n[1, "
        )
        response = await read_response(reader)
        assert await reader.read() == b""
        writer.close()
        after = await raw_request(served.port, "POST", "/2015-03-31/functions/echo/invocations")
    assert response.status == 408
    assert response.headers["x-amzn-errortype"] == "RequestTimeoutException"
    assert response.headers["connection"] == "close"
    assert after.status == 200


async def test_client_gone_mid_body_does_not_disturb_the_server() -> None:
    app = App()

    @app.function()
    async def echo(event: Any, context: Context) -> Any:
        return event

    async with serving(app) as served, asyncio.timeout(DEADLINE):
        _, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(
            b"POST /2015-03-31/functions/echo/invocations HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 1000\r\n\r\n[1,"
        )
        await writer.drain()
        writer.transport.abort()
        after = await raw_request(served.port, "POST", "/2015-03-31/functions/echo/invocations")
    assert after.status == 200


async def test_reserved_concurrency_holds_under_load() -> None:
    app = App()
    running = peak = 0

    @app.function(reserved_concurrency=3)
    async def limited(event: Any, context: Context) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1

    async with serving(app) as served, asyncio.timeout(DEADLINE):
        responses = await asyncio.gather(
            *(
                raw_request(served.port, "POST", "/2015-03-31/functions/limited/invocations")
                for _ in range(40)
            )
        )
    statuses = [r.status for r in responses]
    assert set(statuses) <= {200, 429}
    assert statuses.count(200) >= 3
    assert peak <= 3


async def test_event_without_a_running_app_is_a_500_service_exception() -> None:
    app = App()

    @app.function()
    async def queued(event: Any, context: Context) -> None:
        return None

    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/2015-03-31/functions/queued/invocations",
        "query_string": b"",
        "headers": [(b"x-amz-invocation-type", b"Event")],
    }
    await http.asgi_app(app)(scope, receive, send)
    headers = dict(sent[0]["headers"])
    assert sent[0]["status"] == 500
    assert headers[b"x-amzn-errortype"] == b"ServiceException"
    assert json.loads(sent[1]["body"])["Type"] == "Service"
