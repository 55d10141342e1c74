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


def run_cli(
    *args: str, timeout: float = 30, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamfn.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
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
    assert "argument --port: '70000' is not a port number (0-65535)" in result.stderr


LEVELS = "(choose from 'debug', 'info', 'warning', 'error')"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--port", "abc"], {}, "argument --port: 'abc' is not a port number (0-65535)"),
        (
            [],
            {"STREAMFN_PORT": "abc"},
            "argument --port: 'abc' from STREAMFN_PORT is not a port number (0-65535)",
        ),
        (
            [],
            {"STREAMFN_METRICS_PORT": "-1"},
            "argument --metrics-port: '-1' from STREAMFN_METRICS_PORT is not a port number "
            "(0-65535)",
        ),
        (
            ["--log-level", "verbose"],
            {},
            f"argument --log-level: invalid choice: 'verbose' {LEVELS}",
        ),
        (
            [],
            {"STREAMFN_LOG_LEVEL": "verbose"},
            f"argument --log-level: invalid choice: 'verbose' from STREAMFN_LOG_LEVEL {LEVELS}",
        ),
        (
            [],
            {"STREAMFN_LOG_FORMAT": "xml"},
            "argument --log-format: invalid choice: 'xml' from STREAMFN_LOG_FORMAT "
            "(choose from 'json', 'text')",
        ),
        (
            [],
            {"STREAMFN_STUCK_AFTER": "-1"},
            "argument --stuck-after: '-1' from STREAMFN_STUCK_AFTER is not a number of "
            "seconds >= 0",
        ),
        (
            ["--shutdown-timeout", "nan"],
            {},
            "argument --shutdown-timeout: 'nan' is not a number of seconds >= 0",
        ),
    ],
)
def test_bad_option_or_environment_value_exits_2_with_one_line(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = run_cli("run", f"{APPS}/drain.py:app", "--no-http", *args, env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"streamfn run: error: {message}"
    assert "Traceback" not in result.stderr


PREAMBLE = "from streamfn import App, FileDestination\n\napp = App('t')\n"  # lines 1-3


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (
            "@app.function(timout=5)\ndef h(event, context): ...\n",
            "@app.function: unknown setting 'timout' (did you mean 'timeout'?)",
        ),
        (
            "from streamfn.connectors.kafka import KafkaSource\n"
            "source = KafkaSource('t', bootstrap_server='localhost:9092', group_id='g')\n",
            "TypeError: KafkaSource.__init__() got an unexpected keyword argument "
            "'bootstrap_server'",
        ),
        (
            "@app.function\nasync def h(event): ...\n",
            "@app.function: handler 'h' takes (event), but it is called with two arguments: "
            "define it as (event, context)",
        ),
        (
            "import no_such_module_xyz\n",
            "ModuleNotFoundError: No module named 'no_such_module_xyz'",
        ),
        ("def broken(:\n", "SyntaxError: invalid syntax"),
    ],
)
def test_an_app_that_fails_to_import_exits_2_naming_its_file_and_line(
    tmp_path: Path, code: str, message: str
) -> None:
    (tmp_path / "app.py").write_text(PREAMBLE + code)
    result = run_cli("run", f"{tmp_path}/app.py:app", "--no-http")
    assert result.returncode == 2
    line = 5 if code.startswith("from") else 4
    assert result.stderr.splitlines() == [f"streamfn: error: {tmp_path}/app.py:{line}: {message}"]


def test_an_error_in_a_module_the_app_imports_names_that_module(tmp_path: Path) -> None:
    (tmp_path / "helpers.py").write_text("def load():\n    return 1 / 0\n\n\nload()\n")
    (tmp_path / "app.py").write_text(PREAMBLE + "import helpers\n")
    result = run_cli("run", f"{tmp_path}/app.py:app", "--no-http")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"streamfn: error: {tmp_path}/helpers.py:2: ZeroDivisionError: division by zero"
    ]


def test_an_unwritable_destination_exits_2_before_anything_runs(tmp_path: Path) -> None:
    code = (
        f"@app.function(on_failure=FileDestination({str(tmp_path)!r}))\n"
        "def h(event, context): ...\n"
    )
    (tmp_path / "app.py").write_text(PREAMBLE + code)
    result = run_cli("run", f"{tmp_path}/app.py:app", "--no-http")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"streamfn: error: on_failure of function 'h': FileDestination {str(tmp_path)!r}: "
        "is a directory"
    )


def test_dlq_limit_and_state_dir_are_checked(tmp_path: Path) -> None:
    result = run_cli("dlq", "list", "--limit", "0")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "streamfn dlq list: error: argument --limit: '0' is not a whole number >= 1"
    )
    (tmp_path / "async-events.sqlite3").write_text("not a database")
    result = run_cli("dlq", "list", "--state-dir", str(tmp_path))
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        f"streamfn: error: the event queue {tmp_path / 'async-events.sqlite3'} is damaged "
        "(file is not a database); "
    )
    assert line.endswith(
        f"`streamfn queue salvage --state-dir {tmp_path}`: it copies every "
        "readable event and dead letter into a new queue and keeps the damaged "
        "file aside"
    )


def test_bench_fill_kafka_without_bootstrap_servers_exits_2() -> None:
    result = run_cli("bench", "fill", "kafka")
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["streamfn bench fill: kafka needs --bootstrap-servers"]


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


# -- SAM/CloudFormation templates ----------------------------------------------------------

EXAMPLE = Path(__file__).parents[1] / "examples" / "sam" / "template.yaml"


def test_validate_lists_what_a_template_runs_and_exits_0(tmp_path: Path) -> None:
    result = run_cli("validate", str(EXAMPLE), "--parameter-overrides", "Stage=prod")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert (
        "AcceptOrder: python3.12 orders.accept from CodeUri src/; timeout 10 s, memory "
        "256 MB, reserved concurrency 50" in out
    )
    assert (
        "ShipOrderStream: kinesis order-events-prod -> ShipOrder  BatchSize=100 "
        "MaximumRetryAttempts=2 BisectBatchOnFunctionError=true" in out
    )
    assert "StatusNightly: cron(0 2 * * ? *) -> Status:live (input {'report': 'nightly'})" in out
    assert "function URL /urls/Status/ -> live, auth NONE" in out
    assert "Unsupported" not in out


def test_validate_lists_unsupported_parts_and_exits_1(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("def handler(event, context):\n    pass\n")
    template.write_text(
        "Transform: AWS::Serverless-2016-10-31\nResources:\n  Api:\n"
        "    Type: AWS::Serverless::Function\n    Properties:\n      Runtime: python3.12\n"
        "      CodeUri: src/\n      Handler: app.handler\n      Events:\n        Get:\n"
        "          Type: Api\n          Properties: {Path: /, Method: get}\n"
    )
    result = run_cli("validate", str(template))
    assert result.returncode == 1, result.stderr
    assert "ServerlessRestApi: AWS::ApiGateway::RestApi: API Gateway events" in result.stdout
    refused = run_cli("run", str(template), "--no-http")
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1
    assert "Resources.ServerlessRestApi: AWS::ApiGateway::RestApi" in refused.stderr
    assert "pass --skip-unsupported to run the rest" in refused.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--parameter-overrides", "Stage=test"],
            "--parameter-overrides Stage='test': not one of AllowedValues ['dev', 'prod']",
        ),
        (["--parameter-overrides", "Stage"], "--parameter-overrides 'Stage': expected Key=Value"),
        (["--resource-name", "Nope=x"], "--resource-name Nope: no such resource"),
    ],
)
def test_validate_refuses_bad_options_in_one_line(args: list[str], message: str) -> None:
    result = run_cli("validate", str(EXAMPLE), *args)
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_validate_names_a_missing_handler(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("def other(event, context):\n    pass\n")
    template.write_text(
        "Resources:\n  Fn:\n    Type: AWS::Lambda::Function\n    Properties:\n"
        "      Runtime: python3.12\n      Code: src\n      Handler: app.handler\n"
    )
    result = run_cli("validate", str(template))
    assert result.returncode == 2
    assert "Resources.Fn.Properties.Handler:" in result.stderr
    assert "app.py defines no 'handler'" in result.stderr


def test_template_options_with_an_app_target_are_refused() -> None:
    result = run_cli("run", f"{APPS}/drain.py:app", "--no-http", "--skip-unsupported")
    assert result.returncode == 2
    assert "--skip-unsupported applies to a template" in result.stderr


def test_run_template_flows_records_through_its_functions_end_to_end(
    tmp_path: Path, moto_endpoint: str, aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamfn.sam import LoadOptions, plan_template
    from tests.sam.support import create_resources

    stage = "dev"
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    create_resources(plan_template(EXAMPLE, LoadOptions(parameter_overrides={"Stage": stage})))
    env = {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "streamfn.cli", "run", str(EXAMPLE), "--no-http",
         "--state-dir", str(tmp_path / "state"),
         "--parameter-overrides", f"Stage={stage}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env},
    )  # fmt: skip
    assert process.stdout is not None
    try:
        deadline = time.monotonic() + 30
        lines: list[str] = []
        while time.monotonic() < deadline and not any('"starting"' in line for line in lines):
            lines.append(process.stdout.readline())
        import boto3

        sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
        url = sqs.get_queue_url(QueueName=f"orders-{stage}")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody='{"id": 42}')
        while time.monotonic() < deadline and not any('"shipped": 42' in line for line in lines):
            lines.append(process.stdout.readline())
        assert any('"shipped": 42' in line for line in lines), "".join(lines[-20:])
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    assert code == 0, "".join(lines[-20:]) + process.stdout.read()
