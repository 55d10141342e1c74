"""The operational files against Prometheus's own tool and against the code: a busy worker's
``/metrics`` passes ``promtool check metrics``, ``deploy/prometheus/alerts.yaml`` passes
``promtool check rules`` and its unit tests (``alerts.test.yaml``), the Grafana dashboard's
queries parse, and every metric the rules and the dashboard name is in a real ``/metrics``
output, so neither can drift from what the code exports.

promtool comes with Debian's ``prometheus`` package (``bash scripts/setup`` installs it). Where
it is missing these checks are skipped, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamfn import App, Batch, Context
from streamfn.connectors.kafka import KafkaSource
from streamfn.testing import MemoryDestination, MemorySource
from streamfn.testing.servers import TansuBroker

from .http.support import DEADLINE, ROOT, invoke, raw_request, serving, wait_until

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"
#: Series Prometheus makes itself, not a worker: a rule may name them.
SCRAPE_SERIES = {"up"}
METRIC = re.compile(r"\b(?:streamfn|process)_[a-z_]+\b")
#: Grafana's variables, replaced by values that make each query plain PromQL.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$job": ".*", "$function": ".*", "$mapping": ".*"}


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool is missing: bash scripts/setup installs it (Debian package prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI runs these checks")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def exposition(kafka_broker: TansuBroker, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The ``/metrics`` text of a worker that did a bit of everything (see :func:`busy`)."""
    return asyncio.run(busy(kafka_broker.address, tmp_path_factory.mktemp("state")))


async def busy(kafka: str, state_dir: Path) -> str:
    """Run a worker whose mappings succeed, retry, bisect, send records to on_failure and
    discard them, one on Kafka (offset lag); whose functions are invoked synchronously and as
    events, one failing for good; and scrape its ``/metrics`` once all of it happened. On the
    way, ``/ready`` is checked with a Kafka mapping that has its assignment."""
    app = App("observed", state_dir=state_dir, async_time_scale=0.001)
    quick = {"retry_base_delay": 0.001, "retry_max_delay": 0.01}
    orders = MemorySource(["orders-0", "orders-1"])
    failed = MemoryDestination()

    @app.consume(
        orders,
        batch_size=4,
        maximum_retry_attempts=1,
        bisect_batch_on_function_error=True,
        on_failure=failed,
        **quick,
    )
    async def picky(batch: Batch, context: Context) -> None:
        if any(record.value == b"bad" for record in batch):
            raise ValueError("a bad order")

    lossy = MemorySource(["p0"])

    @app.consume(lossy, maximum_retry_attempts=0, **quick)
    async def broken(batch: Batch, context: Context) -> None:
        raise RuntimeError("always")

    topic = f"orders-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()
    source = KafkaSource(
        topic,
        bootstrap_servers=kafka,
        group_id=f"g-{uuid.uuid4().hex[:12]}",
        lag_interval=0.1,
        consumer_options={"heartbeat_interval_ms": 250, "session_timeout_ms": 2000},
    )
    consumed: list[bytes] = []

    @app.consume(source, **quick)
    async def kafka_orders(batch: Batch, context: Context) -> None:
        consumed.extend(record.value for record in batch)

    @app.function(maximum_retry_attempts=0)
    async def greet(event: Any, context: Context) -> Any:
        if event == "fail":
            raise ValueError("no greeting")
        return event

    for partition in orders.logs:
        orders.extend(partition, [b"ok", b"bad", b"ok", b"ok"])
    lossy.append("p0", b"x")
    async with serving(app) as served:
        producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all")
        await producer.start()
        try:
            for n in range(10):
                await producer.send_and_wait(topic, b"%d" % n, partition=n % 2)
        finally:
            await producer.stop()
        await invoke(served.client, FunctionName="greet", Payload=b'"hi"')
        await invoke(served.client, FunctionName="greet", InvocationType="Event", Payload=b'"fail"')
        lag = re.compile(rf'streamfn_esm_offset_lag\{{[^}}]*partition="{topic}-1"}} 0\n')
        await wait_until(
            lambda: (
                failed.records
                and len(consumed) == 10
                and app.metrics.dead_letters.labels("greet", "RetriesExhausted").value == 1
                and app.mappings[1].stats.partitions["p0"].dropped
            ),
            timeout=30,
        )
        async with asyncio.timeout(DEADLINE):  # until committed, and the lag read since
            while not lag.search(scraped := await metrics(served.port)):
                await asyncio.sleep(0.05)
        ready = await raw_request(served.port, "GET", "/ready")
    assert (ready.status, ready.json()) == (200, {"status": "ready"})
    return scraped


async def metrics(port: int) -> str:
    return (await raw_request(port, "GET", "/metrics")).body.decode()


def exported(exposition: str) -> set[str]:
    """The sample names of an exposition: every family, with a histogram's ``_bucket``,
    ``_sum`` and ``_count``."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def alert_queries() -> dict[str, str]:
    """Alert name -> its PromQL, and each unit-test series of alerts.test.yaml."""
    rules = yaml.safe_load(ALERTS.read_text())
    queries = {r["alert"]: r["expr"] for group in rules["groups"] for r in group["rules"]}
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    for case in tests["tests"]:
        for n, series in enumerate(case["input_series"]):
            queries[f"{case['name']} #{n}"] = series["series"]
    return queries


def dashboard_queries() -> dict[str, str]:
    """Panel title -> each of its queries, Grafana's variables replaced; and the variables'
    ``label_values(...)`` queries."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", ()):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries[f"{panel['title']} {target['refId']}"] = expr
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries[f"${variable['name']}"] = variable["query"]["query"]
    return queries


def test_a_busy_workers_metrics_pass_promtool_check_metrics(promtool: str, exposition: str) -> None:
    assert 'streamfn_esm_on_failure_records_total{function="picky"' in exposition
    assert 'streamfn_esm_dropped_records_total{function="broken",' in exposition
    assert 'streamfn_esm_offset_lag{function="kafka_orders",' in exposition
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alert_rules_pass_promtool_check_and_their_unit_tests(promtool: str) -> None:
    checked = subprocess.run([promtool, "check", "rules", ALERTS], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", ALERT_TESTS.name],
        capture_output=True,
        text=True,
        cwd=ALERT_TESTS.parent,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """promtool parses PromQL only in rule files: each panel query becomes a recording rule."""
    rules = [
        {"record": f"dashboard:query_{n}", "expr": expr}
        for n, (title, expr) in enumerate(dashboard_queries().items())
        if not title.startswith("$")  # label_values() is Grafana's, not PromQL
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_metric_the_rules_and_dashboard_name_is_exported(exposition: str) -> None:
    names = exported(exposition) | SCRAPE_SERIES
    queries = {**alert_queries(), **dashboard_queries()}
    unknown = {
        where: sorted(set(METRIC.findall(query)) - names)
        for where, query in queries.items()
        if set(METRIC.findall(query)) - names
    }
    assert unknown == {}
    used = {name for query in queries.values() for name in METRIC.findall(query)}
    assert {"streamfn_esm_offset_lag", "streamfn_esm_iterator_age_seconds"} <= used
