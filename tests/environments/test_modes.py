"""Which execution mode a function gets by default, and the one-line refusals of a mode that
cannot run its handler."""

from __future__ import annotations

from typing import Any

import pytest

from streamfn import App, ConfigError, FunctionConfig
from streamfn.execution import Command
from streamfn.testing import MemorySource

from . import handlers


async def coroutine(event: Any, context: Any) -> None: ...


class Instance:
    def __call__(self, event: Any, context: Any) -> None: ...


def test_defaults_put_lambda_code_in_environments_and_streamfn_code_in_process() -> None:
    app = App()
    app.function()(handlers.echo)  # a def handler of the Invoke API: Lambda code
    app.function()(coroutine)
    app.consume(MemorySource(), name="lambda_batch", event_format="lambda")(handlers.partial)
    app.consume(MemorySource(), name="native_batch")(handlers.sleepy)

    @app.function()
    def nested(event: Any, context: Any) -> None: ...

    app.function(name="instance")(Instance())

    modes = {name: f.execution for name, f in app.functions.items()}
    assert modes == {
        "echo": "environment",
        "coroutine": "loop",
        "lambda_batch": "environment",
        "native_batch": "thread",
        "nested": "thread",  # no environment can import it (nor could Lambda)
        "instance": "thread",  # not a module-level function
    }


@pytest.mark.parametrize(
    ("register", "message"),
    [
        (
            lambda app: FunctionConfig(name="f", execution="process"),
            "execution='process' is invalid: must be 'loop' or 'thread' or 'environment'",
        ),
        (
            lambda app: app.function(execution="loop")(handlers.echo),
            "function 'echo': execution='loop' needs an async def handler",
        ),
        (
            lambda app: app.function(execution="thread")(coroutine),
            "function 'coroutine': execution='thread' runs a def handler",
        ),
        (
            lambda app: app.function(name="n", execution="environment")(lambda e, c: None),
            "function 'n': execution='environment' loads the handler by module and name",
        ),
        (
            lambda app: app.consume(MemorySource(), name="c")(Command(["./bootstrap"])),
            "speaks the Runtime API, which carries JSON: give the mapping event_format='lambda'",
        ),
        (
            lambda app: app.function()(Command(["./bootstrap"])),
            "a Command has no name of its own: pass name=...",
        ),
        (
            lambda app: FunctionConfig(name="f", max_environments=0),
            "max_environments=0 is invalid: must be an integer from 1 to 1024",
        ),
    ],
)
def test_a_mode_that_cannot_run_the_handler_is_refused_in_one_line(
    register: Any, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        register(App())
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_the_pool_is_bounded_by_reserved_concurrency_or_the_default() -> None:
    assert FunctionConfig(name="f").environments == 8
    assert FunctionConfig(name="f", reserved_concurrency=3).environments == 3
    assert FunctionConfig(name="f", reserved_concurrency=3, max_environments=5).environments == 5
