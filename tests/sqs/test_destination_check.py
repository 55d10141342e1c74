"""SQSDestination's start-up check on moto: a missing queue, however it is named, stops the app
before anything runs (a source's dead-letter queue too), and ``streamfn run`` exits 2 naming it;
an unreachable endpoint is a DestinationError."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from streamfn import App, ConfigError
from streamfn.connectors.sqs import SQSDestination, SQSSource
from streamfn.destinations import CheckedDestination
from streamfn.errors import DestinationError
from streamfn.testing.servers import free_port

from . import counts, create_queue, send, sqs_client

ACCOUNT = "123456789012"  # moto's


@pytest.fixture
async def sqs(moto_endpoint: str, aws_env: None) -> AsyncIterator[Any]:
    async with sqs_client(moto_endpoint) as client:
        yield client


def missing_name() -> str:
    return f"missing-{uuid.uuid4().hex[:12]}"


async def test_check_passes_for_a_queue_named_by_url_name_or_arn(
    sqs: Any, moto_endpoint: str
) -> None:
    url = await create_queue(sqs)
    attributes = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    for queue in (url, url.rsplit("/", 1)[-1], attributes["Attributes"]["QueueArn"]):
        destination = SQSDestination(queue, endpoint_url=moto_endpoint)
        assert isinstance(destination, CheckedDestination)
        await destination.check()


@pytest.mark.parametrize("form", ["name", "url", "arn"])
async def test_check_refuses_a_missing_queue_with_a_config_error(
    sqs: Any, moto_endpoint: str, form: str
) -> None:
    name = missing_name()
    queue = {
        "name": name,
        "url": f"{moto_endpoint}/{ACCOUNT}/{name}",
        "arn": f"arn:aws:sqs:us-east-1:{ACCOUNT}:{name}",
    }[form]
    with pytest.raises(ConfigError) as refused:
        await SQSDestination(queue, endpoint_url=moto_endpoint).check()
    assert str(refused.value) == f"SQS queue {queue!r} does not exist (at {moto_endpoint})"


async def test_check_of_an_unreachable_endpoint_is_a_destination_error(aws_env: None) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(
        DestinationError, match=f"cannot check sqs://orders: cannot reach SQS at {endpoint}"
    ):
        await SQSDestination("orders", endpoint_url=endpoint).check()


async def test_an_app_whose_destination_queue_is_missing_does_not_start(
    sqs: Any, moto_endpoint: str
) -> None:
    name = missing_name()
    app = App()

    @app.function(on_failure=SQSDestination(name, endpoint_url=moto_endpoint))
    async def greet(event: Any, context: Any) -> None: ...

    with pytest.raises(ConfigError) as refused:
        async with app.running():
            pytest.fail("the app started")
    assert str(refused.value) == (
        f"on_failure of function 'greet': SQS queue {name!r} does not exist (at {moto_endpoint})"
    )


async def test_a_missing_dead_letter_queue_stops_the_source_before_it_receives(
    sqs: Any, moto_endpoint: str
) -> None:
    url = await create_queue(sqs)
    await send(sqs, url, ["poison"])
    name = missing_name()
    source = SQSSource(
        url,
        endpoint_url=moto_endpoint,
        dead_letter=SQSDestination(name, endpoint_url=moto_endpoint),
        max_receives=1,
    )
    received: list[Any] = []
    app = App()

    @app.consume(source)
    async def orders(batch: Any, context: Any) -> None:
        received.append(batch)

    with pytest.raises(ExceptionGroup) as stopped:
        async with asyncio.timeout(15), app.running():
            await asyncio.Event().wait()  # until the source fails, and the app with it
    assert stopped.group_contains(
        ConfigError,
        match=f"^dead_letter of {source.describe()}: SQS queue {name!r} does not exist",
    )
    assert received == []
    assert await counts(sqs, url) == (1, 0)


APP = """
import os

from streamfn import App
from streamfn.connectors.sqs import SQSDestination, SQSSource

endpoint = os.environ["SQS_ENDPOINT"]
dead_letter = SQSDestination(os.environ["DEAD_LETTER"], endpoint_url=endpoint)
app = App("orders")


@app.consume(
    SQSSource(os.environ["QUEUE"], endpoint_url=endpoint, dead_letter=dead_letter, max_receives=3)
)
async def orders(batch, context): ...
"""


async def test_streamfn_run_exits_2_naming_the_missing_dead_letter_queue(
    sqs: Any, moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = await create_queue(sqs)
    name = missing_name()
    (tmp_path / "orders.py").write_text(APP)
    monkeypatch.setenv("SQS_ENDPOINT", moto_endpoint)
    monkeypatch.setenv("QUEUE", url)
    monkeypatch.setenv("DEAD_LETTER", name)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamfn.cli",
        "run",
        f"{tmp_path}/orders.py:app",
        "--no-http",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        _, stderr = await process.communicate()
    assert process.returncode == 2
    *_, last = stderr.decode().splitlines()
    assert last == (
        f"streamfn: error: dead_letter of sqs://{url.rsplit('/', 1)[-1]}: SQS queue {name!r} "
        f"does not exist (at {moto_endpoint})"
    )
    assert "Traceback" not in stderr.decode()
