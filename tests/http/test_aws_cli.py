"""The AWS CLI, unchanged, against ``streamfn run``: ``aws lambda invoke --endpoint-url``."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from .support import APPS, Cli, streamfn_run

pytestmark = pytest.mark.slow

AWS = shutil.which("aws") or str(Path(sys.executable).with_name("aws"))


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[Cli]:
    state = tmp_path / "state"
    async with streamfn_run(f"{APPS}/hello_app.py:app", "--state-dir", str(state)) as cli:
        yield cli


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


async def aws(port: int, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """``aws lambda invoke`` with dummy credentials and no user config."""
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_MAX_ATTEMPTS": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        AWS,
        "lambda",
        "invoke",
        "--endpoint-url",
        f"http://127.0.0.1:{port}",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        stdout, stderr = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, stdout.decode(), stderr.decode()


async def test_aws_cli_invoke_with_tail_and_qualifier(worker: Cli, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    code, stdout, stderr = await aws(
        worker.port,
        tmp_path,
        "--function-name",
        "hello",
        "--qualifier",
        "live",
        "--log-type",
        "Tail",
        "--payload",
        '{"name": "cli"}',
        str(out),
    )
    assert code == 0, stderr
    response = json.loads(stdout)
    assert response["StatusCode"] == 200
    assert response["ExecutedVersion"] == "1"
    tail = base64.b64decode(response["LogResult"]).decode()
    assert "\tgreeting cli\n" in tail
    assert "printed cli\n" in tail
    assert read_json(out)["message"] == "hello cli"


async def test_aws_cli_event_function_error_and_missing_function(
    worker: Cli, tmp_path: Path
) -> None:
    out = tmp_path / "out.json"
    event = await aws(
        worker.port, tmp_path, "--function-name", "hello", "--invocation-type", "Event", str(out)
    )
    failed = await aws(worker.port, tmp_path, "--function-name", "boom", str(out))
    missing = await aws(worker.port, tmp_path, "--function-name", "nope", str(out))
    assert (event[0], json.loads(event[1])["StatusCode"]) == (0, 202)
    assert failed[0] == 0 and json.loads(failed[1])["FunctionError"] == "Unhandled"
    assert read_json(out)["errorMessage"] == "boom"
    assert missing[0] != 0  # 255 in AWS CLI v1, 254 in v2
    assert "ResourceNotFoundException" in missing[2]
