"""What ``pip install .`` installs: the wheel carries one top-level name, ``streamfn`` (the
connectors as ``streamfn.connectors``), and a user project with its own ``connectors`` package
runs on it with ``streamfn run``.

The wheel is built the way ``pip install .`` builds it, with build isolation: pip fetches the
``setuptools>=77`` that pyproject.toml asks for (the suite's own virtualenv may hold an older
one, as Python 3.11's venv does), so this needs PyPI or a pip cache. It is built from a copy of
the source tree, so no ``build/`` or ``*.egg-info`` is written into the working tree and no stale
``build/lib`` leaks into it.

The fresh virtualenv gets the wheel with ``--no-deps`` and borrows the dependencies (orjson,
uvicorn, aiokafka, ...) from this suite's virtualenv through a ``.pth`` path line: a path line
does not run the ``.pth`` files of the directory it adds, so the editable install's import hook
stays off and ``streamfn`` can only come from the wheel (the test checks it does).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import textwrap
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 15.0  # seconds the worker may take to listen, answer or stop
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "venv",
    "__pycache__",
    "*.egg-info",
    "build",
    "dist",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    ".streamfn",
    "state",
)


def clean_env() -> dict[str, str]:
    """The environment without anything that would point an interpreter at this repository or
    at the suite's virtualenv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.pop("VIRTUAL_ENV", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check(*args: str | Path, cwd: Path | None = None, timeout: float = 120) -> str:
    """Run a command to completion; its stdout, or a failure with its output."""
    result = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stderr}"
    return result.stdout


@dataclass
class Installed:
    wheel: Path
    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """The repository's wheel, and a fresh virtualenv with it installed."""
    tmp = tmp_path_factory.mktemp("packaging")
    source = tmp / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=NOT_SOURCE)
    dist = tmp / "dist"
    check(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", dist, source)
    (wheel,) = dist.glob("streamfn-*.whl")

    venv = tmp / "venv"
    check(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    # This suite's pip, run by the fresh interpreter: no ensurepip, no index.
    pip = (sys.executable, "-m", "pip", "--python", python)
    check(*pip, "install", "--quiet", "--no-deps", "--no-index", wheel)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(check(python, "-c", purelib).strip())
    deps = sysconfig.get_paths()["purelib"]  # this suite's virtualenv
    (site / "_suite_dependencies.pth").write_text(deps + "\n")
    yield Installed(wheel, venv)


def test_the_wheel_holds_only_streamfn(installed: Installed) -> None:
    dist_info = "-".join(installed.wheel.name.split("-")[:2]) + ".dist-info"
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        top_level = wheel.read(f"{dist_info}/top_level.txt").decode().split()
        entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()

    stray = [n for n in names if not n.startswith(("streamfn/", f"{dist_info}/"))]
    assert stray == []
    assert top_level == ["streamfn"]
    assert "streamfn = streamfn.cli:main" in entry_points
    for required in (
        "streamfn/py.typed",
        "streamfn/cli.py",
        "streamfn/connectors/__init__.py",
        "streamfn/connectors/kafka/__init__.py",
        "streamfn/connectors/sqs/__init__.py",
        "streamfn/connectors/kinesis/__init__.py",
        "streamfn/connectors/http/__init__.py",
        "streamfn/connectors/http/openapi.json",
        "streamfn/connectors/webhook.py",
        "streamfn/bench/cli.py",
        "streamfn/testing/pytest_plugin.py",
    ):
        assert required in names, f"{required} is missing from {installed.wheel.name}"
    for outside in ("connectors/", "bench/", "tests/", "examples/", "deploy/"):
        assert not any(n.startswith(outside) for n in names), f"{outside} is in the wheel"
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


USER_PROJECT = {
    "connectors/__init__.py": '"""The user\'s own connectors, unrelated to streamfn\'s."""\n',
    "connectors/orders.py": """
        def total(items):
            return sum(item["price"] * item["quantity"] for item in items)
    """,
    "app.py": """
        import sys

        import streamfn
        import streamfn.connectors
        from connectors.orders import total
        from streamfn import App
        from streamfn.connectors.http import InvokeAPI, serve
        from streamfn.connectors.kafka import KafkaEventQueue, KafkaSource

        app = App("shop")


        @app.function(timeout=5.0)
        def order_total(event, context):
            return {
                "total": total(event["items"]),
                "streamfn": streamfn.__file__,
                "streamfn.connectors": streamfn.connectors.__file__,
                "connectors": sys.modules["connectors"].__file__,
                "kafka": [KafkaSource.__module__, KafkaEventQueue.__module__],
                "http": [InvokeAPI.__module__, serve.__module__],
            }
    """,
}


def write_user_project(project: Path) -> None:
    for name, text in USER_PROJECT.items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())


async def listening_port(stderr: asyncio.StreamReader) -> int:
    """The port of the worker's ``listening`` log line (lines that are not JSON, such as a
    warning printed at import, are passed over)."""
    seen: list[bytes] = []
    while True:
        raw = await stderr.readline()
        assert raw, "streamfn run exited before listening:\n" + b"".join(seen).decode()
        seen.append(raw)
        if raw.startswith(b"{") and (line := json.loads(raw)).get("message") == "listening":
            return int(line["port"])


def post(port: int, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=DEADLINE) as response:
        return response.status, json.loads(response.read())


async def test_streamfn_run_serves_a_user_project_with_its_own_connectors(
    installed: Installed, tmp_path: Path
) -> None:
    venv = installed.venv.resolve()
    project = tmp_path / "shop"
    write_user_project(project)

    # The interpreter of the fresh virtualenv imports streamfn from the wheel, not the
    # editable install, and sees no top-level connectors outside a project that has one.
    where = check(installed.python, "-c", "import streamfn; print(streamfn.__file__)", cwd=tmp_path)
    assert Path(where.strip()).is_relative_to(venv)
    find = "import importlib.util as u; print(u.find_spec('connectors'))"
    assert check(installed.python, "-c", find, cwd=tmp_path).strip() == "None"

    proc = await asyncio.create_subprocess_exec(
        venv / "bin" / "streamfn",
        "run",
        "app.py:app",
        "--port",
        "0",
        cwd=project,
        env=clean_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(DEADLINE):
            port = await listening_port(proc.stderr)

        status, answer = await asyncio.to_thread(
            post,
            port,
            "/2015-03-31/functions/order_total/invocations",
            {"items": [{"price": 3, "quantity": 2}, {"price": 5, "quantity": 1}]},
        )
        assert status == 200
        assert answer["total"] == 11
        assert Path(answer["streamfn"]).is_relative_to(venv)
        assert Path(answer["streamfn.connectors"]).is_relative_to(venv)
        assert Path(answer["connectors"]) == (project / "connectors" / "__init__.py").resolve()
        assert all(m.startswith("streamfn.connectors.kafka.") for m in answer["kafka"])
        assert all(m.startswith("streamfn.connectors.http.") for m in answer["http"])

        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(DEADLINE):
            rest = await proc.stderr.read()
            assert await proc.wait() == 0, rest.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_the_editable_install_has_no_top_level_connectors(tmp_path: Path) -> None:
    """Outside the repository root (where the folder itself is importable from the current
    directory) the development install exposes the connectors only as streamfn.connectors."""
    out = check(
        sys.executable,
        "-c",
        "import importlib.util as u, streamfn.connectors.kafka as k;"
        "print(u.find_spec('connectors'), k.__name__, k.__file__)",
        cwd=tmp_path,
    )
    spec, name, path = out.split()
    assert spec == "None"
    assert name == "streamfn.connectors.kafka"
    assert Path(path).resolve().is_relative_to(ROOT)
