"""Mistakes a new user makes, refused where they are made (the decorator, the setting) or when the
app starts, never on the first invocation: handler signatures, the bare decorator,
``retry_base_delay=0``, and destinations that cannot store a record."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from streamfn import App, ConfigError, FileDestination, MappingConfig
from streamfn.destinations import CheckedDestination
from streamfn.testing import MemorySource


async def event_only(event: Any) -> None: ...


def no_parameters() -> None: ...


def three_required(event: Any, context: Any, extra: Any) -> None: ...


def keyword_context(event: Any, *, context: Any) -> None: ...


@pytest.mark.parametrize(
    ("handler", "shown"),
    [
        (event_only, "(event)"),
        (no_parameters, "()"),
        (three_required, "(event, context, extra)"),
        (keyword_context, "(event, *, context)"),
    ],
)
@pytest.mark.parametrize("decorator", ["function", "consume"])
def test_a_handler_that_cannot_take_event_and_context_is_refused_at_registration(
    handler: Any, shown: str, decorator: str
) -> None:
    app = App()
    register = app.function() if decorator == "function" else app.consume(MemorySource())
    with pytest.raises(ConfigError) as refused:
        register(handler)
    assert str(refused.value) == (
        f"@app.{decorator}: handler {handler.__name__!r} takes {shown}, but it is called with "
        "two arguments: define it as (event, context)"
    )
    assert not app.functions
    assert not app.mappings


class Greeter:
    """A handler object: its ``__call__`` is async, so it must be awaited, not run in a thread."""

    def __init__(self, greeting: str) -> None:
        self.greeting = greeting

    async def __call__(self, event: Any, context: Any) -> str:
        return f"{self.greeting} {event}"


class Handled:
    """A class as the handler: called with (event, context), as Lambda would call it. Its
    instance is the value, which is not JSON: the call ran, and the answer is a MarshalError."""

    events: list[Any] = []

    def __init__(self, event: Any, context: Any) -> None:
        Handled.events.append(event)


def prefixed(prefix: str, event: Any, context: Any) -> str:
    return prefix + event


def with_defaults(event: Any, context: Any = None, extra: int = 1) -> str:
    return f"defaults {event}"


def star_args(*args: Any) -> str:
    return f"star {args[0]}"


async def test_handlers_of_every_callable_shape_register_and_run() -> None:
    app = App()
    app.function(name="instance")(Greeter("hello"))
    app.function(name="partial")(functools.partial(prefixed, "hi "))
    app.function()(with_defaults)
    app.function()(star_args)
    app.function()(Handled)
    assert (await app.invoke("instance", "you")).value == "hello you"
    assert (await app.invoke("partial", "you")).value == "hi you"
    assert (await app.invoke("with_defaults", "you")).value == "defaults you"
    assert (await app.invoke("star_args", "you")).value == "star you"
    handled = await app.invoke("Handled", "you")
    assert Handled.events == ["you"]
    assert handled.error is not None and handled.error["errorType"] == "Runtime.MarshalError"


def test_a_handler_without_a_name_needs_name() -> None:
    app = App()
    with pytest.raises(ConfigError, match=r"@app.function: functools.partial\(.*pass name="):
        app.function()(functools.partial(prefixed, "hi "))


async def test_bare_function_decorator_registers_the_handler_with_the_defaults() -> None:
    app = App()

    @app.function
    def greet(event: Any, context: Any) -> dict[str, Any]:
        return {"hello": event}

    assert greet("you", None) == {"hello": "you"}  # returned unchanged
    assert app.functions["greet"].config.timeout == 3.0
    assert (await app.invoke("greet", "you")).value == {"hello": "you"}


def test_bare_function_decorator_checks_the_signature_too() -> None:
    app = App()
    with pytest.raises(ConfigError, match="handler 'event_only' takes \\(event\\)"):
        app.function(event_only)


def test_bare_consume_decorator_is_refused() -> None:
    app = App()
    with pytest.raises(ConfigError) as refused:

        @app.consume  # type: ignore[arg-type]
        def orders(batch: Any, context: Any) -> None: ...

    assert str(refused.value) == (
        "@app.consume needs the source first: @app.consume(source, ...) above 'orders'"
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"retry_base_delay": 0}, "retry_base_delay=0 is invalid: must be a number from 0.001"),
        ({"retry_base_delay": -1.0}, "retry_base_delay=-1.0 is invalid"),
        ({"retry_base_delay": 3601}, "retry_base_delay=3601 is invalid"),
        ({"retry_max_delay": 0}, "retry_max_delay=0 is invalid: must be a number from 1 to"),
        (
            {"retry_base_delay": 0.5, "retry_max_delay": 0.1},
            "retry_max_delay=0.1 is invalid: must be a number from 0.5 to 86400",
        ),
        ({"retry_max_delay": 86_401}, "retry_max_delay=86401 is invalid"),
    ],
)
def test_retry_delays_that_would_spin_or_overflow_are_refused(
    settings: dict[str, float], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        MappingConfig(**settings)
    with pytest.raises(ConfigError, match=message):
        App().consume(MemorySource(), **settings)


def test_file_destination_check_refuses_a_directory_and_a_path_under_a_file(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        asyncio.run(FileDestination(tmp_path).check())
    (tmp_path / "plain").write_text("")
    with pytest.raises(ConfigError, match=r"cannot be created: .*plain is not a directory"):
        asyncio.run(FileDestination(tmp_path / "plain" / "failed.jsonl").check())


def test_file_destination_check_passes_a_new_path_and_creates_nothing(tmp_path: Path) -> None:
    destination = FileDestination(tmp_path / "new" / "dir" / "failed.jsonl")
    assert isinstance(destination, CheckedDestination)
    asyncio.run(destination.check())
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "failed.jsonl").write_text("")
    asyncio.run(FileDestination(tmp_path / "failed.jsonl").check())


@pytest.mark.parametrize("role", ["function", "mapping"])
async def test_the_app_checks_its_destinations_before_it_starts(tmp_path: Path, role: str) -> None:
    app = App()
    unwritable = FileDestination(tmp_path)
    if role == "function":
        app.function(on_failure=unwritable)(with_defaults)
        named = "on_failure of function 'with_defaults'"
    else:
        app.consume(MemorySource(), on_failure=unwritable)(with_defaults)
        named = "on_failure of mapping 'memory://p0 -> with_defaults'"
    with pytest.raises(ConfigError) as refused:
        async with app.running():
            pytest.fail("the app started")
    assert str(refused.value) == f"{named}: FileDestination {str(tmp_path)!r}: is a directory"


class CountingDestination:
    """A destination with a start-up check that counts its calls."""

    include_payload = False

    def __init__(self) -> None:
        self.checks = 0

    def describe(self) -> str:
        return "counting"

    async def send(self, record: Mapping[str, Any], *, key: bytes | None = None) -> None: ...

    async def check(self) -> None:
        self.checks += 1


async def test_a_destination_used_in_several_roles_is_checked_once() -> None:
    destination = CountingDestination()
    app = App()
    app.function(on_success=destination, on_failure=destination)(with_defaults)
    app.publish_version("with_defaults")  # the version shares the destinations
    app.consume(MemorySource(), name="fed", on_failure=destination)(with_defaults)
    async with app.running():
        assert destination.checks == 1
