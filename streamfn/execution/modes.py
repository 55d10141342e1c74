"""Which execution mode a function gets when its registration does not say
(``execution=None``), and the checks on one it does say.

The default, and why (README, "Execution modes"):

- ``async def`` → ``loop``: written for streamfn (Lambda's Python runtime never awaits a
  handler), cheapest, and it can share the worker's clients.
- a ``def`` handler that receives Lambda's events (``@app.function``, where the Invoke API
  passes Lambda payloads, or ``@app.consume(..., event_format="lambda")``) →
  ``environment``: it is Lambda code, and Lambda code may keep per-invocation state at module
  level (Powertools' module-level ``BatchProcessor`` is AWS's own example), which is only
  correct when each process runs one invocation at a time, as Lambda's environments do.
- a ``def`` handler of the native format (``Batch`` of ``Record``) → ``thread``: written for
  streamfn, it may share objects of the worker; a timed-out thread keeps its slot and is
  waited for before its batch is retried (:mod:`streamfn.execution.threads`).
- a handler that is not a module-level function (defined inside a function, in
  ``__main__``, a ``partial``, a class or an instance) → ``thread``: Lambda's Handler setting
  is ``module.function``, so it is not unmodified Lambda code, and it may keep state the test
  or the worker reads (a class attribute, a closure's list).
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable
from typing import Any

from ..config import Execution
from ..errors import ConfigError
from .runtime_api import Command

log = logging.getLogger("streamfn.execution")


def is_async(handler: Any) -> bool:
    """Whether streamfn awaits the handler: an ``async def``, or an object whose class has an
    ``async def __call__`` (inspect looks through functions, methods and partials only)."""
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        type(handler).__call__
    )


def address(handler: Callable[..., Any]) -> tuple[str, str] | None:
    """``(module, qualname)`` by which a fresh interpreter imports ``handler``, as Lambda
    imports ``module.function``; None if it cannot."""
    module = getattr(handler, "__module__", None)
    qualname = getattr(handler, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<locals>" in qualname:
        return None
    target: Any = sys.modules.get(module)
    for part in qualname.split("."):
        target = getattr(target, part, None)
    return (module, qualname) if target is handler else None


def choose(
    handler: Callable[..., Any], declared: Execution | None, lambda_events: bool, name: str
) -> Execution:
    """The execution mode of ``handler``: ``declared`` once checked, else the default."""
    asynchronous = is_async(handler)
    if isinstance(handler, Command):
        if declared not in (None, "environment"):
            raise ConfigError(
                f"function {name!r}: a Command runs only as execution='environment', "
                f"not {declared!r}"
            )
        return "environment"
    if declared == "loop" and not asynchronous:
        raise ConfigError(
            f"function {name!r}: execution='loop' needs an async def handler; a def handler "
            "would block the event loop (use 'thread' or 'environment')"
        )
    if declared == "thread" and asynchronous:
        raise ConfigError(
            f"function {name!r}: execution='thread' runs a def handler; an async def handler "
            "runs in the loop ('loop') or in an environment ('environment')"
        )
    if declared == "environment" and address(handler) is None:
        raise ConfigError(
            f"function {name!r}: execution='environment' loads the handler by module and name "
            "in a new process, as Lambda does; define it at module level of an importable "
            "module (not inside a function, not in __main__)"
        )
    if declared is not None:
        return declared
    if asynchronous:
        return "loop"
    if not lambda_events:
        return "thread"
    if not inspect.isfunction(handler) or address(handler) is None:
        log.debug(
            f"function {name}: its handler is not a function an execution environment can "
            "import by module and name, so it runs in a worker thread"
        )
        return "thread"
    return "environment"
