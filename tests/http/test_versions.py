"""Versions and aliases: numbered versions next to ``$LATEST``, aliases resolved per invocation
with weighted routing, X-Amz-Executed-Version, and the configuration errors around them."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import Any

import pytest

from streamfn import App, ConfigError, Context

from .support import ARN, DEADLINE, Served, invoke, invoke_error, serving

SEED = 20261124


def make_app(seed: int = SEED) -> App:
    app = App("versions", routing_seed=seed)

    @app.function(name="calc")
    async def latest(event: Any, context: Context) -> dict[str, Any]:
        return {
            "code": "latest",
            "version": context.function_version,
            "arn": context.invoked_function_arn,
        }

    @app.function(name="calc", version="1")
    async def first(event: Any, context: Context) -> dict[str, Any]:
        return {
            "code": "v1",
            "version": context.function_version,
            "arn": context.invoked_function_arn,
        }

    assert app.publish_version("calc") == "2"  # a snapshot of $LATEST's code
    app.alias("calc", "live", version="1")
    app.alias("calc", "canary", version="1", additional_version_weights={"2": 0.25})
    app.alias("calc", "edge", version="$LATEST")
    return app


@pytest.fixture
async def server() -> AsyncIterator[Served]:
    async with serving(make_app()) as served:
        yield served


@pytest.mark.parametrize(
    ("function_name", "qualifier", "code", "version"),
    [
        ("calc", None, "latest", "$LATEST"),
        ("calc", "$LATEST", "latest", "$LATEST"),
        ("calc", "1", "v1", "1"),
        ("calc:2", None, "latest", "2"),
        (f"{ARN}:calc:1", None, "v1", "1"),
        ("calc", "live", "v1", "1"),
        ("calc:edge", None, "latest", "$LATEST"),
    ],
)
async def test_qualifier_selects_the_version_and_reports_it(
    server: Served, function_name: str, qualifier: str | None, code: str, version: str
) -> None:
    kwargs = {"Qualifier": qualifier} if qualifier else {}
    async with asyncio.timeout(DEADLINE):
        response, result = await invoke(server.client, FunctionName=function_name, **kwargs)
    assert response["ExecutedVersion"] == version
    assert (result["code"], result["version"]) == (code, version)


async def test_alias_invocation_sees_the_alias_arn(server: Served) -> None:
    async with asyncio.timeout(DEADLINE):
        _, result = await invoke(server.client, FunctionName="calc", Qualifier="live")
    assert result["arn"] == f"{ARN}:calc:live"


@pytest.mark.parametrize("qualifier", ["3", "beta"])
async def test_unknown_version_or_alias_is_404(server: Served, qualifier: str) -> None:
    async with asyncio.timeout(DEADLINE):
        error = await invoke_error(server.client, FunctionName="calc", Qualifier=qualifier)
    assert error["Error"]["Code"] == "ResourceNotFoundException"
    assert error["Error"]["Message"] == f"Function not found: {ARN}:calc:{qualifier}"


def test_weighted_alias_routes_the_configured_share() -> None:
    app = make_app()
    draws = 4000
    versions = collections.Counter(
        app.resolve("calc", "canary").config.version for _ in range(draws)
    )
    # 25% of 4000 = 1000, standard deviation ~27: five of them either way.
    assert 865 <= versions["2"] <= 1135
    assert versions["1"] == draws - versions["2"]


def test_weighted_routing_is_reproducible_with_a_seed() -> None:
    first, second, other = make_app(), make_app(), make_app(seed=1)

    def picks(app: App) -> list[str]:
        return [app.resolve("calc", "canary").config.version for _ in range(200)]

    assert picks(first) == picks(second)
    assert picks(first) != picks(other)


async def test_weighted_alias_over_http_reports_each_executed_version(server: Served) -> None:
    async with asyncio.timeout(DEADLINE):
        results = [
            await invoke(server.client, FunctionName="calc", Qualifier="canary") for _ in range(40)
        ]
    seen = collections.Counter(response["ExecutedVersion"] for response, _ in results)
    assert set(seen) == {"1", "2"}
    for response, result in results:
        assert result["version"] == response["ExecutedVersion"]
        assert result["code"] == ("v1" if result["version"] == "1" else "latest")


async def test_reserved_concurrency_is_shared_by_all_versions() -> None:
    app = App("shared")
    entered, gate = asyncio.Event(), asyncio.Event()

    @app.function(name="one", reserved_concurrency=1)
    async def latest(event: Any, context: Context) -> str:
        entered.set()
        await gate.wait()
        return context.function_version

    app.publish_version("one")
    async with serving(app) as served, asyncio.timeout(DEADLINE):
        busy = asyncio.create_task(invoke(served.client, FunctionName="one", Qualifier="1"))
        await entered.wait()
        error = await invoke_error(served.client, FunctionName="one")
        gate.set()
        response, result = await busy
    assert error["Error"]["Code"] == "TooManyRequestsException"
    assert (response["ExecutedVersion"], result) == ("1", "1")


def handler(event: Any, context: Context) -> None:
    return None


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (
            lambda app: app.alias("f", "a", version="7"),
            "version='7' is invalid: must be a version of 'f' ($LATEST, 1, 2, 3)",
        ),
        (
            lambda app: app.alias("f", "123", version="1"),
            "alias='123' is invalid: must be 1-128 letters, digits, '-' and '_', not all digits",
        ),
        (
            lambda app: app.alias(
                "f", "a", version="$LATEST", additional_version_weights={"1": 0.5}
            ),
            "weighted aliases route between two different published versions",
        ),
        (
            lambda app: app.alias("f", "a", version="1", additional_version_weights={"1": 0.5}),
            "weighted aliases route between two different published versions",
        ),
        (
            lambda app: app.alias("f", "a", version="1", additional_version_weights={"2": 1.5}),
            "weight=1.5 is invalid: must be a number from 0 to 1",
        ),
        (
            lambda app: app.alias(
                "f", "a", version="1", additional_version_weights={"2": 0.1, "3": 0.1}
            ),
            "at most one version (two in total)",
        ),
        (lambda app: app.function(name="f", version="1")(handler), "registered twice"),
        (lambda app: app.function(name="f", version="01")(handler), "version='01' is invalid"),
        (lambda app: app.function(name="f")(handler), "function 'f' is registered twice"),
        (
            lambda app: app.function(name="f", version="3", reserved_concurrency=4)(handler),
            "reserved_concurrency of 'f' is 2 on another version",
        ),
    ],
)
def test_version_and_alias_mistakes_are_config_errors(setup: Any, message: str) -> None:
    app = App()
    app.function(name="f", reserved_concurrency=2)(handler)
    app.publish_version("f")
    app.publish_version("f")
    app.publish_version("f")
    with pytest.raises(ConfigError) as info:
        setup(app)
    assert message in str(info.value)


async def test_versions_without_latest_fail_at_start() -> None:
    app = App()
    app.function(name="orphan", version="1")(handler)
    with pytest.raises(ConfigError, match="'orphan' has versions but no \\$LATEST"):
        async with app.running():
            pass
