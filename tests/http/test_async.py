"""Asynchronous invocation as Lambda documents it: retries (0-2, one then two minutes apart),
throttles retried apart from that count, maximum event age, reserved concurrency 0, the
invocation record sent to on_success / on_failure destinations, and the dead-letter store.
Every duration is scaled by ``async_time_scale`` (1 minute -> 60 ms)."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamfn import (
    App,
    ConfigError,
    Context,
    DestinationError,
    FileDestination,
    FunctionDestination,
)
from streamfn.asyncq import DeadLetterStore, SQLiteEventQueue
from streamfn.connectors.webhook import WebhookDestination
from streamfn.testing import MemoryDestination

from .support import ARN, DEADLINE, invoke, serving, wait_until

SCALE = 0.001  # one minute becomes 60 ms


def scaled_app(tmp_path: Path, **kwargs: Any) -> App:
    return App("async", state_dir=tmp_path / "state", async_time_scale=SCALE, **kwargs)


async def test_function_error_is_retried_twice_a_minute_then_two_apart(tmp_path: Path) -> None:
    app = scaled_app(tmp_path)
    failures = MemoryDestination()
    attempts: list[float] = []

    @app.function(on_failure=failures)
    async def flaky(event: Any, context: Context) -> None:
        attempts.append(time.monotonic())
        raise ValueError(f"no {event['n']}")

    async with app.running():
        request_id = await app.invoke_async("flaky", {"n": 1})
        (record,) = await failures.wait_for(1)
    assert len(attempts) == 3
    assert attempts[1] - attempts[0] >= 60 * SCALE
    assert attempts[2] - attempts[1] >= 120 * SCALE
    assert record["version"] == "1.0"
    assert record["timestamp"].endswith("Z")
    assert record["requestContext"] == {
        "requestId": request_id,
        "functionArn": f"{ARN}:flaky:$LATEST",
        "condition": "RetriesExhausted",
        "approximateInvokeCount": 3,
    }
    assert record["requestPayload"] == {"n": 1}
    assert record["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    assert record["responsePayload"]["errorType"] == "ValueError"
    assert record["responsePayload"]["errorMessage"] == "no 1"


@pytest.mark.parametrize("retries", [0, 1])
async def test_maximum_retry_attempts_is_per_function(tmp_path: Path, retries: int) -> None:
    app = scaled_app(tmp_path)
    failures = MemoryDestination()
    calls = 0

    @app.function(maximum_retry_attempts=retries, on_failure=failures)
    async def fails(event: Any, context: Context) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("always")

    async with app.running():
        await app.invoke_async("fails", None)
        (record,) = await failures.wait_for(1)
    assert calls == retries + 1
    assert record["requestContext"]["approximateInvokeCount"] == retries + 1


async def test_unserialisable_result_is_a_marshal_error_and_retried(tmp_path: Path) -> None:
    """Lambda's runtime serialises every response, asynchronous ones too: a value that is not
    JSON is a function error, retried, then given up on with the runtime's error."""
    app = scaled_app(tmp_path)
    failures = MemoryDestination()
    calls = 0

    @app.function(maximum_retry_attempts=1, on_failure=failures)
    async def unmarshallable(event: Any, context: Context) -> Any:
        nonlocal calls
        calls += 1
        return {"ids": {1, 2}}

    async with app.running():
        await app.invoke_async("unmarshallable", {})
        (record,) = await failures.wait_for(1)
    assert calls == 2
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorType"] == "Runtime.MarshalError"
    assert record["responsePayload"]["errorMessage"].startswith("Unable to marshal response: ")


async def test_success_goes_to_on_success_with_the_response(tmp_path: Path) -> None:
    app = scaled_app(tmp_path)
    successes, failures = MemoryDestination(), MemoryDestination()
    calls = 0

    @app.function(on_success=successes, on_failure=failures)
    async def second_time_lucky(event: Any, context: Context) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise TimeoutError("first try")
        return {"doubled": event * 2}

    async with app.running():
        request_id = await app.invoke_async("second_time_lucky", 21)
        (record,) = await successes.wait_for(1)
    assert record["requestContext"]["condition"] == "Success"
    assert record["requestContext"]["requestId"] == request_id
    assert record["requestContext"]["approximateInvokeCount"] == 2
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert record["responsePayload"] == {"doubled": 42}
    assert failures.records == []


async def test_throttles_are_retried_apart_from_the_retry_count(tmp_path: Path) -> None:
    app = scaled_app(tmp_path)
    successes = MemoryDestination()
    entered, gate = asyncio.Event(), asyncio.Event()

    @app.function(reserved_concurrency=1, maximum_retry_attempts=0, on_success=successes)
    async def single(event: Any, context: Context) -> str:
        if event == "hold":
            entered.set()
            await gate.wait()
        return event

    throttles = app.metrics.throttles.labels("single")
    async with app.running():
        holder = asyncio.create_task(app.invoke("single", "hold"))
        await entered.wait()
        await app.invoke_async("single", "queued")
        await wait_until(lambda: throttles.value >= 4)  # backoff 1, 2, 4, 8 ms, ...
        gate.set()
        await holder
        (record,) = await successes.wait_for(1)
    assert record["responsePayload"] == "queued"
    assert record["requestContext"]["approximateInvokeCount"] == 1


async def test_event_older_than_maximum_event_age_is_given_up(tmp_path: Path) -> None:
    app = scaled_app(tmp_path)
    failures = MemoryDestination()
    gate = asyncio.Event()

    @app.function(reserved_concurrency=1, maximum_event_age=60, on_failure=failures)
    async def busy(event: Any, context: Context) -> None:
        await gate.wait()

    async with app.running():
        holder = asyncio.create_task(app.invoke("busy", None))
        await wait_until(lambda: app.functions["busy"].running == 1)
        await app.invoke_async("busy", {"late": True})
        (record,) = await failures.wait_for(1)  # throttled until 60 "seconds" passed
        gate.set()
        await holder
    assert record["requestContext"]["condition"] == "EventAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert record["requestPayload"] == {"late": True}
    assert "responseContext" not in record


async def test_zero_reserved_concurrency_goes_straight_to_on_failure(tmp_path: Path) -> None:
    app = scaled_app(tmp_path)
    failures = MemoryDestination()

    @app.function(reserved_concurrency=0, on_failure=failures)
    async def off(event: Any, context: Context) -> None:
        raise AssertionError("must not run")

    async with app.running():
        await app.invoke_async("off", [1])
        (record,) = await failures.wait_for(1)
    assert record["requestContext"]["condition"] == "ZeroReservedConcurrency"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert app.metrics.dead_letters.labels("off", "ZeroReservedConcurrency").value == 1


async def test_alias_event_runs_a_version_of_the_alias(tmp_path: Path) -> None:
    app = scaled_app(tmp_path)
    successes = MemoryDestination()

    @app.function(on_success=successes)
    async def versioned(event: Any, context: Context) -> str:
        return context.invoked_function_arn

    app.publish_version("versioned")
    app.alias("versioned", "live", version="1")
    async with serving(app) as served, asyncio.timeout(DEADLINE):
        response, _ = await invoke(
            served.client, FunctionName="versioned:live", InvocationType="Event"
        )
        (record,) = await successes.wait_for(1)
    assert response["StatusCode"] == 202
    assert record["requestContext"]["functionArn"] == f"{ARN}:versioned:live"
    assert record["responseContext"]["executedVersion"] == "1"
    assert record["responsePayload"] == f"{ARN}:versioned:live"


async def test_function_and_file_destinations_receive_the_record(tmp_path: Path) -> None:
    app = scaled_app(tmp_path)
    audited: list[dict[str, Any]] = []
    path = tmp_path / "failures.jsonl"

    @app.function(maximum_retry_attempts=0, on_failure=FunctionDestination("audit"))
    async def to_function(event: Any, context: Context) -> None:
        raise ValueError("to function")

    @app.function(maximum_retry_attempts=0, on_failure=FileDestination(path))
    async def to_file(event: Any, context: Context) -> None:
        raise ValueError("to file")

    @app.function()
    async def audit(event: dict[str, Any], context: Context) -> None:
        audited.append(event)

    async with app.running():
        await app.invoke_async("to_function", "a")
        await app.invoke_async("to_file", "b")
        await wait_until(lambda: bool(audited) and path.exists() and path.stat().st_size > 0)
    (in_file,) = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert audited[0]["responsePayload"]["errorMessage"] == "to function"
    assert in_file["responsePayload"]["errorMessage"] == "to file"


@pytest.fixture
async def webhook() -> AsyncIterator[tuple[str, list[tuple[dict[str, str], Any]], list[int]]]:
    """A loopback HTTP server that answers with the statuses in ``replies`` (then 204) and keeps
    each request's headers and JSON body."""
    received: list[tuple[dict[str, str], Any]] = []
    replies: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers["content-length"]))
        status = replies.pop(0) if replies else 204
        if status < 300:
            received.append((headers, orjson.loads(body)))
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}/hooks/lambda?x=1", received, replies


async def test_webhook_destination_posts_the_record(
    tmp_path: Path, webhook: tuple[str, list[tuple[dict[str, str], Any]], list[int]]
) -> None:
    url, received, replies = webhook
    replies.append(503)  # refused once, then stored on the retry
    app = scaled_app(tmp_path)

    @app.function(on_success=WebhookDestination(url, headers={"X-Token": "t"}))
    async def hooked(event: Any, context: Context) -> str:
        return "done"

    async with app.running():
        request_id = await app.invoke_async("hooked", {"k": "v"})
        await wait_until(lambda: bool(received))
    headers, record = received[0]
    assert headers["idempotency-key"] == request_id
    assert headers["x-token"] == "t"
    assert headers["content-type"] == "application/json"
    assert record["requestContext"]["condition"] == "Success"
    assert record["responsePayload"] == "done"


async def test_refused_on_failure_record_lands_in_the_dead_letter_store(
    tmp_path: Path, webhook: tuple[str, list[tuple[dict[str, str], Any]], list[int]]
) -> None:
    url, received, replies = webhook
    replies.extend([500, 500, 500])
    app = scaled_app(tmp_path)

    @app.function(maximum_retry_attempts=0, dead_letter=False, on_failure=WebhookDestination(url))
    async def unlucky(event: Any, context: Context) -> None:
        raise ValueError("x")

    undelivered = app.metrics.destination_failures.labels("unlucky")
    async with app.running():
        request_id = await app.invoke_async("unlucky", 1)
        await wait_until(lambda: undelivered.value == 1)
    store = DeadLetterStore(tmp_path / "state")
    letters = store.letters()
    store.close()
    assert [(d.request_id, d.condition) for d in letters] == [(request_id, "RetriesExhausted")]
    assert received == []


async def test_failed_events_are_kept_as_dead_letters_and_can_be_redriven(tmp_path: Path) -> None:
    app = scaled_app(tmp_path)
    successes = MemoryDestination()
    healthy = False

    @app.function(maximum_retry_attempts=0, on_success=successes)
    async def recovers(event: Any, context: Context) -> Any:
        if not healthy:
            raise ValueError("not yet")
        return event

    async with app.running():
        first = await app.invoke_async("recovers", {"n": 1})
        second = await app.invoke_async("recovers", {"n": 2})
        store = DeadLetterStore(tmp_path / "state")
        try:
            await wait_until(lambda: len(store.letters()) == 2)
            letter = store.get(first)
            assert letter is not None
            assert orjson.loads(letter.payload) == {"n": 1}
            assert letter.record["requestContext"]["condition"] == "RetriesExhausted"
            healthy = True
            assert store.redrive([second]) == 1  # picked up by the running worker
            (record,) = await successes.wait_for(1)
            assert [d.request_id for d in store.letters()] == [first]
        finally:
            store.close()
    assert record["requestContext"]["requestId"] == second
    assert record["requestPayload"] == {"n": 2}


async def test_queued_events_survive_closing_the_queue(tmp_path: Path) -> None:
    app = scaled_app(tmp_path)
    gate = asyncio.Event()
    seen: list[Any] = []

    @app.function(reserved_concurrency=1)
    async def slow(event: Any, context: Context) -> None:
        await gate.wait()
        seen.append(event)

    app.async_shutdown_timeout = 0.05
    async with app.running():
        for n in range(5):
            await app.invoke_async("slow", n)
        await wait_until(lambda: app.functions["slow"].running == 1)
    assert seen == []  # cut at shutdown: nothing completed, everything stays queued
    gate.set()
    async with app.running():
        await wait_until(lambda: sorted(seen) == [0, 1, 2, 3, 4])


async def test_concurrent_puts_share_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamfn import asyncq

    commits = 0
    real = asyncq.transaction

    def counting(*args: Any) -> None:
        nonlocal commits
        commits += 1
        real(*args)

    monkeypatch.setattr(asyncq, "transaction", counting)
    async with SQLiteEventQueue(tmp_path) as queue:
        events = [
            asyncq.QueuedEvent(f"r{i}", "f", None, b"{}", time.time(), due_at=time.time())
            for i in range(200)
        ]
        await asyncio.gather(*(queue.put(e) for e in events))
        received = await queue.receive(500)
    assert len(received) == 200
    assert commits < 20  # group commit: ~one transaction per batch that arrived together


async def test_a_state_dir_has_one_worker(tmp_path: Path) -> None:
    async with SQLiteEventQueue(tmp_path):
        with pytest.raises(ConfigError, match="is in use by another streamfn worker"):
            async with SQLiteEventQueue(tmp_path):
                pass


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"maximum_retry_attempts": 3}, "maximum_retry_attempts=3 is invalid"),
        ({"maximum_event_age": 59}, "maximum_event_age=59 is invalid"),
        ({"maximum_event_age": 21601}, "maximum_event_age=21601 is invalid"),
        ({"on_failure": "sqs://queue"}, "on_failure='sqs://queue' is invalid"),
    ],
)
def test_async_settings_are_validated(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        App().function("f", **settings)(lambda event, context: None)


@pytest.mark.parametrize(
    ("url", "headers", "message"),
    [
        ("ftp://host/x", None, "url='ftp://host/x' is invalid"),
        ("http:///x", None, "must be an http:// or https:// URL"),
        ("http://host/x", {"X-A": "1\r\nX-B: 2"}, "names and values without CR/LF"),
    ],
)
def test_webhook_settings_are_validated(
    url: str, headers: dict[str, str] | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        WebhookDestination(url, headers=headers)


async def test_unreachable_webhook_is_a_destination_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(DestinationError, match="cannot POST to"):
            await WebhookDestination(f"http://127.0.0.1:{port}/", timeout=2).send({"a": 1})
