"""A short run of every ``streamfn bench`` scenario against real servers (tansu, moto, uvicorn):
the harness works and its counts add up. Speeds are not asserted: CI machines vary."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from streamfn import cli
from streamfn.bench import kit
from streamfn.bench.fill import create_topic
from streamfn.bench.kafka_load import worker_command
from streamfn.runtime import run_loop
from streamfn.testing.servers import TansuBroker

pytestmark = pytest.mark.slow


def bench(scenario: str, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    """Run ``streamfn bench SCENARIO ARGV --json`` in this process; its exit code and report."""
    capsys.readouterr()
    code = cli.main(["bench", scenario, *argv, "--json"])
    return code, orjson.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    with TansuBroker() as tansu:
        yield tansu.address


def test_engine_scenario_drains_every_record(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = bench(
        "engine", capsys, "--records", "2000", "--partitions", "2", "--rounds", "1",
        "--min-seconds", "0",
    )  # fmt: skip
    assert code == 0
    assert [r["records"] for r in report] == [2000]
    (run,) = report[0]["runs"]
    assert (run["round"], run["side"], run["drains"], run["records"]) == (
        0,
        "partitions=2",
        1,
        2000,
    )
    assert {"load_start", "load_end", "cpu_s_per_million", "short"} <= set(run)
    assert set(report[0]["summary"]["records_per_s"]) == {"median", "min", "max"}


def test_engine_repeats_the_drain_until_min_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = bench(
        "engine", capsys, "--records", "200", "--partitions", "1", "2", "--rounds", "2",
        "--min-seconds", "0.05",
    )  # fmt: skip
    assert code == 0
    runs = [run for row in report for run in row["runs"]]
    assert sorted((r["round"], r["side"]) for r in runs) == [
        (0, "partitions=1"), (0, "partitions=2"), (1, "partitions=1"), (1, "partitions=2"),
    ]  # fmt: skip
    assert all(r["seconds"] >= 0.05 and not r["short"] for r in runs)
    assert all(r["records"] == 200 * r["drains"] for r in runs)


def test_kafka_scenario_drains_the_topic_on_both_sides(
    broker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = bench(
        "kafka", capsys, "--bootstrap-servers", broker, "--records", "3000", "--rounds", "1",
        "--min-seconds", "0", "--max-uncommitted", "2000",
    )  # fmt: skip
    assert code == 0
    assert report["raw"]["records"] == report["streamfn"]["records"] == 3000
    assert [r["side"] for r in report["runs"]] == ["raw", "streamfn"]
    assert report["warmups"] == [] and report["max_uncommitted_records"] == 2000
    ratio = report["summary"]["ratios"]["streamfn/raw"]
    assert ratio["throughput"]["median"] == report["ratio"] and len(ratio["per_round"]) == 1
    assert report["summary"]["raw"]["cpu_s_per_million"]["median"] > 0


def test_kafka_grows_a_short_topic_for_min_seconds(
    broker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = bench(
        "kafka", capsys, "--bootstrap-servers", broker, "--records", "2000", "--rounds", "1",
        "--min-seconds", "0.2",
    )  # fmt: skip
    assert code == 0
    warmups = report["warmups"]
    assert warmups and warmups[0]["records"] == 2000
    if warmups[0]["seconds"] < 0.2:  # timed short: the topic grew for the rounds
        assert report["records"] > 2000 and warmups[-1]["records"] <= report["records"]
    assert [r["records"] for r in report["runs"]] == [report["records"]] * 2


def test_fill_kafka_writes_the_records_it_reports(
    broker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = bench(
        "fill",
        capsys,
        "kafka",
        "--bootstrap-servers",
        broker,
        "--records",
        "3000",
        "--keys",
        "zipf:50",
        "--size",
        "200",
    )
    assert code == 0
    assert report["records"] == 3000


@pytest.mark.parametrize("target", ["sqs", "kinesis"])
def test_fill_aws_writes_the_records_it_reports(
    target: str, moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"smoke-{uuid.uuid4().hex[:8]}"
    code, report = bench(
        "fill",
        capsys,
        target,
        "--endpoint-url",
        moto_endpoint,
        "--name",
        name,
        "--records",
        "120",
        "--keys",
        "uniform:4",
        "--partitions",
        "2",
    )
    assert code == 0
    assert (report["target"], report["records"]) == (target, 120)


def test_kafka_load_drain_handles_every_record_once(
    broker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = bench(
        "kafka-load",
        capsys,
        "--bootstrap-servers",
        broker,
        "--records",
        "4000",
        "--poison-every",
        "1000",
        "--timeout",
        "60",
    )
    assert code == 0
    assert (report["records"], report["dead_lettered"], report["lost"]) == (3996, 4, 0)
    assert report["duplicates"] == 0 and report["first_record_s"] > 0


def test_kafka_load_at_a_rate_measures_latency_and_plots(
    broker: str, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    plot = tmp_path / "load.png"
    pytest.importorskip("matplotlib")
    code, report = bench(
        "kafka-load",
        capsys,
        "--bootstrap-servers",
        broker,
        "--records",
        "600",
        "--rate",
        "1000",
        "--keys",
        "uniform:8",
        "--plot",
        str(plot),
        "--timeout",
        "60",
    )
    assert code == 0
    assert report["records"] == 600 and report["lost"] == 0
    assert 0 < report["p50_ms"] <= report["p99_ms"]
    assert plot.stat().st_size > 0


def test_http_load_answers_every_request(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = bench("http-load", capsys, "--rate", "200", "--duration", "1", "--bare")
    assert code == 0
    rows = {(r["server"], r["type"]): r for r in report["rows"]}
    assert set(rows) == {("bare ASGI", "sync"), ("streamfn", "sync"), ("streamfn", "event")}
    assert all(r["done"] == 200 and r["errors"] == 0 for r in rows.values())


@pytest.mark.usefixtures("aws_env")
def test_sqs_scenario_drains_on_both_sides(
    moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = bench(
        "sqs",
        capsys,
        "--endpoint-url",
        moto_endpoint,
        "--messages",
        "40",
        "--depth",
        "20",
        *("--rounds", "1", "--min-seconds", "0"),
    )
    assert code == 0
    row = report["rows"][0]
    assert row["raw"] > 0 and row["streamfn"] > 0 and row["warmup"] is None
    assert [(r["side"], r["messages"]) for r in row["runs"]] == [("raw", 40), ("streamfn", 40)]
    assert row["summary"]["streamfn"]["cpu_s_per_1000"]["median"] > 0


def test_kafka_load_watches_your_worker_through_its_commits(
    broker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    topic, group = f"yours-{uuid.uuid4().hex[:8]}", f"yours-{uuid.uuid4().hex[:8]}"
    run_loop(create_topic(broker, topic, 2))
    config = {
        "servers": broker,
        "topic": topic,
        "group": group,
        "records": 1000,
        "batch_size": 100,
        "batching_window": 0.0,
        "parallelization_factor": 1,
        "sleep_ms": 0.0,
        "per_record": False,
        "poison_every": 0,
        "latency": False,
        "ids_file": None,
    }
    worker = kit.WorkerProcess(worker_command(config))  # stands in for "your" worker
    try:
        assert kit.wait_until(worker.ready.is_set, 30)
        code, report = bench(
            "kafka-load",
            capsys,
            *("--bootstrap-servers", broker, "--topic", topic, "--group", group),
            *("--worker-pid", str(worker.process.pid), "--records", "1000", "--rate", "1000"),
            *("--timeout", "60"),
        )
    finally:
        worker.stop()
    assert code == 0
    assert report["records"] == 1000 and report["latency"] == "to commit"
    assert 0 < report["p50_ms"] <= report["p99_ms"] and report["cpu_s"] > 0


def test_kinesis_scenario_drains_on_both_sides(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = bench(
        "kinesis", capsys, "--records", "1000", "--lease-seconds", "3", "--repeat", "1",
        "--min-seconds", "0",
    )  # fmt: skip
    assert code == 0
    assert report["raw"]["records"] == report["streamfn"]["records"] == 1000
    assert report["raw"]["get_records_calls"] > 0 and report["streamfn"]["get_records_calls"] > 0
    assert report["rounds"] == 1 and [r["side"] for r in report["runs"]] == ["raw", "streamfn"]
    assert report["summary"]["short_runs"] == 0


def test_http_scenario_measures_every_server(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = bench(
        "http",
        capsys,
        *("--duration", "0.5", "--warmup", "0.2", "--rounds", "1", "--min-seconds", "0"),
        *("--connections", "4", "--generator", "asyncio"),
    )
    assert code in (0, 1)  # 1 = a speed target missed; speed is not what this checks
    assert [r["scenario"] for r in report["results"]] == [
        "bare ASGI",
        "streamfn sync",
        "streamfn Event (durable)",
    ]
    assert all(r["requests_per_s"] > 0 and r["errors"] == 0 for r in report["results"])
    assert [r["side"] for r in report["runs"]] == ["bare", "sync", "event"]
    assert all(r["cpu_s_per_1000"] > 0 and "load_start" in r for r in report["runs"])
    assert set(report["summary"]["ratios"]) == {"sync/bare", "event/sync"}
