"""``streamfn run`` is secure by default: beyond loopback it serves the Invoke API only with
access keys (``--access-keys-file``, env ``STREAMFN_ACCESS_KEYS_FILE``) or when told not to
(``--allow-unauthenticated``), a bad keys file stops it with one line, and an operational-only
worker (``--no-http --metrics-port``) may listen anywhere, as it invokes nothing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import botocore.config
import pytest

from streamfn import ConfigError
from streamfn.access_keys import load

from .http.support import APPS, DEADLINE, SESSION, raw_request, streamfn_run

HELLO = f"{APPS}/hello_app.py:app"
KEY_ID, SECRET = "AKIDFROMFILE", "file-secret-0123456789"
INVOKE = "/2015-03-31/functions/hello/invocations"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``streamfn run`` that must stop before serving: its exit code and output."""
    return subprocess.run(
        [sys.executable, "-m", "streamfn.cli", "run", HELLO, "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def keys_file(tmp_path: Path, document: Any) -> str:
    path = tmp_path / "keys.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return str(path)


GOOD = {"keys": [{"access_key_id": KEY_ID, "secret_access_key": SECRET, "functions": ["hello"]}]}


def test_a_non_loopback_host_without_keys_exits_2_saying_how_to_give_them(
    tmp_path: Path,
) -> None:
    result = run_cli("--host", "0.0.0.0", "--state-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("streamfn: error: refusing to serve the Invoke API on 0.0.0.0")
    assert "--access-keys-file PATH (env STREAMFN_ACCESS_KEYS_FILE)" in result.stderr
    assert "--allow-unauthenticated" in result.stderr


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--allow-unauthenticated"], {}), ([], {"STREAMFN_ALLOW_UNAUTHENTICATED": "1"})],
)
async def test_allow_unauthenticated_starts_and_warns(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    async with streamfn_run(
        HELLO, "--host", "0.0.0.0", "--state-dir", str(tmp_path), *args, env=env
    ) as cli:
        warning = await cli.read_until(lambda line: line["level"] == "WARNING")
        assert warning["message"].startswith("serving the Invoke API without authentication")
        assert warning["host"] == "0.0.0.0"
        response = await raw_request(cli.port, "POST", INVOKE, b"{}")
        assert response.status == 200
        assert await cli.terminate() == 0


def test_a_bad_allow_unauthenticated_value_exits_2() -> None:
    result = run_cli(env={"STREAMFN_ALLOW_UNAUTHENTICATED": "maybe"})
    assert result.returncode == 2
    assert (
        "argument --allow-unauthenticated: 'maybe' from STREAMFN_ALLOW_UNAUTHENTICATED is not "
        "1 or 0" in result.stderr
    )


@pytest.mark.parametrize("from_env", [False, True])
async def test_keys_from_a_file_protect_a_worker_on_any_host(
    tmp_path: Path, from_env: bool
) -> None:
    path = keys_file(tmp_path, GOOD)
    args = [] if from_env else ["--access-keys-file", path]
    env = {"STREAMFN_ACCESS_KEYS_FILE": path} if from_env else {}
    async with streamfn_run(
        HELLO, "--host", "0.0.0.0", "--state-dir", str(tmp_path), *args, env=env
    ) as cli:
        starting = await cli.read_until(lambda line: line["message"] == "starting")
        assert starting["accessKeys"] == [KEY_ID]
        unsigned = await raw_request(cli.port, "POST", INVOKE, b"{}")
        assert unsigned.status == 403
        assert unsigned.headers["x-amzn-errortype"] == "MissingAuthenticationTokenException"
        client = SESSION.client(
            "lambda",
            endpoint_url=f"http://127.0.0.1:{cli.port}",
            region_name="us-east-1",
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
            config=botocore.config.Config(
                retries={"max_attempts": 0}, connect_timeout=DEADLINE, read_timeout=DEADLINE
            ),
        )
        try:
            response = await asyncio.to_thread(
                client.invoke, FunctionName="hello", Payload=b'{"name": "key"}'
            )
            payload = json.loads(response["Payload"].read())
        finally:
            client.close()
        assert (response["StatusCode"], payload["message"]) == (200, "hello key")
        assert await cli.terminate() == 0
    assert not any(SECRET in json.dumps(line) for line in cli.lines)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("{not json", "is not JSON"),
        ({"key": []}, 'must be a JSON object with one member, "keys"'),
        ({"keys": []}, '"keys" must be a non-empty list of objects'),
        ({"keys": [{"access_key_id": KEY_ID}]}, "keys[0].secret_access_key must be a string"),
        (
            {"keys": [{"access_key_id": KEY_ID, "secret_access_key": SECRET, "function": ["a"]}]},
            "keys[0] has unknown field 'function'",
        ),
        (
            {"keys": [{"access_key_id": "A/B", "secret_access_key": SECRET}]},
            "keys[0]: access_key_id='A/B' is invalid",
        ),
        (
            {"keys": [{"access_key_id": KEY_ID, "secret_access_key": SECRET, "functions": []}]},
            "functions of 'AKIDFROMFILE' is empty: omit it to grant every one",
        ),
        (
            {
                "keys": [
                    {"access_key_id": KEY_ID, "secret_access_key": SECRET, "functions": ["a:b:c"]}
                ]
            },
            "'a:b:c' is not NAME or NAME:QUALIFIER",
        ),
        (
            {
                "keys": [
                    {
                        "access_key_id": KEY_ID,
                        "secret_access_key": SECRET,
                        "invocation_types": ["Async"],
                    }
                ]
            },
            "'Async' is not one of RequestResponse, Event, DryRun",
        ),
        (
            {"keys": [{"access_key_id": KEY_ID, "secret_access_key": SECRET}] * 2},
            "access key 'AKIDFROMFILE' is given twice",
        ),
        (
            {"keys": [{"access_key_id": KEY_ID, "secret_access_key": SECRET + "\n"}]},
            "has leading or trailing whitespace",
        ),
    ],
)
def test_a_bad_keys_file_is_refused_naming_the_field_never_the_secret(
    tmp_path: Path, document: Any, message: str
) -> None:
    path = keys_file(tmp_path, document)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert message in str(info.value)
    assert str(info.value).startswith(f"access keys file {path!r}")
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("from_env", [False, True])
def test_streamfn_run_with_a_bad_keys_file_exits_2_in_one_line(
    tmp_path: Path, from_env: bool
) -> None:
    path = keys_file(tmp_path, {"keys": [{"access_key_id": KEY_ID, "secret_access_key": 7}]})
    if from_env:
        result = run_cli(env={"STREAMFN_ACCESS_KEYS_FILE": path})
        named = f"access keys file {path!r} from STREAMFN_ACCESS_KEYS_FILE"
    else:
        result = run_cli("--access-keys-file", path)
        named = f"access keys file {path!r}"
    assert result.returncode == 2
    assert result.stderr == (
        f"streamfn: error: {named}: keys[0].secret_access_key must be a string\n"
    )
    missing = run_cli("--access-keys-file", str(tmp_path / "absent.json"))
    assert missing.returncode == 2
    assert "cannot read access keys file" in missing.stderr
    assert "No such file or directory" in missing.stderr


async def test_an_operational_only_worker_listens_anywhere_and_invokes_nothing() -> None:
    async with streamfn_run(HELLO, "--no-http", "--host", "0.0.0.0", "--metrics-port", "0") as cli:
        metrics = await raw_request(cli.port, "GET", "/metrics")
        invoke = await raw_request(cli.port, "POST", INVOKE, b"{}")
        url = await raw_request(cli.port, "GET", "/urls/hello")
        assert metrics.status == 200
        for refused in (invoke, url):
            assert refused.status == 404
            assert refused.headers["x-amzn-errortype"] == "UnknownOperationException"
        assert await cli.terminate() == 0
    assert not any(line["level"] == "WARNING" for line in cli.lines)
