"""``streamfn`` command line: ``run`` a worker (an app, or a SAM/CloudFormation template),
``validate`` a template, ``bench`` it, inspect and redrive the dead letters of its asynchronous
invocations with ``dlq``."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import importlib.util
import logging
import math
import os
import sqlite3
import sys
import sysconfig
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from . import access_keys, logs, salvage
from .app import App
from .asyncq import DeadLetter, DeadLetterStore
from .destinations import iso_timestamp
from .errors import (
    ConfigError,
    DestinationError,
    StoreCorrupted,
    StreamfnError,
    TargetError,
    UnknownDeadLetter,
)
from .runtime import run_loop
from .sam import command as template_command

log = logging.getLogger("streamfn.cli")

EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
DEFAULT_STATE_DIR = ".streamfn"

#: ``streamfn bench ...`` is handed to this module, found by name: the bench tool is a user
#: feature in its own subpackage, which nothing in the library imports.
BENCH_CLI = "streamfn.bench.cli"


def load_app(target: str) -> App:
    """Import ``package.module:app`` or ``path/to/file.py:app`` and return the App. Whatever
    the app's code raises while it is imported (a bad setting, a mistyped keyword, a missing
    package, a syntax error) becomes one line naming the app's file and line."""
    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise TargetError(
            f"target {target!r} must be 'package.module:app' or 'path/to/file.py:app'"
        )
    try:
        if module_name.endswith(".py") or os.sep in module_name:
            path = Path(module_name)
            if not path.is_file():
                raise TargetError(f"no such file: {path}")
            sys.path.insert(0, str(path.resolve().parent))
            spec = importlib.util.spec_from_file_location(path.stem, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module
            spec.loader.exec_module(module)
        else:
            sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except TargetError:
        raise
    except Exception as exc:
        raise _import_error(exc, module_name) from exc
    app = getattr(module, attr, None)
    if app is None:
        raise TargetError(f"{module_name!r} has no attribute {attr!r}")
    if not isinstance(app, App):
        raise TargetError(f"{target!r} is a {type(app).__name__}, not a streamfn.App")
    return app


def _import_error(exc: Exception, module_name: str) -> StreamfnError:
    """The one-line error for an app that failed to import: ``file:line: message`` at the
    innermost line of the app's own code the error passed through."""
    line = _app_line(exc)
    if isinstance(exc, ConfigError):
        return ConfigError(
            f"{line}: {exc}" if line else f"invalid configuration in {module_name}: {exc}"
        )
    if line is not None:
        message = exc.msg if isinstance(exc, SyntaxError) else exc  # its str repeats the line
        return TargetError(f"{line}: {type(exc).__name__}: {message}")
    if isinstance(exc, ImportError):
        return TargetError(f"cannot import {module_name!r}: {exc}")
    return TargetError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}")


def _app_line(exc: BaseException) -> str | None:
    """``file:line`` of the innermost frame of ``exc``'s traceback in the app's own code, or
    for a SyntaxError in the app's code, the line that does not parse."""
    if isinstance(exc, SyntaxError) and exc.filename and _in_app(exc.filename):
        return f"{exc.filename}:{exc.lineno}"
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if _in_app(frame.f_code.co_filename):
            line = f"{frame.f_code.co_filename}:{lineno}"
    return line


#: Where code that is not the app's lives: streamfn (its connectors may be a symlink, resolved
#: here), Python's own modules and installed packages.
_LIBRARY_DIRS = tuple(
    {
        str(Path(__file__).resolve().parent),
        str((Path(__file__).parent / "connectors").resolve()),
        *(
            str(Path(sysconfig.get_path(name)).resolve())
            for name in ("stdlib", "platstdlib", "purelib", "platlib")
        ),
    }
)


def _in_app(filename: str) -> bool:
    """Whether code is the app's: not compiled from a string or frozen, and in none of
    :data:`_LIBRARY_DIRS`."""
    if filename.startswith("<"):
        return False
    path = str(Path(filename).resolve())
    return not any(path.startswith(directory + os.sep) for directory in _LIBRARY_DIRS)


#: How ``streamfn run`` lifts the refusal to serve the Invoke API beyond loopback without keys.
_EXPOSURE_REMEDY = (
    "give them with --access-keys-file PATH (env STREAMFN_ACCESS_KEYS_FILE) or "
    "App(access_keys=...), or pass --allow-unauthenticated (env STREAMFN_ALLOW_UNAUTHENTICATED=1) "
    "to let anyone who can reach it invoke every function"
)


def _http_server(
    app: App,
    host: str,
    port: int,
    limits: dict[str, Any],
    *,
    allow_unauthenticated: bool = False,
    operational_only: bool = False,
) -> Callable[..., Any]:
    try:
        http = importlib.import_module("streamfn.connectors.http")
    except ImportError as exc:
        instead = "or drop --metrics-port" if operational_only else "or pass --no-http"
        raise ConfigError(
            f"the HTTP adapter needs the 'http' extra (pip install 'streamfn[http]'), "
            f"{instead}: {exc}"
        ) from exc
    if not operational_only:
        # Refuse before anything starts, naming the options; serve() decides the same from
        # the same arguments, so there it passes, and logs the WARNING when allowed.
        http.check_exposure(
            app, host, allow_unauthenticated=allow_unauthenticated, remedy=_EXPOSURE_REMEDY
        )
    return functools.partial(
        http.serve,
        host=host,
        port=port,
        limits=http.Limits(**limits),
        operational_only=operational_only,
        allow_unauthenticated=allow_unauthenticated,
    )


class _FromEnv(str):
    """An option's value taken from an environment variable, as its default. argparse converts
    a string default with the option's ``type`` just as a value given on the command line, so a
    bad one fails the same way (exit 2, one line); the message adds the variable's name, as the
    user may not know it is set."""

    variable: str


def _env(variable: str, default: str | None = None) -> str | None:
    """``variable``'s value as an option's default, or ``default`` when it is not set."""
    value = os.environ.get(variable)
    if value is None:
        return default
    found = _FromEnv(value)
    found.variable = variable
    return found


def _quoted(value: str) -> str:
    """``value`` quoted, and where it came from when that was not the command line."""
    return f"{value!r} from {value.variable}" if isinstance(value, _FromEnv) else repr(value)


def _invalid(value: str, expected: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"{_quoted(value)} is not {expected}")


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise _invalid(value, "a port number (0-65535)")
    return port


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _seconds(value: str) -> float:
    number = _number(value)
    if number is None or number < 0:
        raise _invalid(value, "a number of seconds >= 0")
    return number


def _count(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise _invalid(value, "a whole number >= 1")
    return count


def _choice(*choices: str) -> Callable[[str], str]:
    """A ``type`` that checks the value against ``choices``, as argparse's ``choices`` does
    for the command line only (not for a default, so not for an environment variable)."""

    def choice(value: str) -> str:
        if value not in choices:
            raise argparse.ArgumentTypeError(
                f"invalid choice: {_quoted(value)} (choose from {', '.join(map(repr, choices))})"
            )
        return str(value)

    return choice


def _boolean(value: str) -> bool:
    """A flag's value from the environment: 1/true/yes/on or 0/false/no/off (or empty)."""
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("", "0", "false", "no", "off"):
        return False
    raise _invalid(value, "1 or 0")


class _Flag(argparse.Action):
    """A ``store_true`` option whose default may come from the environment: unlike
    ``store_true``, it has a ``type``, so argparse checks a string default with it."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        setattr(namespace, self.dest, True)


def _positive_seconds(value: str) -> float:
    number = _number(value)
    if number is None or number <= 0:
        raise _invalid(value, "a number of seconds > 0")
    return number


#: The options of :class:`~streamfn.connectors.http.wire.Limits`: option, type, default, help.
_HTTP_LIMITS: tuple[tuple[str, Callable[[str], Any], str, str], ...] = (
    ("max-connections", _count, "2048", "open connections; past them the one that costs "
     "least to lose is closed, and 503 only when every one has a request being answered"),
    ("header-timeout", _positive_seconds, "10", "seconds to receive a request line and "
     "headers, else 408"),
    ("body-timeout", _positive_seconds, "30", "seconds to receive a body once the headers "
     "are in, else 408"),
    ("keep-alive", _positive_seconds, "5", "seconds an idle connection is kept"),
    ("max-url-bytes", _count, "8192", "bytes of a request target, else 414"),
    ("max-header-bytes", _count, "16384", "bytes of the request line and headers, else 431"),
    ("max-header-count", _count, "100", "header fields in a request, else 431"),
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamfn", description="Lambda's invocation model on workers you own."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an app's mappings and its Invoke API")
    run.add_argument(
        "target",
        help="package.module:app, path/to/file.py:app, or a SAM/CloudFormation template "
        "(a path ending in .yaml, .yml or .json)",
    )
    run.add_argument(
        "--host",
        default=_env("STREAMFN_HOST", "127.0.0.1"),
        help="HTTP bind address (default 127.0.0.1, env STREAMFN_HOST)",
    )
    run.add_argument(
        "--port",
        type=_port,
        default=_env("STREAMFN_PORT", "9000"),
        help="HTTP port (default 9000, env STREAMFN_PORT)",
    )
    run.add_argument(
        "--access-keys-file",
        default=_env("STREAMFN_ACCESS_KEYS_FILE"),
        metavar="PATH",
        help="JSON file of the access keys that may call the Invoke API, with their grants "
        "(env STREAMFN_ACCESS_KEYS_FILE; added to App(access_keys=...)); with any key, every "
        "Invoke API request must be SigV4-signed",
    )
    run.add_argument(
        "--allow-unauthenticated",
        action=_Flag,
        type=_boolean,
        default=_env("STREAMFN_ALLOW_UNAUTHENTICATED", "0"),
        help="serve the Invoke API on a --host other than loopback without access keys, to "
        "anyone who can reach it (env STREAMFN_ALLOW_UNAUTHENTICATED=1)",
    )
    run.add_argument(
        "--no-http",
        action="store_true",
        help="do not serve the Invoke API (--metrics-port still serves /health, /ready, /metrics)",
    )
    run.add_argument(
        "--metrics-port",
        type=_port,
        default=_env("STREAMFN_METRICS_PORT"),
        help="also serve only /health, /ready and /metrics on this port of --host (env "
        "STREAMFN_METRICS_PORT; default: none, as --port serves them unless --no-http)",
    )
    limits = run.add_argument_group(
        "HTTP server limits", "what one client may cost the server (each refusal is logged)"
    )
    for option, kind, default, meaning in _HTTP_LIMITS:
        variable = "STREAMFN_HTTP_" + option.upper().replace("-", "_")
        limits.add_argument(
            f"--{option}",
            type=kind,
            default=_env(variable, default),
            help=f"{meaning} (default {default}, env {variable})",
        )
    run.add_argument(
        "--stuck-after",
        type=_seconds,
        default=_env("STREAMFN_STUCK_AFTER"),
        help="seconds a partition may hold records without progress before /health fails "
        "(env STREAMFN_STUCK_AFTER; default: the App's stuck_after, 300)",
    )
    run.add_argument(
        "--state-dir",
        default=_env("STREAMFN_STATE_DIR"),
        help="directory of the durable async event queue and dead letters (env "
        f"STREAMFN_STATE_DIR; default: the App's state_dir, else {DEFAULT_STATE_DIR} when "
        "serving HTTP)",
    )
    run.add_argument(
        "--log-level",
        type=_choice("debug", "info", "warning", "error"),
        default=_env("STREAMFN_LOG_LEVEL", "info"),
        help="debug, info (default), warning or error (env STREAMFN_LOG_LEVEL)",
    )
    run.add_argument(
        "--log-format",
        type=_choice(*logs.FORMATS),
        default=_env("STREAMFN_LOG_FORMAT", "json"),
        help="json: Lambda's JSON log keys, one object per line (default); text: for a terminal "
        "(env STREAMFN_LOG_FORMAT)",
    )
    run.add_argument(
        "--shutdown-timeout",
        type=_seconds,
        default=None,
        help="seconds in-flight batches may take to finish on SIGTERM/SIGINT "
        "(overrides each mapping's shutdown_timeout)",
    )
    template_command.add_options(run, run=True)
    validate = sub.add_parser(
        "validate",
        help="list what a SAM/CloudFormation template runs, ignores and cannot run "
        "(exit 0: all of it runs; 1: it has unsupported parts; 2: it is invalid)",
    )
    validate.add_argument("target", metavar="TEMPLATE", help="the template file")
    template_command.add_options(validate, run=False)
    _add_dlq_parser(sub)
    salvage.add_parser(sub)
    sub.add_parser(
        "bench",
        help="measure throughput (streamfn bench --help lists the scenarios)",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(getattr(args, "log_level", "info"), getattr(args, "log_format", "json"))
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "validate":
            return template_command.validate(args)
        if args.command == "queue":
            return salvage.handle(args)
        return _dlq(args)
    except (ConfigError, TargetError, StoreCorrupted) as exc:
        print(f"streamfn: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UnknownDeadLetter as exc:
        print(f"streamfn: error: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND


def _add_dlq_parser(sub: Any) -> None:
    dlq = sub.add_parser("dlq", help="list, show and redrive failed asynchronous invocations")
    actions = dlq.add_subparsers(dest="action", required=True)
    state = argparse.ArgumentParser(add_help=False)
    state.add_argument(
        "--state-dir",
        default=_env("STREAMFN_STATE_DIR", DEFAULT_STATE_DIR),
        help=f"the worker's state directory (env STREAMFN_STATE_DIR, default {DEFAULT_STATE_DIR})",
    )
    listing = actions.add_parser("list", parents=[state], help="one line per dead letter")
    listing.add_argument("--function", help="only this function's")
    listing.add_argument("--limit", type=_count, default=100, help="at most this many (100)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    show = actions.add_parser(
        "show", parents=[state], help="a dead letter's payload and invocation record"
    )
    show.add_argument("request_id")
    redrive = actions.add_parser(
        "redrive", parents=[state], help="queue dead letters again as fresh events"
    )
    which = redrive.add_mutually_exclusive_group(required=True)
    which.add_argument("request_ids", nargs="*", default=[], metavar="REQUEST_ID")
    which.add_argument("--all", action="store_true", help="every dead letter (of --function)")
    redrive.add_argument("--function", help="with --all: only this function's")


def _dlq(args: argparse.Namespace) -> int:
    try:
        store = DeadLetterStore(args.state_dir)
    except sqlite3.DatabaseError as exc:  # a state directory holding some other file
        raise ConfigError(f"cannot read the event queue in {args.state_dir}: {exc}") from exc
    try:
        if args.action == "list":
            _print_letters(store.letters(args.function, args.limit), as_json=args.json)
        elif args.action == "show":
            letter = store.get(args.request_id)
            if letter is None:
                raise UnknownDeadLetter(f"no dead letter with request id {args.request_id!r}")
            print(_show(letter))
        else:
            ids = None if args.all else args.request_ids
            moved = store.redrive(ids, args.function)
            print(f"redrove {moved} event(s)")
    finally:
        store.close()
    return 0


def _print_letters(letters: list[DeadLetter], *, as_json: bool) -> None:
    if as_json:
        for letter in letters:
            print(orjson.dumps(letter.summary()).decode())
        return
    print(f"{'REQUEST ID':<36}  {'FUNCTION':<24} {'CONDITION':<24} {'ATTEMPTS':>8}  FAILED AT")
    for letter in letters:
        print(
            f"{letter.request_id:<36}  {letter.function:<24} {letter.condition:<24} "
            f"{letter.attempts:>8}  {iso_timestamp(letter.failed_at)}"
        )


def _show(letter: DeadLetter) -> str:
    try:
        payload: Any = orjson.loads(letter.payload) if letter.payload else None
    except orjson.JSONDecodeError:
        payload = letter.payload.decode(errors="replace")
    shown = {**letter.summary(), "payload": payload, "record": letter.record}
    return orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode()


def _bench(argv: list[str]) -> int:
    logs.configure("warning")
    try:
        bench = importlib.import_module(BENCH_CLI)
    except ImportError as exc:
        print(f"streamfn: error: the bench tool cannot load: {exc}", file=sys.stderr)
        return EXIT_USAGE
    result: int = bench.main(argv)
    return result


def _run(args: argparse.Namespace) -> int:
    servers: list[Callable[..., Any]] = []
    if template_command.is_template(args.target):
        state_dir = args.state_dir or (None if args.no_http else DEFAULT_STATE_DIR)
        built = template_command.build(args, state_dir)
        app, servers = built.app, list(built.servers)
    else:
        _refuse_template_options(args)
        app = load_app(args.target)
    if args.shutdown_timeout is not None:
        app.async_shutdown_timeout = args.shutdown_timeout
        for mapping in app.mappings:
            mapping.config = dataclasses.replace(
                mapping.config, shutdown_timeout=args.shutdown_timeout
            )
    if args.state_dir is not None:
        app.state_dir = Path(args.state_dir)
    elif app.state_dir is None and app.event_queue is None and not args.no_http:
        app.state_dir = Path(DEFAULT_STATE_DIR)
    if args.stuck_after is not None:
        app.health.stuck_after = args.stuck_after
    if args.access_keys_file is not None:
        where = f"access keys file {_quoted(args.access_keys_file)}"
        keys = access_keys.load(args.access_keys_file, where)
        app.access_keys = access_keys.merge(app.access_keys, keys, where)
    limits = _limits(args)
    if not args.no_http:
        servers.append(
            _http_server(
                app,
                args.host,
                args.port,
                limits,
                allow_unauthenticated=args.allow_unauthenticated,
            )
        )
    if args.metrics_port is not None:
        if not args.no_http and args.metrics_port == args.port != 0:
            raise ConfigError(f"--metrics-port {args.port} is --port: choose another, or omit it")
        servers.append(
            _http_server(app, args.host, args.metrics_port, limits, operational_only=True)
        )
    log.info(
        "starting",
        extra={
            "app": app.name,
            "functions": sorted(app.functions),
            "mappings": [m.describe() for m in app.mappings],
            "stateDir": str(app.state_dir) if app.state_dir else None,
            "accessKeys": sorted(app.access_keys),  # the ids: which keys may call it
        },
    )
    try:
        run_loop(app.serve(*servers))
    except BaseExceptionGroup as group:
        config, _ = group.split(ConfigError)
        if config is not None:
            raise _first(config) from None
        source, _ = group.split(StreamfnError)
        if source is None:
            raise
        log.error("stopped on error", extra={"app": app.name, "error": str(_first(source))})
        return 1
    except DestinationError as exc:  # a destination's start-up check could not reach it
        log.error("stopped on error", extra={"app": app.name, "error": str(exc)})
        return 1
    log.info("stopped", extra={"app": app.name})
    return 0


def _refuse_template_options(args: argparse.Namespace) -> None:
    """Template options given with an app target would be ignored: refuse them by name."""
    defaults = build_parser().parse_args(["run", args.target])
    for name in template_command.OPTION_NAMES:
        if name in ("region", "account_id"):
            continue  # their defaults come from the environment
        if getattr(args, name) != getattr(defaults, name):
            option = "--" + name.replace("_", "-")
            raise ConfigError(f"{option} applies to a template, and {args.target!r} is an app")


def _limits(args: argparse.Namespace) -> dict[str, Any]:
    """The HTTP server limit options, as keywords of ``Limits``."""
    return {name: getattr(args, name) for name in (o.replace("-", "_") for o, *_ in _HTTP_LIMITS)}


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first leaf exception of a (nested) exception group, for a one-line message."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


if __name__ == "__main__":
    raise SystemExit(main())
