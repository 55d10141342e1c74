"""Loading a template function's handler, by runtime, and setting its environment.

Python functions (``python3.x`` runtimes) are imported into the worker as Lambda's Python
runtime imports them: ``Handler: app.handler`` is function ``handler`` of module ``app``,
found relative to the function's ``CodeUri`` (``pkg/app.handler`` and ``pkg.app.handler`` are
module ``pkg.app``); ``InlineCode``/``ZipFile`` source is module ``index``.

Custom runtimes (``provided``, ``provided.al2``, ``provided.al2023``) run as Lambda runs them:
the executable ``bootstrap`` at the root of the function's code directory, started as an
execution environment (:class:`streamfn.execution.Command`) that speaks the Lambda Runtime
API, in that directory, with ``LAMBDA_TASK_ROOT`` naming it and ``_HANDLER`` set to the
Handler. That is how any language runs here; other runtimes (``nodejs``, ``java``, ...) would
need their runtime interface client installed in the worker, so they are listed as
unsupported, with the custom runtime as the way to run them.

All Python functions share one process, hence two rules, refused with a message rather than
broken silently:

- modules: one name is one module in a process, so two functions whose CodeUri directories
  hold different top-level modules (or packages) of the same name cannot both be imported;
  functions sharing one CodeUri (SAM's usual layout) share its modules.
- environment: ``os.environ`` is the process's. Each function's Environment.Variables are set
  before any handler is imported (module-level code reads them at import, as on Lambda); a
  variable two functions set to different values is refused, naming both. A variable already
  set in the worker's environment keeps the worker's value (as ``sam local --env-vars``
  overrides the template): that is how a run points a function at an emulator's queue.
  ``streamfn validate`` shows which values the environment overrides.

A custom runtime's process starts from the worker's environment as it was before any Python
function's variables were set, plus its own function's (the worker's environment still
overrides them), so it sees no other function's variables and never conflicts with them.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..execution import Command
from .plan import FunctionPlan


def _load_python(function: FunctionPlan) -> Callable[..., Any]:
    where = f"Resources.{function.logical_id}.Properties.Handler"
    module_path, sep, attribute = function.handler.rpartition(".")
    if not sep or not module_path or not attribute:
        raise ConfigError(f"{where}: {function.handler!r} is not module.function")
    module_name = module_path.replace("/", ".")
    if function.code.inline is not None:
        if module_name != "index":
            raise ConfigError(f"{where}: inline code is module 'index', not {module_name!r}")
        module = types.ModuleType(f"streamfn_inline_{function.logical_id}")
        try:
            exec(
                compile(function.code.inline, f"<{function.logical_id} inline code>", "exec"),
                module.__dict__,
            )
        except Exception as exc:
            raise ConfigError(
                f"{where}: the inline code fails: {type(exc).__name__}: {exc}"
            ) from exc
    else:
        assert function.code_dir is not None
        module = _import(module_name, function.code_dir, where)
    handler = getattr(module, attribute, None)
    if handler is None:
        raise ConfigError(
            f"{where}: module {module_name!r} has no function {attribute!r} "
            f"({getattr(module, '__file__', 'inline code')})"
        )
    if not callable(handler):
        raise ConfigError(f"{where}: {function.handler!r} is a {type(handler).__name__}")
    return handler  # type: ignore[no-any-return]


def _import(module_name: str, directory: Path, where: str) -> types.ModuleType:
    top = module_name.split(".")[0]
    loaded = sys.modules.get(top)
    if loaded is not None and not _inside(loaded, directory):
        for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
            del sys.modules[name]  # another template's module of that name: load this one
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(f"{where}: no module {module_name!r} in {directory}") from exc
        raise ConfigError(f"{where}: importing {module_name!r} fails: {exc}") from exc
    except Exception as exc:
        raise ConfigError(
            f"{where}: importing {module_name!r} fails: {type(exc).__name__}: {exc}"
        ) from exc


def _inside(module: types.ModuleType, directory: Path) -> bool:
    location = getattr(module, "__file__", None) or next(
        iter(getattr(module, "__path__", [])), None
    )
    return location is not None and Path(location).resolve().is_relative_to(directory)


#: The custom runtimes: a ``bootstrap`` of any language, run over the Runtime API.
CUSTOM_RUNTIMES = ("provided", "provided.al2", "provided.al2023")


def in_worker(function: FunctionPlan) -> bool:
    """Whether the function's code runs in the worker's Python (its modules and variables
    shared with the other Python functions)."""
    return function.runtime.startswith("python")


def bootstrap(function: FunctionPlan) -> Path | None:
    """The ``bootstrap`` a custom runtime function runs; None for other runtimes."""
    if function.runtime not in CUSTOM_RUNTIMES or function.code_dir is None:
        return None
    return function.code_dir / "bootstrap"


def unsupported(function: FunctionPlan) -> str | None:
    """Why ``function`` cannot run here (naming it and what is missing), None if it can."""
    name, runtime = function.name, function.runtime
    if in_worker(function):
        return None
    if runtime in CUSTOM_RUNTIMES:
        path = bootstrap(function)
        if path is None:
            return (
                f"function {name!r} (runtime {runtime}) has inline code; a custom runtime "
                "runs the executable bootstrap of its CodeUri directory"
            )
        if not path.is_file():
            return (
                f"function {name!r} (runtime {runtime}) has no {path}: a custom runtime "
                "runs the executable bootstrap at the root of its code"
            )
        if not os.access(path, os.X_OK):
            return f"function {name!r} (runtime {runtime}): {path} is not executable (chmod +x)"
        return None
    return (
        f"function {name!r} uses runtime {runtime!r}; streamfn runs Python functions, and "
        "other languages as a custom runtime (Runtime: provided.al2023 with an executable "
        "bootstrap in CodeUri), which it runs over the Lambda Runtime API"
    )


def load_handler(function: FunctionPlan, worker_env: Mapping[str, str]) -> Callable[..., Any]:
    """The callable the app registers: a Python handler, or a custom runtime's
    :class:`Command` with the function's variables that ``worker_env`` (the worker's
    environment before any function's were set) does not override."""
    reason = unsupported(function)
    if reason is not None:
        raise ConfigError(f"Resources.{function.logical_id}.Properties.Runtime: {reason}")
    if in_worker(function):
        return _load_python(function)
    assert function.code_dir is not None
    own = {k: v for k, v in function.environment.items() if k not in worker_env}
    return Command(
        [str(function.code_dir / "bootstrap")],
        handler=function.handler,
        env=own,
        cwd=function.code_dir,
        base_env=worker_env,
    )


def check_modules(functions: Mapping[str, FunctionPlan]) -> None:
    """Refuse two Python functions whose different CodeUri directories hold a top-level
    module of the same name (see the module docstring)."""
    owners: dict[str, tuple[Path, str]] = {}
    for function in functions.values():
        if function.code_dir is None or not in_worker(function):
            continue
        for entry in function.code_dir.iterdir():
            if entry.name.startswith((".", "_")) or not (entry.suffix == ".py" or entry.is_dir()):
                continue
            name = entry.stem if entry.suffix == ".py" else entry.name
            owner = owners.setdefault(name, (function.code_dir, function.name))
            if owner[0] != function.code_dir and _is_module(entry):
                raise ConfigError(
                    f"Resources.{function.logical_id}.Properties.CodeUri: functions "
                    f"{owner[1]!r} and {function.name!r} both have a module {name!r} in "
                    "different directories; streamfn imports Python functions into one "
                    "process, where a name is one module: rename one, or share one CodeUri"
                )


def _is_module(entry: Path) -> bool:
    return entry.suffix == ".py" or (entry / "__init__.py").is_file()


def environment(
    functions: Mapping[str, FunctionPlan], current: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """``(to set, overridden)``: the variables of the Python functions to set in the process,
    and those of any function that the worker's environment already sets differently (kept).
    Conflicting values of two Python functions are refused."""
    wanted: dict[str, tuple[str, str]] = {}
    overridden: dict[str, str] = {}
    for function in functions.values():
        for key, value in function.environment.items():
            if key in current and current[key] != value:
                overridden[key] = current[key]
            if not in_worker(function):
                continue
            if key in wanted and wanted[key][0] != value:
                raise ConfigError(
                    f"Resources.{function.logical_id}.Properties.Environment.Variables.{key}: "
                    f"functions {wanted[key][1]!r} and {function.name!r} set {key} to "
                    f"different values ({wanted[key][0]!r}, {value!r}); streamfn runs them in "
                    "one process with one environment: use one value, or run them as "
                    "separate workers"
                )
            wanted[key] = (value, function.name)
    to_set = {k: v for k, (v, _) in wanted.items() if k not in current}
    return to_set, overridden


def apply_environment(
    to_set: Mapping[str, str], environ: MutableMapping[str, str] = os.environ
) -> None:
    environ.update(to_set)
