"""The server's own limits, one client at a time: heads too long or too many (431), URLs too long
(414), requests that do not parse (400), and the connection cap that sheds the connection that
costs least to lose before it refuses anyone (503). Every answer the server writes itself has
Lambda's error shape and closes the connection. The same limits under load:
``test_server_load.py``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from streamfn import App, ConfigError, Context
from streamfn.connectors.http import server
from streamfn.connectors.http.wire import (
    Limits,
    Receive,
    Scope,
    Send,
    error_body,
    error_response,
    read_body,
)

from .support import (
    APPS,
    DEADLINE,
    RawResponse,
    invoke_error,
    raw_request,
    read_response,
    serving,
    streamfn_run,
    wait_until,
)

INVOKE = "/2015-03-31/functions/{}/invocations"
HELLO = f"{APPS}/hello_app.py:app"
ECHO = INVOKE.format("echo")


def echo_app() -> App:
    app = App()

    @app.function()
    async def echo(event: Any, context: Context) -> Any:
        return event

    return app


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def connection(port: int) -> AsyncIterator[Stream]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.transport.abort()


async def exchange(port: int, data: bytes) -> tuple[RawResponse, bytes | None]:
    """Send ``data`` on a fresh connection; the answer and, if it says the connection closes,
    what follows it until it does (b"" when the server closes after its answer, as it must
    after refusing)."""
    async with connection(port) as (reader, writer):
        writer.write(data)
        response = await read_response(reader)
        if response.headers.get("connection") != "close":
            return response, None
        return response, await reader.read()


def request(target: str = ECHO, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    lines = [f"POST {target} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def assert_refused(response: RawResponse, status: int, code: str) -> None:
    """The shape of every answer the server writes itself (botocore reads ``Error.Code`` from
    the header and the message from the body)."""
    assert response.status == status
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-amzn-errortype"] == code
    assert response.headers["connection"] == "close"
    assert response.headers["x-amzn-requestid"]
    body = response.json()
    assert body.keys() == {"Type", "message"}
    assert body["Type"] == ("User" if status < 500 else "Service")


async def test_head_over_max_header_bytes_is_431_then_closed() -> None:
    limits = Limits(max_url_bytes=512, max_header_bytes=1024)
    async with serving(echo_app(), limits) as served, asyncio.timeout(DEADLINE):
        response, rest = await exchange(served.port, request(headers={"X-Big": "a" * 1024}))
        after = await raw_request(served.port, "POST", ECHO, b"1")
    assert_refused(response, 431, "RequestHeaderFieldsTooLargeException")
    assert response.json()["message"] == "The request line and headers are longer than 1024 bytes."
    assert rest == b""
    assert (after.status, after.body) == (200, b"1")


async def test_head_just_within_the_limit_is_served_with_its_body_in_the_same_read() -> None:
    """The head is measured, not the read it came in: a body read with it does not count."""
    limits = Limits(max_url_bytes=512, max_header_bytes=1024)
    async with serving(echo_app(), limits) as served, asyncio.timeout(DEADLINE):
        body = b'"' + b"b" * 4000 + b'"'
        pad = "a" * (1024 - len(request(headers={"X-Pad": ""}, body=body)) + len(body))
        response, _ = await exchange(served.port, request(headers={"X-Pad": pad}, body=body))
        over, _ = await exchange(served.port, request(headers={"X-Pad": pad + "a"}, body=body))
    assert len(request(headers={"X-Pad": pad}, body=body)) - len(body) == 1024
    assert (response.status, response.body) == (200, body)
    assert over.status == 431


async def test_endless_header_lines_are_cut_at_the_limit() -> None:
    """A client streaming header lines for ever is answered 431 once past the limit and
    closed; what it sends after is drained for a moment, not parsed or kept."""
    limits = Limits(max_url_bytes=512, max_header_bytes=4096)
    async with (
        serving(echo_app(), limits) as served,
        asyncio.timeout(DEADLINE),
        connection(served.port) as (reader, writer),
    ):
        writer.write(f"POST {ECHO} HTTP/1.1\r\nHost: x\r\n".encode())

        async def flood() -> None:
            with contextlib.suppress(ConnectionError):
                while True:
                    writer.write(b"X-Flood: " + b"f" * 1000 + b"\r\n")
                    await writer.drain()

        flooding = asyncio.create_task(flood())
        response = await read_response(reader)
        with contextlib.suppress(ConnectionError):
            await reader.read()  # closed: at once if the flood stops, else after a drain
        flooding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flooding
        after = await raw_request(served.port, "POST", ECHO, b"2")
    assert_refused(response, 431, "RequestHeaderFieldsTooLargeException")
    assert (after.status, after.body) == (200, b"2")


async def test_one_endless_header_line_is_cut_at_the_limit() -> None:
    """A header line that never ends (the parser would keep it whole) is counted as it comes."""
    limits = Limits(max_url_bytes=512, max_header_bytes=4096)
    async with (
        serving(echo_app(), limits) as served,
        asyncio.timeout(DEADLINE),
        connection(served.port) as (reader, writer),
    ):
        writer.write(f"POST {ECHO} HTTP/1.1\r\nX-Endless: ".encode())
        for _ in range(5):
            writer.write(b"e" * 1000)  # 5,000 bytes, no line end: past the limit
        response = await read_response(reader)
        assert await reader.read() == b""
    assert_refused(response, 431, "RequestHeaderFieldsTooLargeException")


async def test_too_many_header_fields_is_431() -> None:
    limits = Limits(max_header_count=10)
    headers = {f"X-H{i}": "v" for i in range(10)}  # with Host and Content-Length: 12
    async with serving(echo_app(), limits) as served, asyncio.timeout(DEADLINE):
        response, rest = await exchange(served.port, request(headers=headers))
        fewer, _ = await exchange(served.port, request(headers=dict(list(headers.items())[:8])))
    assert_refused(response, 431, "RequestHeaderFieldsTooLargeException")
    assert response.json()["message"] == "The request has more than 10 header fields."
    assert rest == b""
    assert fewer.status == 200


async def test_url_over_max_url_bytes_is_414() -> None:
    limits = Limits(max_url_bytes=1024, max_header_bytes=4096)
    long_target = ECHO + "?q=" + "u" * 1024
    async with serving(echo_app(), limits) as served, asyncio.timeout(DEADLINE):
        whole, rest = await exchange(served.port, request(long_target))
        # A URL still arriving is refused without waiting for its end.
        async with connection(served.port) as (reader, writer):
            writer.write(f"GET {long_target}".encode())
            streaming = await read_response(reader)
            assert await reader.read() == b""
    for response in (whole, streaming):
        assert_refused(response, 414, "URITooLongException")
        assert response.json()["message"] == "The request URI is longer than 1024 bytes."
    assert rest == b""


async def test_request_that_does_not_parse_is_400_invalid_request_content() -> None:
    async with serving(echo_app()) as served, asyncio.timeout(DEADLINE):
        response, rest = await exchange(served.port, b"POST /x HTTP/1.1\r\nBad Header\r\n\r\n")
    assert_refused(response, 400, "InvalidRequestContentException")
    assert response.json()["message"].startswith("The request is not valid HTTP/1.1: ")
    assert rest == b""


async def test_boto3_reads_a_server_refusal_as_a_client_error() -> None:
    """What an SDK user sees when the server itself refuses: the code and message."""
    limits = Limits(max_url_bytes=512, max_header_bytes=2048)
    context = base64.b64encode(b'{"custom": "' + b"c" * 3000 + b'"}').decode()
    async with serving(echo_app(), limits) as served, asyncio.timeout(DEADLINE):
        error = await invoke_error(served.client, FunctionName="echo", ClientContext=context)
    assert error["Error"]["Code"] == "RequestHeaderFieldsTooLargeException"
    assert error["Error"]["Message"] == "The request line and headers are longer than 2048 bytes."
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 431


@dataclass
class Bare:
    """The server stack on a free port under a bare ASGI app (echo the body; ``/hold`` waits for
    ``gate``), with its shelves in view, so a test can wait for the server to have seen what a
    client sent."""

    port: int
    shelves: Any
    gate: asyncio.Event
    holding: list[None]

    def protocol(self, writer: asyncio.StreamWriter) -> Any:
        port = writer.get_extra_info("sockname")[1]
        for shelf in (self.shelves.receiving, self.shelves.idle, self.shelves.refused):
            for protocol in shelf:
                if protocol.client[1] == port:
                    return protocol
        return None

    async def received(self, writer: asyncio.StreamWriter, size: int) -> None:
        """Wait until the server has read ``size`` bytes of the head ``writer`` is sending."""
        await wait_until(lambda: getattr(self.protocol(writer), "head_bytes", None) == size)


@contextlib.asynccontextmanager
async def bare_server(limits: Limits) -> AsyncIterator[Bare]:
    gate = asyncio.Event()
    holding: list[None] = []

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive, None, 1 << 20)
        if scope["path"] == "/hold":
            holding.append(None)
            await gate.wait()
        length = (b"content-length", str(len(body)).encode())
        await send({"type": "http.response.start", "status": 200, "headers": [length]})
        await send({"type": "http.response.body", "body": body})

    sock = server.bind("127.0.0.1", 0)
    config = server.uvicorn_config(asgi, limits)
    running = server.Server(config)
    task = asyncio.create_task(running.serve(sockets=[sock]))
    try:
        await wait_until(lambda: running.started)
        yield Bare(sock.getsockname()[1], config.http.shelves, gate, holding)  # type: ignore[union-attr]
    finally:
        running.should_exit = True
        gate.set()
        async with asyncio.timeout(DEADLINE):
            await task
        sock.close()


async def test_idle_keep_alive_connections_are_shed_first_oldest_first() -> None:
    """Past max_connections a new client is served: the oldest idle connection makes room,
    before a connection still receiving its request."""
    async with (
        bare_server(Limits(max_connections=3)) as bare,
        asyncio.timeout(DEADLINE),
        connection(bare.port) as (idle_a, idle_a_writer),
        connection(bare.port) as (idle_b, idle_b_writer),
        connection(bare.port) as (slow, slow_writer),
    ):
        for reader, writer in ((idle_a, idle_a_writer), (idle_b, idle_b_writer)):
            writer.write(request("/", body=b"0"))
            assert (await read_response(reader)).status == 200  # then idle, kept alive
        slow_writer.write(b"POST /slo")
        await bare.received(slow_writer, 9)
        first = await raw_request(bare.port, "POST", "/", b"1")
        assert await idle_a.read() == b""  # shed: closed without a word
        second = await raw_request(bare.port, "POST", "/", b"2")
        assert await idle_b.read() == b""
        slow_writer.write(b"w HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n3")
        third = await read_response(slow)
    assert [(r.status, r.body) for r in (first, second, third)] == [
        (200, b"1"),
        (200, b"2"),
        (200, b"3"),
    ]


async def test_connection_longest_without_progress_is_shed_with_503() -> None:
    async with (
        bare_server(Limits(max_connections=2)) as bare,
        asyncio.timeout(DEADLINE),
        connection(bare.port) as (a, a_writer),
        connection(bare.port) as (b, b_writer),
    ):
        a_writer.write(b"POST /a")
        await bare.received(a_writer, 7)
        b_writer.write(b"POST /b")
        await bare.received(b_writer, 7)
        a_writer.write(b" HTTP/1.1\r\n")  # a progresses: b is now longest without progress
        await bare.received(a_writer, 18)
        new = await raw_request(bare.port, "POST", "/", b"1")
        shed = await read_response(b)
        assert await b.read() == b""
        a_writer.write(b"Host: x\r\nContent-Length: 1\r\n\r\n2")
        kept = await read_response(a)
    assert (new.status, new.body) == (200, b"1")
    assert_refused(shed, 503, "ServiceUnavailableException")
    assert "longest without progress" in shed.json()["message"]
    assert (kept.status, kept.body) == (200, b"2")


async def test_503_only_when_every_connection_has_a_request_being_answered() -> None:
    async with bare_server(Limits(max_connections=2)) as bare, asyncio.timeout(DEADLINE):
        held = [asyncio.create_task(raw_request(bare.port, "POST", "/hold")) for _ in range(2)]
        await wait_until(lambda: len(bare.holding) == 2)
        refused, rest = await exchange(bare.port, request("/", body=b"x"))
        bare.gate.set()
        answers = await asyncio.gather(*held)
        after = await raw_request(bare.port, "POST", "/", b"y")
    assert_refused(refused, 503, "ServiceUnavailableException")
    assert refused.json()["message"] == (
        "Each of the server's 2 connections has a request being answered; retry."
    )
    assert rest == b""
    assert [a.status for a in answers] == [200, 200]
    assert (after.status, after.body) == (200, b"y")


async def test_keep_alive_connection_serves_request_after_request() -> None:
    """The states a connection goes through (receiving, answered, idle, receiving again) leave
    it serving, and on no shelf it should not be on."""
    async with (
        bare_server(Limits(max_connections=1)) as bare,
        asyncio.timeout(DEADLINE),
        connection(bare.port) as (reader, writer),
    ):
        answers = []
        for n in range(5):
            writer.write(request("/", body=str(n).encode()))
            answers.append(await read_response(reader))
            assert list(bare.shelves.idle) == [bare.protocol(writer)]
            assert not bare.shelves.receiving
    assert [(a.status, a.body) for a in answers] == [(200, str(n).encode()) for n in range(5)]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("header_timeout", 0),
        ("max_header_bytes", 0),
        ("max_header_count", 1.5),
        ("max_connections", -1),
    ],
)
def test_limits_refuse_values_out_of_range_by_name(field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"Limits.{field}="):
        Limits(**{field: value})


def test_limits_refuse_a_url_limit_over_the_head_limit() -> None:
    with pytest.raises(ConfigError, match="max_url_bytes=20000 is invalid: must be <= max_h"):
        Limits(max_url_bytes=20000, max_header_bytes=16384)


def test_error_body_is_lambdas_rest_json_shape() -> None:
    assert error_body(404, "ResourceNotFoundException", "gone") == (
        b'{"Type":"User","Message":"gone"}'
    )
    status, headers, body = error_response(
        429, "TooManyRequestsException", "slow down", Reason="ConcurrentInvocationLimitExceeded"
    )
    assert (status, dict(headers)[b"x-amzn-errortype"]) == (429, b"TooManyRequestsException")
    assert body == (
        b'{"Type":"User","message":"slow down","Reason":"ConcurrentInvocationLimitExceeded"}'
    )
    assert error_body(503, "ServiceUnavailableException", "full").startswith(b'{"Type":"Service"')


async def test_streamfn_run_holds_clients_to_the_limits_its_options_give() -> None:
    env = {"STREAMFN_HTTP_MAX_HEADER_COUNT": "5"}
    async with streamfn_run(
        HELLO, "--max-header-bytes", "1024", "--max-url-bytes", "512", env=env
    ) as cli:
        long_head = await raw_request(cli.port, "GET", "/health", headers={"x-pad": "a" * 2000})
        many = await raw_request(
            cli.port, "GET", "/health", headers={f"x-{i}": "1" for i in range(6)}
        )
        fine = await raw_request(cli.port, "GET", "/health", headers={"x-pad": "a" * 500})
    assert long_head.status == 431
    assert long_head.json()["message"] == "The request line and headers are longer than 1024 bytes."
    assert many.status == 431
    assert many.json()["message"] == "The request has more than 5 header fields."
    assert fine.status == 200


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--header-timeout", "0"],
            {},
            "streamfn run: error: argument --header-timeout: '0' is not a number of seconds > 0",
        ),
        (
            [],
            {"STREAMFN_HTTP_MAX_CONNECTIONS": "many"},
            "streamfn run: error: argument --max-connections: 'many' from "
            "STREAMFN_HTTP_MAX_CONNECTIONS is not a whole number >= 1",
        ),
        (
            ["--max-url-bytes", "20000"],
            {},
            "streamfn: error: Limits.max_url_bytes=20000 is invalid: must be <= "
            "max_header_bytes (16384), as the URL is part of the head",
        ),
    ],
)
def test_a_bad_limit_option_exits_2_with_one_line(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streamfn.cli", "run", HELLO, "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == message, result.stderr
    assert "Traceback" not in result.stderr
