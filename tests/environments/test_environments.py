"""Execution environments against real processes: warm reuse, timeouts that kill and
replace, crashes, the memory cap, init errors, and every invocation path (direct, the Invoke
API with boto3 sync and Event, a mapping)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from streamfn import App
from streamfn.testing import MemoryDestination, MemorySource, wait_until

from ..http.support import invoke, serving
from . import handlers, init_fails


def rss_mb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS")


def lines_of(path: Path, kind: str) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.startswith(kind)]


async def test_def_handler_of_the_invoke_api_runs_warm_in_one_environment_by_default() -> None:
    app = App()
    app.function(timeout=5)(handlers.echo)
    function = app.functions["echo"]
    assert function.execution == "environment"
    first = await app.invoke("echo", {"n": 1})
    second = await app.invoke("echo", {"n": 2})
    assert first.error is None and second.error is None
    assert second.value["pid"] == first.value["pid"] != os.getpid()
    assert (first.value["invocations"], second.value["invocations"]) == (1, 2)  # module state
    assert second.value["request_id"] == second.request_id
    assert 0 < second.value["remaining_ms"] <= 5000
    assert second.value["memory_limit_in_mb"] == "128"
    assert function.environments is not None
    assert function.environments.stats.cold_starts == 1
    await function.environments.close()


async def test_a_handler_error_is_lambdas_error_object_and_keeps_the_environment() -> None:
    app = App()
    app.function()(handlers.fail)
    app.function()(handlers.crash)
    result = await app.invoke("fail", 7)
    assert result.error is not None
    assert (result.error["errorType"], result.error["errorMessage"]) == ("ValueError", "bad 7")
    assert "in fail" in result.error["stackTrace"][-1]
    assert app.functions["fail"].environments is not None
    assert app.functions["fail"].environments.stats.crashes == 0


async def test_the_log_tail_of_an_environment_holds_its_output_and_lambdas_lines() -> None:
    app = App()
    app.function()(handlers.echo)
    cold = await app.functions["echo"].invoke("tail me", tail=True)
    warm = await app.functions["echo"].invoke("again", tail=True)
    assert cold.log is not None and warm.log is not None
    assert cold.log.startswith(f"START RequestId: {cold.request_id} Version: $LATEST\n")
    assert "echo 'tail me'\n" in cold.log and "echo 'again'\n" in warm.log
    assert f"END RequestId: {cold.request_id}\nREPORT RequestId: " in cold.log
    assert "\tInit Duration: " in cold.log  # the cold start's init phase, as AWS reports it
    assert "Init Duration" not in warm.log


async def test_crashes_answer_runtime_exit_error_and_the_next_invoke_runs_fresh() -> None:
    """``os._exit(3)`` and a segfault end only their environment: the caller gets Lambda's
    ``Runtime.ExitError``, the next invocation a new environment, and a mapping of the same
    worker never stops."""
    app = App()
    app.function(timeout=5)(handlers.crash)
    source = MemorySource()
    seen: list[int] = []

    @app.consume(source, batch_size=1)
    async def steady(batch: Any, context: Any) -> None:
        seen.extend(r.offset for r in batch)

    async with app.running():
        source.append("p0", b"before")
        await wait_until(lambda: seen == [0])
        healthy = await app.invoke("crash", "ok")
        exited = await app.invoke("crash", "exit")
        source.append("p0", b"between")
        segfault = await app.invoke("crash", "segfault")
        after = await app.invoke("crash", "ok")
        source.append("p0", b"after")
        await wait_until(lambda: seen == [0, 1, 2])
    assert exited.error == {
        "errorType": "Runtime.ExitError",
        "errorMessage": (
            f"RequestId: {exited.request_id} Error: Runtime exited with error: exit status 3"
        ),
    }
    assert segfault.error is not None
    assert segfault.error["errorMessage"].endswith(
        "Runtime exited with error: signal: segmentation fault"
    )
    assert after.error is None and healthy.error is None
    assert after.value != healthy.value  # a fresh environment: another process
    pool = app.functions["crash"].environments
    assert pool is not None
    assert (pool.stats.crashes, pool.stats.cold_starts) == (2, 3)
    scrape = app.metrics.render()
    labels = 'function="crash",version="$LATEST"'
    assert f"streamfn_execution_cold_starts_total{{{labels}}} 3\n" in scrape
    assert f'streamfn_execution_replacements_total{{{labels},reason="crash"}} 2\n' in scrape
    assert f'streamfn_execution_replacements_total{{{labels},reason="timeout"}} 0\n' in scrape


async def test_memory_size_is_enforced_in_the_environment_not_the_worker() -> None:
    app = App()
    app.function(memory_size=128, timeout=10)(handlers.hog)
    before = rss_mb()
    over = await app.invoke("hog", 512)
    assert over.error == {
        "errorType": "Runtime.OutOfMemory",
        "errorMessage": (
            f"RequestId: {over.request_id} Error: Runtime exited with error: signal: killed"
        ),
    }
    under = await app.invoke("hog", 16)
    assert (under.error, under.value) == (None, 16 * 1024 * 1024)
    assert rss_mb() - before < 64  # the 512 MB were never the worker's
    pool = app.functions["hog"].environments
    assert pool is not None
    assert (pool.stats.out_of_memory, pool.stats.cold_starts) == (1, 2)
    await pool.close()


async def test_an_init_error_is_the_runtimes_and_the_next_invoke_inits_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = App()
    app.function()(init_fails.handler)
    monkeypatch.setenv("ENV_TEST_INIT_FAIL", "1")  # read by the environment's import only
    failed = await app.invoke("handler", None)
    assert failed.error is not None
    assert (failed.error["errorType"], failed.error["errorMessage"]) == (
        "RuntimeError",
        "init failed on purpose",
    )
    monkeypatch.delenv("ENV_TEST_INIT_FAIL")
    assert (await app.invoke("handler", None)).value == "initialised"


async def test_a_timed_out_batch_is_retried_in_a_fresh_environment_never_beside_its_copy(
    tmp_path: Path,
) -> None:
    """The handler sleeps 1 s with a 0.2 s timeout: each attempt is killed at its timeout and
    the retry runs in a new process once the old one is dead. The handler's lock file shows
    any two copies running at once; other functions keep answering meanwhile."""
    log, lock = tmp_path / "log", tmp_path / "lock"
    source = MemorySource()
    failed = MemoryDestination()
    app = App()
    app.consume(
        source,
        name="sleeper",
        timeout=0.2,
        execution="environment",
        maximum_retry_attempts=2,
        retry_base_delay=0.001,
        retry_max_delay=0.001,
        on_failure=failed,
    )(handlers.sleepy)
    app.function()(handlers.echo)
    source.append("p0", json.dumps({"log": str(log), "lock": str(lock), "sleep": 1}).encode())
    async with app.running():
        answers = []
        while not failed.records:
            answers.append(await app.invoke("echo", "still here"))
        await failed.wait_for(1)
    starts = lines_of(log, "start")
    assert len(starts) == 3
    assert len({pid for _, _, pid in starts}) == 3  # each attempt in a fresh environment
    assert lines_of(log, "overlap") == [] and lines_of(log, "stop") == []
    assert all(a.error is None for a in answers)
    sleeper = app.functions["sleeper"]
    assert sleeper.running == 0
    assert sleeper.environments is not None and sleeper.environments.stats.timeouts == 3
    condition = failed.records[0]["requestContext"]["condition"]
    assert condition == "RetryAttemptsExhausted"


async def test_sync_and_event_invokes_over_the_invoke_api_run_in_environments(
    tmp_path: Path,
) -> None:
    app = App()
    app.function(timeout=5)(handlers.echo)
    app.function(timeout=0.3, maximum_retry_attempts=0)(handlers.sleepy)
    params = {"log": str(tmp_path / "log"), "lock": str(tmp_path / "lock"), "sleep": 0}
    async with serving(app) as served:
        response, payload = await invoke(
            served.client, FunctionName="echo", Payload=json.dumps({"via": "boto3"})
        )
        assert payload["event"] == {"via": "boto3"} and payload["pid"] != os.getpid()
        assert "FunctionError" not in response
        timed = dict(params, sleep=5)
        response, payload = await invoke(
            served.client, FunctionName="sleepy", Payload=json.dumps(timed)
        )
        assert response["FunctionError"] == "Unhandled"
        assert payload["errorType"] == "Sandbox.Timedout"
        assert payload["errorMessage"].endswith("Task timed out after 0.30 seconds")
        response, _ = await invoke(
            served.client,
            FunctionName="sleepy",
            InvocationType="Event",
            Payload=json.dumps(params),
        )
        assert response["StatusCode"] == 202
        await wait_until(lambda: len(lines_of(tmp_path / "log", "stop")) == 1)


async def test_invocations_beyond_max_environments_wait_for_a_warm_one(tmp_path: Path) -> None:
    app = App()
    app.function(max_environments=2, timeout=10)(handlers.sleepy)
    calls = [
        {"log": str(tmp_path / "log"), "lock": str(tmp_path / f"lock{n}"), "sleep": 0.05}
        for n in range(6)
    ]
    results = await asyncio.gather(*(app.invoke("sleepy", call) for call in calls))
    assert [r.value for r in results] == ["slept"] * 6
    pool = app.functions["sleepy"].environments
    assert pool is not None
    assert (pool.stats.cold_starts, pool.environments) == (2, 2)
    assert len({pid for _, _, pid in lines_of(tmp_path / "log", "start")}) == 2
    await pool.close()
