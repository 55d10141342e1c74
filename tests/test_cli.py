"""`streamfn run` exit codes and messages for bad input, and a graceful stop of mappings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

APPS = Path(__file__).parent / "cli_apps"


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamfn.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_colon", "must be 'package.module:app' or 'path/to/file.py:app'"),
        ("missing_module_xyz:app", "cannot import 'missing_module_xyz'"),
        (f"{APPS}/nope.py:app", "no such file"),
        (f"{APPS}/not_an_app.py:app", "is a object, not a streamfn.App"),
        (f"{APPS}/not_an_app.py:other", "has no attribute 'other'"),
        (f"{APPS}/bad_mapping.py:app", "batch_size=0 is invalid: must be an integer from 1"),
    ],
)
def test_bad_target_or_mapping_exits_2_with_a_clear_message(target: str, message: str) -> None:
    result = run_cli("run", target, "--no-http")
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_option_exits_2() -> None:
    result = run_cli("run", f"{APPS}/drain.py:app", "--port", "70000")
    assert result.returncode == 2
    assert "out of range" in result.stderr


def test_sigterm_drains_commits_and_exits_0(tmp_path: Path) -> None:
    report = tmp_path / "committed"
    process = subprocess.Popen(
        [sys.executable, "-m", "streamfn.cli", "run", f"{APPS}/drain.py:app", "--no-http"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "DRAIN_REPORT": str(report)},
    )
    assert process.stdout is not None
    processed = 0
    deadline = time.monotonic() + 30
    while processed < 10 and time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("processed"):
            processed += int(line.split()[1])
    assert processed == 10
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    assert report.read_text() == "10"
