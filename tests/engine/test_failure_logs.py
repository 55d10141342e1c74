"""Every failure of an event source mapping is visible in the log: the first one in full, with
Lambda's error object, the batch and what happens next; repeated ones summarised at a bounded
rate; discards, on-failure deliveries, destination, fetch and commit errors, rebalances and a
fatal source error each with their own line."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import pytest

from streamfn import App, Batch, Context
from streamfn.record import Record
from streamfn.testing import MemoryDestination, MemoryQueue, MemorySource, wait_until

from .conftest import Line
from .helpers import FAST_RETRY


def failures(lines: list[Line], kind: str = "invocation") -> list[Line]:
    """The failure lines of invocations, or of another kind by its message."""
    starts = {
        "invocation": ("invocation failed", "invocation timed out"),
        "discard": ("discarding records",),
        "on_failure": ("sent to on_failure",),
        "destination": ("on_failure destination",),
        "fetch": ("fetch failed",),
        "commit": ("commit failed",),
    }[kind]
    return [
        line
        for line in lines
        if line["logger"] == "streamfn.failures" and line["message"].startswith(starts)
    ]


async def test_raising_handler_logs_an_error_line_within_one_batch(lines: list[Line]) -> None:
    source = MemorySource()
    source.extend("p0", [b"a", b"b", b"c"])
    lines_seen: list[int] = []  # failure lines written when each attempt began
    app = App()

    @app.consume(source, **FAST_RETRY)
    async def orders(batch: Batch, context: Context) -> None:
        lines_seen.append(len(failures(lines)))
        raise ValueError("bad record in batch")

    async with app.running():
        await wait_until(lambda: len(lines_seen) >= 2)
    assert lines_seen[:2] == [0, 1]
    line = failures(lines)[0]
    assert line["level"] == "ERROR"
    assert line["message"].startswith(
        "invocation failed: ValueError: bad record in batch; retry in"
    )
    assert line["errorType"] == "ValueError"
    assert line["errorMessage"] == "bad record in batch"
    assert any("in orders" in frame for frame in line["stackTrace"])
    assert line["function"] == "orders"
    assert line["mapping"] == "memory://p0"
    assert line["partition"] == "p0"
    assert (line["firstOffset"], line["lastOffset"], line["records"]) == (0, 2, 3)
    assert line["attempt"] == 1
    assert line["next"].startswith("retry in ")
    assert line["requestId"]


async def test_continuous_failure_writes_at_most_two_lines_a_minute(lines: list[Line]) -> None:
    """1,000 failures a minute on one partition for two minutes, on a clock the handler moves:
    the lines of a kind are at least the 60 s interval apart, and their ``repeated`` counts
    add up to every failure once the partition stops."""
    source = MemorySource()
    source.append("p0", b"poison")
    now = 0.0
    app = App()

    @app.consume(source, retry_base_delay=0.001, retry_max_delay=0.001)
    async def stalled(batch: Batch, context: Context) -> None:
        nonlocal now
        now += 0.06
        raise ValueError("still poison")

    mapping = app.mappings[0]
    assert mapping.failures.interval == 60
    mapping.failures.clock = lambda: now
    written_at: list[float] = []

    class Clock(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            written_at.append(now)

    clock = Clock()
    logging.getLogger("streamfn.failures").addHandler(clock)
    try:
        async with app.running():
            await wait_until(lambda: now >= 120, timeout=60)
            running = list(written_at)
    finally:
        logging.getLogger("streamfn.failures").removeHandler(clock)
    assert 2 <= len(running) <= 3
    assert all(b - a >= 60 for a, b in pairwise(running))
    logged = failures(lines)
    first, *summaries = logged
    assert "repeated" not in first and "stackTrace" in first
    assert all(s["message"].endswith(" s]") and "stackTrace" not in s for s in summaries)
    assert summaries[0]["repeated"] >= 999 and summaries[0]["errorType"] == "ValueError"
    total = 1 + sum(s["repeated"] for s in summaries)
    assert total == mapping.stats.partitions["p0"].failed_invocations


async def test_discards_are_summarised_like_failures(lines: list[Line]) -> None:
    source = MemorySource()
    source.extend("p0", [b"x"] * 300)
    now = 0.0
    app = App()

    @app.consume(source, batch_size=1, maximum_retry_attempts=0)
    async def rejecting(batch: Batch, context: Context) -> None:
        nonlocal now
        now += 0.2  # 300 records in 60 s
        raise ValueError("no")

    app.mappings[0].failures.clock = lambda: now
    async with app.running():
        await wait_until(lambda: source.committed.get("p0") == 300)
    for kind in ("invocation", "discard"):
        logged = failures(lines, kind)
        assert len(logged) <= 3  # the first, one summary after 60 s, what is left at the stop
        assert 1 + sum(line.get("repeated", 0) for line in logged[1:]) == 300
    assert app.mappings[0].stats.partitions["p0"].dropped == 300


async def test_timeout_is_logged_as_a_timeout(lines: list[Line]) -> None:
    source = MemorySource()
    source.append("p0", b"slow")
    app = App()

    @app.consume(source, timeout=0.05)
    async def slow(batch: Batch, context: Context) -> None:
        await asyncio.Event().wait()

    async with app.running():
        await wait_until(lambda: failures(lines))
    [line] = failures(lines)
    assert line["message"].startswith("invocation timed out after 0.05 s; retry in ")
    assert line["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 0.05 seconds" in line["errorMessage"]


@pytest.mark.parametrize(
    ("response", "why"),
    [
        (
            {"batchItemFailures": [{"itemIdentifier": "99"}]},
            "itemIdentifier '99' is not in the batch",
        ),
        ({"batchItemFailures": ["0"]}, "'0' is not an object with an itemIdentifier"),
        (
            {"batchItemFailures": [{"itemIdentifier": None}]},
            "a null itemIdentifier in {'itemIdentifier': None}",
        ),
        ({"batchItemFailures": "0"}, "batchItemFailures is a str, not a list"),
        ({"batchItemFailures": [{"id": "0"}]}, "{'id': '0'} has no itemIdentifier"),
    ],
)
async def test_invalid_partial_response_says_why(
    lines: list[Line], response: dict[str, Any], why: str
) -> None:
    source = MemorySource()
    source.extend("p0", [b"a", b"b"])
    app = App()

    @app.consume(
        source, function_response_types=["ReportBatchItemFailures"], maximum_retry_attempts=0
    )
    async def partial(batch: Batch, context: Context) -> dict[str, Any]:
        return response

    async with app.running():
        await wait_until(lambda: failures(lines, "discard"))
    [line] = failures(lines)
    assert line["errorType"] == "InvalidBatchResponse"
    assert line["errorMessage"] == f"{why}; the whole batch failed"
    assert line["next"] == "discard: no on_failure destination"
    [discard] = failures(lines, "discard")
    assert discard["condition"] == "RetryAttemptsExhausted"
    assert discard["errorType"] == "InvalidBatchResponse"


async def test_partial_failure_names_the_retried_records(lines: list[Line]) -> None:
    source = MemorySource()
    source.extend("p0", [b"a", b"b", b"c"])
    calls = 0
    app = App()

    @app.consume(source, function_response_types=["ReportBatchItemFailures"], **FAST_RETRY)
    async def partial(batch: Batch, context: Context) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return {"batchItemFailures": [{"itemIdentifier": "1"}] if calls == 1 else []}

    async with app.running():
        await wait_until(lambda: source.committed.get("p0") == 3)
    [line] = failures(lines)
    assert line["errorType"] == "BatchItemFailures"
    assert line["errorMessage"] == "1 of 3 records failed, from offset 1"
    assert line["next"].startswith("retry from offset 1 in ")


async def test_discard_line_names_the_error(lines: list[Line]) -> None:
    source = MemorySource()
    source.extend("p0", [b"a", b"b"])
    app = App()

    @app.consume(source, maximum_retry_attempts=0)
    async def failing(batch: Batch, context: Context) -> None:
        raise KeyError("customer")

    async with app.running():
        await wait_until(lambda: source.committed.get("p0") == 2)
    [line] = failures(lines, "discard")
    assert line["level"] == "WARNING"
    assert line["message"] == (
        "discarding records: no on_failure destination (RetryAttemptsExhausted: KeyError)"
    )
    assert (line["errorType"], line["errorMessage"]) == ("KeyError", "'customer'")
    assert line["batch"]["batchSize"] == 2
    assert failures(lines)[0]["next"] == "discard: no on_failure destination"


async def test_on_failure_delivery_and_destination_error_lines(lines: list[Line]) -> None:
    source = MemorySource()
    source.append("p0", b"poison")
    destination = MemoryDestination(fail_times=1)
    app = App()

    @app.consume(source, maximum_retry_attempts=0, on_failure=destination, **FAST_RETRY)
    async def failing(batch: Batch, context: Context) -> None:
        raise ValueError("poison")

    async with app.running():
        await destination.wait_for(1)
        await wait_until(lambda: failures(lines, "on_failure"))
    [invocation] = failures(lines)
    assert invocation["next"] == "send to on_failure memory"
    [error] = failures(lines, "destination")
    assert error["level"] == "ERROR"
    assert error["destination"] == "memory"
    assert error["errorType"] == "ConnectionError"
    assert error["next"].startswith("retry in ")
    [sent] = failures(lines, "on_failure")
    assert sent["level"] == "WARNING"
    assert (
        sent["message"]
        == "sent to on_failure memory: 1 record (RetryAttemptsExhausted: ValueError)"
    )
    assert (sent["destination"], sent["records"], sent["firstOffset"]) == ("memory", 1, 0)


async def test_queue_failure_says_the_messages_go_back(lines: list[Line]) -> None:
    queue = MemoryQueue()
    queue.send(b"a")
    queue.send(b"b")
    app = App()

    @app.consume(queue, function_response_types=["ReportBatchItemFailures"])
    async def partial(batch: Batch, context: Context) -> dict[str, Any]:
        return {"batchItemFailures": [{"itemIdentifier": "msg-1"}]}

    async with app.running():
        await wait_until(lambda: failures(lines))
    line = failures(lines)[0]
    assert line["next"] == "1 record back to the queue"
    assert (line["firstId"], line["lastId"], line["records"]) == ("msg-0", "msg-1", 2)
    assert "attempt" not in line


class FlakySource(MemorySource):
    """A memory source whose next fetches or commits fail, as a broker that drops out."""

    def __init__(self) -> None:
        super().__init__()
        self.fetch_failures = 0
        self.commit_failures = 0

    async def fetch(self, partition: str, max_records: int, timeout: float) -> Sequence[Record]:
        if self.fetch_failures:
            self.fetch_failures -= 1
            raise ConnectionError("broker went away")
        return await super().fetch(partition, max_records, timeout)

    async def commit(self, partition: str, record: Record) -> None:
        if self.commit_failures:
            self.commit_failures -= 1
            raise TimeoutError("commit timed out")
        await super().commit(partition, record)


async def test_fetch_and_commit_errors_are_logged(lines: list[Line]) -> None:
    source = FlakySource()
    source.fetch_failures = 1
    source.commit_failures = 1
    source.append("p0", b"x")
    app = App()

    @app.consume(source)
    async def handler(batch: Batch, context: Context) -> None:
        pass

    async with app.running():
        await wait_until(lambda: source.committed.get("p0") == 1)
    [fetch] = failures(lines, "fetch")
    assert fetch["level"] == "WARNING"
    assert fetch["message"].startswith("fetch failed: ConnectionError: broker went away; retry in")
    assert (fetch["partition"], fetch["attempt"]) == ("p0", 1)
    [commit] = failures(lines, "commit")
    assert commit["message"].startswith("commit failed: TimeoutError: commit timed out; retry in")


async def test_rebalance_lines_name_the_partitions(lines: list[Line]) -> None:
    source = MemorySource(["p0", "p1", "p2"])
    app = App()

    @app.consume(source)
    async def handler(batch: Batch, context: Context) -> None:
        pass

    async with app.running():
        await source.started()
        await source.revoke(["p1", "p2"])
        await source.assign(["p2"])
        rebalances = [
            (line["message"], line["partitions"], line["owned"])
            for line in lines
            if line["logger"] == "streamfn.mapping" and "partitions" in line
        ]
    assert rebalances == [
        ("partitions assigned", ["p0", "p1", "p2"], 3),
        ("partitions revoked", ["p1", "p2"], 1),
        ("partitions assigned", ["p2"], 2),
    ]
    stats = app.mappings[0].stats
    assert (stats.assigned, stats.revoked) == (4, 4)  # the stop revoked p0 and p2
