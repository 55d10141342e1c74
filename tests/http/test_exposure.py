"""Secure by default in code too: :func:`streamfn.connectors.http.serve` refuses to listen beyond
loopback while the app has no access keys, unless told to (``allow_unauthenticated=True``, then
logged at WARNING), as ``streamfn run`` does. Real servers on free ports; every wait has a
deadline."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from streamfn import App, ConfigError, Context
from streamfn.connectors import http
from streamfn.connectors.http.server import check_exposure, is_loopback
from streamfn.testing.servers import free_port

from .support import DEADLINE, log_record, raw_request, wait_until_serving

INVOKE = "/2015-03-31/functions/hello/invocations"
KEYS = {"AKIDEXPOSURE": "exposure-secret-0123456789"}
UNAUTHENTICATED = (
    "serving the Invoke API without authentication: anyone who can reach it may invoke every "
    "function"
)


def make_app(access_keys: dict[str, str] | None = None) -> App:
    app = App("exposure", access_keys=access_keys)

    @app.function()
    async def hello(event: Any, context: Context) -> str:
        return "hello"

    return app


def listening_on(port: int) -> bool:
    """Whether anything accepts connections on this port of 127.0.0.1."""
    with socket.socket() as probe:
        probe.settimeout(DEADLINE)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextlib.asynccontextmanager
async def served(app: App, **options: Any) -> AsyncIterator[int]:
    """``serve(app, stop, port=0, **options)`` called directly, as an embedding program would;
    yields its port once it answers, then stops it and awaits its return."""
    stop = asyncio.Event()
    async with asyncio.timeout(DEADLINE):
        with log_record("streamfn.http", "listening") as listening:
            task = asyncio.create_task(http.serve(app, stop, port=0, **options))
            await asyncio.wait((listening, task), return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()  # it stopped before listening: raise its error
            port: int = listening.result().__dict__["port"]
        await wait_until_serving(port)
    try:
        yield port
    finally:
        stop.set()
        async with asyncio.timeout(DEADLINE):
            await task


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::"])
async def test_serving_beyond_loopback_without_keys_is_refused_before_listening(
    host: str,
) -> None:
    if host == "::" and not socket.has_ipv6:
        pytest.skip("no IPv6")
    port = free_port()
    async with asyncio.timeout(DEADLINE):
        with pytest.raises(ConfigError) as info:
            await http.serve(make_app(), asyncio.Event(), host=host, port=port)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"refusing to serve the Invoke API on {host or 'every interface'}")
    assert "App(access_keys=...)" in message
    assert "allow_unauthenticated=True" in message
    assert not listening_on(port)


async def test_an_app_serving_beyond_loopback_without_keys_stops_with_the_config_error() -> None:
    """Through ``App.serve``, as ``streamfn run`` and embedding programs run servers."""
    port = free_port()
    server = functools.partial(http.serve, host="0.0.0.0", port=port)
    async with asyncio.timeout(DEADLINE):
        with pytest.raises(ExceptionGroup) as info:
            await make_app().serve(server)
    refused, rest = info.value.split(ConfigError)
    assert refused is not None and rest is None
    leaves: list[BaseException] = [refused]
    while isinstance(leaves[0], BaseExceptionGroup):
        leaves = list(leaves[0].exceptions)
    assert len(leaves) == 1
    assert str(leaves[0]).startswith("refusing to serve the Invoke API on 0.0.0.0")
    assert not listening_on(port)


async def test_allow_unauthenticated_serves_beyond_loopback_and_warns() -> None:
    with log_record("streamfn.http", UNAUTHENTICATED) as warned:
        async with served(make_app(), host="0.0.0.0", allow_unauthenticated=True) as port:
            response = await raw_request(port, "POST", INVOKE, b"{}")
        assert warned.done()
    assert (response.status, response.json()) == (200, "hello")
    warning = warned.result()
    assert warning.levelno == logging.WARNING
    assert (warning.__dict__["host"], warning.__dict__["port"]) == ("0.0.0.0", port)


async def test_an_app_with_access_keys_serves_beyond_loopback_and_requires_a_signature() -> None:
    async with served(make_app(KEYS), host="0.0.0.0") as port:
        unsigned = await raw_request(port, "POST", INVOKE, b"{}")
    assert unsigned.status == 403
    assert unsigned.headers["x-amzn-errortype"] == "MissingAuthenticationTokenException"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_loopback_serves_without_keys(host: str) -> None:
    async with served(make_app(), host=host) as port:
        response = await raw_request(port, "POST", INVOKE, b"{}")
    assert (response.status, response.json()) == (200, "hello")


async def test_the_operational_only_server_listens_anywhere_without_keys() -> None:
    """``streamfn run --metrics-port``: it invokes nothing, so nothing needs protecting."""
    async with served(make_app(), host="0.0.0.0", operational_only=True) as port:
        metrics = await raw_request(port, "GET", "/metrics")
        invoke = await raw_request(port, "POST", INVOKE, b"{}")
    assert metrics.status == 200
    assert invoke.status == 404


def test_check_exposure_names_the_callers_remedy() -> None:
    """``streamfn run`` makes the same decision with its own options named."""
    with pytest.raises(ConfigError, match=r"on 10\.1\.2\.3 without access keys: use --flags$"):
        check_exposure(make_app(), "10.1.2.3", remedy="use --flags")
    assert check_exposure(make_app(), "10.1.2.3", allow_unauthenticated=True) is True
    assert check_exposure(make_app(KEYS), "0.0.0.0") is False
    assert check_exposure(make_app(), "127.0.0.1") is False


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("127.255.255.254", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.1.2.3", False),
        ("128.0.0.1", False),
    ],
)
def test_only_loopback_hosts_count_as_private(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
