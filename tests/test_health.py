"""Liveness and readiness (``streamfn.health``, ``GET /health`` and ``GET /ready``) on running
apps: a wedged partition fails liveness with its reason, a partition that waits by design does
not, readiness waits for every enabled mapping's partitions, and ``--no-http`` still serves the
operational routes on ``--metrics-port``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from streamfn import App, Batch, Context
from streamfn.connectors.kafka import KafkaSource
from streamfn.health import Verdict
from streamfn.testing import MemorySource
from streamfn.testing.servers import free_port

from .http.support import DEADLINE, ROOT, raw_request, serving, streamfn_run, wait_until

EXAMPLE = "examples/hello.py:app"


class Watcher:
    """Every liveness verdict of an app, taken as often as a kubelet never would: a verdict
    that fails even once is caught."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.verdicts: list[Verdict] = []

    def waiting(self, reason: str) -> bool:
        verdict = self.app.health.live()
        self.verdicts.append(verdict)
        return any(entry["reason"] == reason for entry in verdict.body.get("waiting", ()))


@contextlib.asynccontextmanager
async def refusing_broker() -> AsyncIterator[list[int]]:
    """A port that accepts connections and closes them at once, as a broker that is not up
    yet; yields the list of connections made (a growing count of connection attempts)."""
    connections: list[int] = []

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections))
        writer.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    async with server:
        connections.append(server.sockets[0].getsockname()[1])  # the port, first
        yield connections


async def test_a_partition_holding_records_without_invoking_fails_liveness() -> None:
    app = App("wedged", stuck_after=0.2)
    source = MemorySource(["p0"])
    release = asyncio.Event()

    @app.consume(source, timeout=0.05, retry_base_delay=0.01, retry_max_delay=0.01)
    async def deaf(batch: Batch, context: Context) -> None:
        """Swallows the timeout's cancellation, as a handler catching BaseException does: the
        invocation cannot be cut, and the partition can neither settle nor retry."""
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    source.append("p0", b"x")
    async with serving(app) as served:
        await wait_until(lambda: not app.health.live().ok)
        health = await raw_request(served.port, "GET", "/health")
        ready = await raw_request(served.port, "GET", "/ready")
        release.set()
        await wait_until(lambda: app.health.live().ok and source.committed.get("p0") == 1)
    assert health.status == 503
    assert health.headers["content-type"] == "application/json"
    body = health.json()
    assert body["status"] == "unhealthy"
    [reason] = body["reasons"]
    assert reason["secondsWithoutProgress"] >= 0.2
    del reason["secondsWithoutProgress"]
    assert reason == {
        "function": "deaf",
        "mapping": "memory://p0",
        "partition": "p0",
        "inFlight": 1,
        "thresholdSeconds": 0.2,
        "reason": "stuck",
    }
    assert (ready.status, ready.json()) == (200, {"status": "ready"})  # liveness is its own


async def test_a_partition_retrying_a_failing_batch_stays_live() -> None:
    app = App("poisoned", stuck_after=0.3)
    source = MemorySource(["p0"])

    @app.consume(source, timeout=0.1, retry_base_delay=0.01, retry_max_delay=0.02)
    async def poisoned(batch: Batch, context: Context) -> None:
        raise ValueError("poison record")  # retried forever: maximum_retry_attempts=-1

    source.append("p0", b"poison")
    watcher = Watcher(app)
    async with app.running():
        await wait_until(lambda: watcher.waiting("retrying"))
    assert all(verdict.ok for verdict in watcher.verdicts)
    [entry] = watcher.verdicts[-1].body["waiting"]
    assert (entry["partition"], entry["inFlight"], entry["thresholdSeconds"]) == ("p0", 1, 0.3)
    assert entry["secondsWithoutProgress"] >= 0.3


async def test_a_function_throttled_to_zero_is_paused_not_stuck() -> None:
    app = App("paused", stuck_after=0.2)
    source = MemorySource(["p0"])

    @app.consume(
        source,
        reserved_concurrency=0,
        timeout=0.05,
        retry_base_delay=0.01,
        retry_max_delay=0.05,
        shutdown_timeout=0.1,  # the batch waits for a slot that never comes: abandoned on exit
    )
    async def paused(batch: Batch, context: Context) -> None:
        raise AssertionError("a function with reserved_concurrency=0 never runs")

    source.append("p0", b"x")
    watcher = Watcher(app)
    async with app.running():
        await wait_until(lambda: watcher.waiting("throttled"))
    assert all(verdict.ok for verdict in watcher.verdicts)


async def test_ready_once_every_enabled_mapping_has_its_partitions() -> None:
    app = App("ready")

    @app.consume(MemorySource(["p0", "p1"]))
    async def live(batch: Batch, context: Context) -> None: ...

    @app.consume(MemorySource(["q0"]), enabled=False)
    async def dormant(batch: Batch, context: Context) -> None: ...

    before = app.health.ready(app.ready)
    async with serving(app) as served:
        await wait_until(lambda: app.health.ready(app.ready).ok)
        ready = await raw_request(served.port, "GET", "/ready")
    after = app.health.ready(app.ready)
    assert (ready.status, ready.json()) == (200, {"status": "ready"})
    not_running = {"reason": "the app is not running, or is stopping"}
    unassigned = {
        "function": "live",
        "mapping": "memory://p0,p1",
        "reason": "no partition assigned yet (connecting, or joining its group)",
    }
    assert before == Verdict(False, {"status": "not ready", "reasons": [not_running, unassigned]})
    assert after == Verdict(False, {"status": "not ready", "reasons": [not_running]})


async def test_not_ready_while_the_kafka_connection_is_retried() -> None:
    app = App("connecting")
    async with refusing_broker() as connections:
        kafka = KafkaSource("orders", bootstrap_servers=f"127.0.0.1:{connections[0]}", group_id="g")

        @app.consume(kafka)
        async def orders(batch: Batch, context: Context) -> None: ...

        @app.consume(MemorySource(["p0"]))
        async def memory(batch: Batch, context: Context) -> None: ...

        async with serving(app) as served:
            await wait_until(lambda: len(connections) > 2 and app.mappings[1].stats.assigned)
            ready = await raw_request(served.port, "GET", "/ready")
            health = await raw_request(served.port, "GET", "/health")
    assert ready.status == 503
    assert ready.json() == {
        "status": "not ready",
        "reasons": [
            {
                "function": "orders",
                "mapping": kafka.describe(),
                "reason": "no partition assigned yet (connecting, or joining its group)",
            }
        ],
    }
    assert (health.status, health.json()) == (200, {"status": "ok"})  # restarting won't help


async def test_an_unreachable_broker_fails_readiness_not_liveness_while_retried() -> None:
    app = App("unreachable")
    kafka = KafkaSource(
        "orders", bootstrap_servers=f"127.0.0.1:{free_port()}", group_id="g", connect_timeout=0.2
    )

    @app.consume(kafka)
    async def orders(batch: Batch, context: Context) -> None: ...

    async with asyncio.timeout(DEADLINE), app.running():
        mapping = app.mappings[0]
        await wait_until(lambda: mapping.stats.unreachable is not None)
        live, ready = app.health.live(), app.health.ready(running=True)
        assert (live.ok, live.body) == (True, {"status": "ok"})  # a restart would not help
        [reason] = ready.body["reasons"]
        assert not ready.ok
        assert reason["reason"] == "source unreachable"
        assert (reason["function"], reason["mapping"]) == ("orders", kafka.describe())
        assert reason["error"].startswith("cannot connect to Kafka")
        assert mapping.state == "Enabled"


async def test_no_http_still_serves_health_readiness_and_metrics_on_the_metrics_port() -> None:
    async with streamfn_run(EXAMPLE, "--no-http", "--metrics-port", "0") as cli:
        async with asyncio.timeout(DEADLINE):
            while (ready := await raw_request(cli.port, "GET", "/ready")).status != 200:
                await asyncio.sleep(0.01)
        health = await raw_request(cli.port, "GET", "/health")
        metrics = await raw_request(cli.port, "GET", "/metrics")
        invoke = await raw_request(
            cli.port, "POST", "/2015-03-31/functions/greet/invocations", b"{}"
        )
        openapi = await raw_request(cli.port, "GET", "/openapi.json")
        assert await cli.terminate() == 0
    assert ready.json() == {"status": "ready"}
    assert (health.status, health.json()) == (200, {"status": "ok"})
    assert metrics.status == 200
    assert 'streamfn_esm_polled_records_total{function="process"' in metrics.body.decode()
    assert (invoke.status, openapi.status) == (404, 404)  # only the operational routes
    listening = [line for line in cli.lines if "routes" in line]
    assert [(line["host"], line["routes"]) for line in listening] == [("127.0.0.1", "operational")]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamfn.cli", "run", EXAMPLE, *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--stuck-after", "0"], {}, "stuck_after=0.0 is invalid: must be a number of seconds > 0"),
        ([], {"STREAMFN_STUCK_AFTER": "0"}, "stuck_after=0.0 is invalid"),
        (["--port", "9123", "--metrics-port", "9123"], {}, "--metrics-port 9123 is --port"),
    ],
)
def test_a_bad_stuck_after_or_metrics_port_exits_2(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = run(*args, env=env)
    assert (result.returncode, message in result.stderr) == (2, True), result.stderr


async def test_a_worker_its_group_gives_no_partition_is_ready() -> None:
    """More workers than partitions: the source announces an empty assignment, and the worker
    has joined all the same (a rollout must not wait on it)."""
    app = App("spare")

    @app.consume(MemorySource([]))
    async def handler(batch: Batch, context: Context) -> None:
        return None

    async with app.running():
        await wait_until(lambda: app.health.ready(app.ready).ok)
        assert app.mappings[0].stats.assigned == 0
