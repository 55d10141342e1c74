"""Log lines: Lambda's JSON log keys by default, a text format for terminals, and the fields
taken from the running invocation's context (requestId, traceId)."""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamfn import App, Context, logs
from streamfn.cli import build_parser
from streamfn.errors import ConfigError
from streamfn.tracing import current_trace_id

APPS = Path(__file__).parent / "cli_apps"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def make_record(message: str, level: int = logging.INFO, **extra: Any) -> logging.LogRecord:
    return logging.getLogger("streamfn.test").makeRecord(
        "streamfn.test", level, __file__, 1, message, (), None, extra=extra
    )


def as_json(record: logging.LogRecord) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(logs.JsonFormatter().format(record))
    return parsed


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Put the root logger back as it was after a test that configures it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_use_lambdas_keys_in_order() -> None:
    line = as_json(make_record("partitions assigned", logging.WARNING, owned=2))
    assert list(line) == ["timestamp", "level", "message", "logger", "owned"]
    assert TIMESTAMP.fullmatch(line["timestamp"])
    assert (line["level"], line["message"], line["logger"]) == (
        "WARNING",
        "partitions assigned",
        "streamfn.test",
    )


def test_extra_fields_cannot_replace_the_core_keys() -> None:
    line = as_json(make_record("real", level=logging.INFO, timestamp="x", logger="y"))
    assert line["message"] == "real" and line["logger"] == "streamfn.test"
    assert TIMESTAMP.fullmatch(line["timestamp"])


def test_exception_is_written_as_lambdas_error_fields() -> None:
    try:
        raise ValueError("bad input")
    except ValueError:
        record = logging.getLogger("streamfn.test").makeRecord(
            "streamfn.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    line = as_json(record)
    assert (line["errorType"], line["errorMessage"]) == ("ValueError", "bad input")
    assert "test_exception_is_written_as_lambdas_error_fields" in "".join(line["stackTrace"])


async def test_request_id_is_on_lines_written_inside_an_invocation() -> None:
    lines: list[dict[str, Any]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(as_json(record))

    user = logging.getLogger("tests.user")
    user.addHandler(collect := Collect())
    user.setLevel(logging.INFO)
    app = App()

    @app.function()
    async def hello(event: Any, context: Context) -> None:
        user.info("inside")

    try:
        result = await app.invoke("hello", {})
        user.info("outside")
    finally:
        user.removeHandler(collect)
    inside, outside = lines
    assert inside["requestId"] == result.request_id
    assert "requestId" not in outside


def test_trace_id_is_on_lines_written_where_tracing_set_it() -> None:
    assert "traceId" not in as_json(make_record("untraced"))
    token = current_trace_id.set("4bf92f3577b34da6a3ce929d0e0e4736")
    try:
        line = as_json(make_record("traced"))
    finally:
        current_trace_id.reset(token)
    assert line["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_text_lines_are_one_readable_line_with_the_trace_below() -> None:
    record = make_record(
        "invocation failed: ValueError: x; retry in 1 s",
        logging.ERROR,
        partition="p0",
        next="retry in 1 s",
        partitions=["p0", "p1"],
        stackTrace=['  File "h.py", line 3, in h\n    raise ValueError("x")\n'],
    )
    first, *trace = logs.TextFormatter().format(record).split("\n")
    timestamp, rest = first.split(" ", 1)
    assert TIMESTAMP.fullmatch(timestamp)
    assert rest == (
        "ERROR   streamfn.test: invocation failed: ValueError: x; retry in 1 s "
        'partition=p0 next="retry in 1 s" partitions=["p0","p1"]'
    )
    assert trace == ['  File "h.py", line 3, in h', '    raise ValueError("x")']


def test_configure_selects_the_format(root_logging: None) -> None:
    logs.configure("warning", "text")
    [handler] = logging.getLogger().handlers
    assert isinstance(handler.formatter, logs.TextFormatter)
    assert logging.getLogger().level == logging.WARNING
    with pytest.raises(ConfigError, match="log format='xml' is invalid"):
        logs.configure("info", "xml")


def test_log_format_option_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_parser().parse_args(["run", "app:app"]).log_format == "json"
    monkeypatch.setenv("STREAMFN_LOG_FORMAT", "text")
    assert build_parser().parse_args(["run", "app:app"]).log_format == "text"
    args = build_parser().parse_args(["run", "app:app", "--log-format", "json"])
    assert args.log_format == "json"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "app:app", "--log-format", "xml"])


def test_streamfn_run_writes_text_lines_with_log_format_text() -> None:
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "streamfn.cli", "run", f"{APPS}/drain.py:app"),
            *("--no-http", "--log-format", "text"),
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert process.stderr is not None
    try:
        deadline = time.monotonic() + 30
        line = ""
        while "partitions assigned" not in line and time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            process.wait()
    timestamp, level, logger, message = line.split(maxsplit=3)
    assert TIMESTAMP.fullmatch(timestamp)
    assert (level, logger) == ("INFO", "streamfn.mapping:")
    assert message.startswith("partitions assigned function=handler mapping=memory://p0 ")
