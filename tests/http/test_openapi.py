"""The adapter against its own OpenAPI description: schemathesis generates requests for every
route of the document :mod:`streamfn.connectors.http.openapi` points to (``OPENAPI_PATH``,
``connectors/http/openapi.json`` in the repository, served as ``GET /openapi.json``) and sends
them to a ``streamfn run`` worker. No response may be a 5xx (the app's functions never fail),
undocumented, or of an undocumented content type."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    status_code_conformance,
)

from streamfn.connectors.http.openapi import OPENAPI_PATH

from .support import APPS, DEADLINE, ROOT

pytestmark = pytest.mark.slow


def listening_port(log: Path) -> int | None:
    for line in log.read_text().splitlines():
        record = json.loads(line)
        if record.get("message") == "listening":
            port: int = record["port"]
            return port
    return None


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``streamfn run`` of the OpenAPI app; its base URL."""
    state = tmp_path_factory.mktemp("state")
    log = state / "stderr.log"
    command = [sys.executable, "-m", "streamfn.cli", "run", f"{APPS}/openapi_app.py:app"]
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [*command, "--port", "0", "--state-dir", str(state)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + DEADLINE
        while (port := listening_port(log)) is None:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "streamfn run did not start listening in time"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(DEADLINE)


def test_served_document_is_the_file(worker: str) -> None:
    with urllib.request.urlopen(f"{worker}/openapi.json", timeout=DEADLINE) as served:
        assert json.load(served) == json.loads(Path(OPENAPI_PATH).read_text())


schema = schemathesis.openapi.from_path(OPENAPI_PATH)
# Random names would only ever meet 404/403; most cases are pointed at the app's functions.
TARGETS = {"FunctionName": ["fn", "fn:live", "fn:1", "echo", "missing"], "function": ["echo"]}


def aim_at_real_functions(case: Any) -> None:
    """Replace the generated function name by one of the app's, chosen by the generated value,
    so the run stays deterministic."""
    for name, choices in TARGETS.items():
        value = (case.path_parameters or {}).get(name)
        if value is not None:
            case.path_parameters[name] = choices[sum(map(ord, value)) % len(choices)]


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_route_conforms(case: Any, worker: str) -> None:
    aim_at_real_functions(case)
    response = case.call(base_url=worker, timeout=DEADLINE)
    case.validate_response(
        response,
        checks=[not_a_server_error, status_code_conformance, content_type_conformance],
    )
