"""``streamfn`` command line: ``run`` a worker, ``bench`` it, inspect and redrive the dead letters
of its asynchronous invocations with ``dlq``."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from . import logs
from .app import App
from .asyncq import DeadLetter, DeadLetterStore
from .destinations import iso_timestamp
from .errors import ConfigError, StreamfnError, TargetError, UnknownDeadLetter
from .runtime import run_loop

log = logging.getLogger("streamfn.cli")

EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
DEFAULT_STATE_DIR = ".streamfn"

#: ``streamfn bench ...`` is handed to this module, found by name: the bench tool is a user
#: feature in its own subpackage, which nothing in the library imports.
BENCH_CLI = "streamfn.bench.cli"


def load_app(target: str) -> App:
    """Import ``package.module:app`` or ``path/to/file.py:app`` and return the App."""
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
    except ConfigError as exc:
        raise ConfigError(f"invalid configuration in {module_name}: {exc}") from exc
    except ImportError as exc:
        raise TargetError(f"cannot import {module_name!r}: {exc}") from exc
    except SyntaxError as exc:
        raise TargetError(f"syntax error in {module_name!r}: {exc}") from exc
    app = getattr(module, attr, None)
    if app is None:
        raise TargetError(f"{module_name!r} has no attribute {attr!r}")
    if not isinstance(app, App):
        raise TargetError(f"{target!r} is a {type(app).__name__}, not a streamfn.App")
    return app


def _http_server(host: str, port: int, *, operational_only: bool = False) -> Callable[..., Any]:
    try:
        http = importlib.import_module("streamfn.connectors.http")
    except ImportError as exc:
        instead = "or drop --metrics-port" if operational_only else "or pass --no-http"
        raise ConfigError(
            f"the HTTP adapter needs the 'http' extra (pip install 'streamfn[http]'), "
            f"{instead}: {exc}"
        ) from exc
    return functools.partial(http.serve, host=host, port=port, operational_only=operational_only)


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range 0-65535")
    return port


def _positive(value: str) -> float:
    number = float(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return number


def _log_format(value: str) -> str:
    if value not in logs.FORMATS:
        raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(logs.FORMATS)}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamfn", description="Lambda's invocation model on workers you own."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an app's mappings and its Invoke API")
    run.add_argument("target", help="package.module:app or path/to/file.py:app")
    run.add_argument(
        "--host",
        default=os.environ.get("STREAMFN_HOST", "127.0.0.1"),
        help="HTTP bind address (default 127.0.0.1, env STREAMFN_HOST)",
    )
    run.add_argument(
        "--port",
        type=_port,
        default=os.environ.get("STREAMFN_PORT", "9000"),
        help="HTTP port (default 9000, env STREAMFN_PORT)",
    )
    run.add_argument(
        "--no-http",
        action="store_true",
        help="do not serve the Invoke API (--metrics-port still serves /health, /ready, /metrics)",
    )
    run.add_argument(
        "--metrics-port",
        type=_port,
        default=os.environ.get("STREAMFN_METRICS_PORT"),
        help="also serve only /health, /ready and /metrics on this port of --host (env "
        "STREAMFN_METRICS_PORT; default: none, as --port serves them unless --no-http)",
    )
    run.add_argument(
        "--stuck-after",
        type=_positive,
        default=os.environ.get("STREAMFN_STUCK_AFTER"),
        help="seconds a partition may hold records without progress before /health fails "
        "(env STREAMFN_STUCK_AFTER; default: the App's stuck_after, 300)",
    )
    run.add_argument(
        "--state-dir",
        default=os.environ.get("STREAMFN_STATE_DIR"),
        help="directory of the durable async event queue and dead letters (env "
        f"STREAMFN_STATE_DIR; default: the App's state_dir, else {DEFAULT_STATE_DIR} when "
        "serving HTTP)",
    )
    run.add_argument(
        "--log-level",
        default=os.environ.get("STREAMFN_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
    )
    run.add_argument(
        "--log-format",
        type=_log_format,
        default=os.environ.get("STREAMFN_LOG_FORMAT", "json"),
        help="json: Lambda's JSON log keys, one object per line (default); text: for a terminal "
        "(env STREAMFN_LOG_FORMAT)",
    )
    run.add_argument(
        "--shutdown-timeout",
        type=_positive,
        default=None,
        help="seconds in-flight batches may take to finish on SIGTERM/SIGINT "
        "(overrides each mapping's shutdown_timeout)",
    )
    _add_dlq_parser(sub)
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
        return _dlq(args)
    except (ConfigError, TargetError) as exc:
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
        default=os.environ.get("STREAMFN_STATE_DIR", DEFAULT_STATE_DIR),
        help=f"the worker's state directory (env STREAMFN_STATE_DIR, default {DEFAULT_STATE_DIR})",
    )
    listing = actions.add_parser("list", parents=[state], help="one line per dead letter")
    listing.add_argument("--function", help="only this function's")
    listing.add_argument("--limit", type=int, default=100)
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
    store = DeadLetterStore(args.state_dir)
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
    servers = [] if args.no_http else [_http_server(args.host, args.port)]
    if args.metrics_port is not None:
        if not args.no_http and args.metrics_port == args.port != 0:
            raise ConfigError(f"--metrics-port {args.port} is --port: choose another, or omit it")
        servers.append(_http_server(args.host, args.metrics_port, operational_only=True))
    log.info(
        "starting",
        extra={
            "app": app.name,
            "functions": sorted(app.functions),
            "mappings": [m.describe() for m in app.mappings],
            "stateDir": str(app.state_dir) if app.state_dir else None,
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
    log.info("stopped", extra={"app": app.name})
    return 0


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first leaf exception of a (nested) exception group, for a one-line message."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


if __name__ == "__main__":
    raise SystemExit(main())
