"""A Python execution environment: the process ``python -m streamfn.execution.child FD`` that
the worker starts for a function with ``execution="environment"``.

It behaves as Lambda's Python runtime does in its sandbox: the init phase imports the
handler's module (module-level code runs once, and its state lives as long as the
environment), then invocations arrive one at a time and the module's state carries from one to
the next. ``print`` and the ``logging`` module write Lambda's log lines, tagged with the
request id, to the worker's stderr, and into the reply when the caller asked for the log tail.
A ``MemoryError`` escaping the handler means the memory size (``RLIMIT_AS``) was reached:
Lambda's cgroup would have killed the process, so this one tells the worker and exits.
"""

from __future__ import annotations

import asyncio
import importlib
import io
import logging
import os
import socket
import sys
import time
import traceback
from typing import Any

from . import channel
from .errors import import_error

#: The request id of the invocation running now, for log lines (one at a time here).
_request_id: str | None = None
#: The running invocation's log, when its caller asked for the tail.
_tail: list[str] | None = None


class _Tee(io.TextIOBase):
    """stdout or stderr that also feeds the running invocation's tail."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if _tail is not None:
            _tail.append(text)
        written: int = self._stream.write(text)
        return written

    def flush(self) -> None:
        self._stream.flush()

    def fileno(self) -> int:
        fd: int = self._stream.fileno()
        return fd


class _LambdaFormat(logging.Formatter):
    """Lambda's Python log line: ``[LEVEL]\\ttimestamp\\trequest id\\tmessage``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        text = f"[{record.levelname}]\t{stamp}.{int(record.msecs):03d}Z\t{_request_id}\t"
        text += record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _set_up_logging() -> None:
    sys.stdout = _Tee(sys.stdout)
    sys.stderr = _Tee(sys.stderr)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_LambdaFormat())
    logging.getLogger().handlers[:] = [handler]


def _load(module_name: str, qualname: str) -> Any:
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def main(argv: list[str]) -> int:
    sock = socket.socket(fileno=int(argv[1]))
    stream = sock.makefile("rb")
    init = channel.receive_blocking(stream)
    if init is None:
        return 0
    path, module_name, qualname, info = init
    sys.path[:] = path
    _set_up_logging()
    try:
        handler = _load(module_name, qualname)
    except BaseException as exc:  # module-level code may raise anything, SystemExit included
        trace = traceback.format_list(traceback.extract_tb(exc.__traceback__)[1:])
        error = import_error(f"{module_name}.{qualname}", exc, trace)
        print(f"[ERROR] {error['errorType']}: {error['errorMessage']}", file=sys.stderr)
        sock.sendall(channel.frame((channel.INIT_ERROR, error)))
        return 1
    sock.sendall(channel.frame((channel.READY,)))
    _serve(sock, stream, handler, info)
    return 0


def _serve(sock: socket.socket, stream: Any, handler: Any, info: Any) -> None:
    """Invocations, one at a time, until the worker closes the channel."""
    from ..context import Context
    from ..dispatch import error_object, marshal_error

    global _request_id, _tail
    is_async = asyncio.iscoroutinefunction(handler)
    loop = asyncio.new_event_loop() if is_async else None
    while True:
        message = channel.receive_blocking(stream)
        if message is None:
            return
        _, request_id, deadline, arn, client_context, tail, trace_id, event = message
        _request_id = request_id
        _tail = [] if tail else None
        if trace_id:
            os.environ["_X_AMZN_TRACE_ID"] = trace_id
        ctx = Context(info, request_id, arn, client_context)
        ctx.deadline = deadline  # the worker's clock: CLOCK_MONOTONIC is system-wide
        try:
            event = channel.unpack_event(event)
            value = handler(event, ctx)
            if loop is not None:
                value = loop.run_until_complete(value)
            reply = (channel.RESULT, value, None)
        except MemoryError:
            _tail = None
            sock.sendall(channel.frame((channel.OOM, None, None)))
            os._exit(137)
        except Exception as exc:
            error = error_object(exc, request_id)
            trace = "".join(error["stackTrace"])
            print(
                f"[ERROR] {error['errorType']}: {error['errorMessage']}\n{trace}",
                end="",
                file=sys.__stdout__,
            )
            reply = (channel.ERROR, error, None)
        sys.stdout.flush()
        log = "".join(_tail) if _tail is not None else None
        _tail = None
        try:
            data = channel.frame((reply[0], reply[1], log))
        except MemoryError:
            sock.sendall(channel.frame((channel.OOM, None, None)))
            os._exit(137)
        except Exception as exc:  # the value cannot be sent: Lambda cannot serialise it either
            data = channel.frame((channel.ERROR, marshal_error(exc, request_id), log))
        sock.sendall(data)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
