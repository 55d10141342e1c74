"""A short run of ``streamfn bench rabbitmq`` and ``streamfn bench fill rabbitmq`` on the
machine's broker, in the session's virtual host: the harness works and its counts add up.
Speeds are not asserted. The scenarios run their own event loops, so these tests are sync."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from streamfn import cli

from .conftest import HOST, rabbitmqctl


def bench(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    capsys.readouterr()
    code = cli.main(["bench", *argv, "--json"])
    return code, orjson.loads(capsys.readouterr().out)


def test_the_rabbitmq_scenario_drains_on_both_sides(
    rabbit_vhost: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"amqp://guest:guest@{HOST}:5672/{rabbit_vhost}"
    code, report = bench(
        capsys, "rabbitmq", "--url", url, "--messages", "2000", "--batch-size", "50",
        "--rounds", "1", "--min-seconds", "0",
    )  # fmt: skip
    assert code == 0
    assert sorted(r["side"] for r in report["runs"]) == ["raw", "streamfn"]
    assert all(r["messages"] == 2000 for r in report["runs"])
    assert report["prefetch"] == 100
    assert "streamfn/raw" in report["summary"]["ratios"]
    assert rabbitmqctl("list_queues", "-p", rabbit_vhost, "name").strip() in ("", "name")


def test_fill_rabbitmq_writes_the_records_it_reports(
    rabbit_vhost: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"t-{uuid.uuid4().hex[:12]}"
    url = f"amqp://guest:guest@{HOST}:5672/{rabbit_vhost}"
    try:
        code, report = bench(
            capsys, "fill", "rabbitmq", "--amqp-url", url, "--name", name, "--records", "1500"
        )
        assert code == 0
        assert (report["target"], report["records"]) == ("rabbitmq", 1500)
        queues = rabbitmqctl("list_queues", "-p", rabbit_vhost, "name", "messages")
        assert f"{name}\t1500" in queues.splitlines()
    finally:
        rabbitmqctl("delete_queue", "-p", rabbit_vhost, name)
