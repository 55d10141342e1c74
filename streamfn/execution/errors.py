"""The error objects Lambda's platform (not the runtime) answers when an execution environment
fails: the process exited or was killed, ran out of memory, or never finished its init phase.

They carry only ``errorType`` and ``errorMessage``, as AWS answers them: the runtime that
would have added ``requestId`` and ``stackTrace`` is gone. A timeout is
:func:`streamfn.dispatch.timeout_object`, the same object every mode answers.
"""

from __future__ import annotations

import signal
from typing import Any

#: Seconds Lambda gives an environment's init phase (module import, global code).
INIT_TIMEOUT = 10.0


def exit_status(returncode: int) -> str:
    """How Lambda (Go's ``os/exec``) words a process's end: ``exit status 3``, ``signal:
    killed``, ``signal: segmentation fault``."""
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        name = signal.strsignal(-returncode) or f"signal {-returncode}"
    except ValueError:
        name = f"signal {-returncode}"
    return f"signal: {name.lower()}"


def exit_error(request_id: str, returncode: int) -> dict[str, Any]:
    """The environment's process ended during an invocation (a crash, ``os._exit``)."""
    return {
        "errorType": "Runtime.ExitError",
        "errorMessage": (
            f"RequestId: {request_id} Error: Runtime exited with error: {exit_status(returncode)}"
        ),
    }


def out_of_memory(request_id: str) -> dict[str, Any]:
    """The invocation went over the function's memory size: Lambda's cgroup kills the
    process (``signal: killed``) and reports ``Runtime.OutOfMemory``."""
    return {
        "errorType": "Runtime.OutOfMemory",
        "errorMessage": (
            f"RequestId: {request_id} Error: Runtime exited with error: signal: killed"
        ),
    }


def init_exit_error(request_id: str, returncode: int) -> dict[str, Any]:
    """The process ended during its init phase without reporting an init error."""
    return {
        "errorType": "Runtime.InitError",
        "errorMessage": (
            f"RequestId: {request_id} Error: Runtime exited with error: {exit_status(returncode)}"
        ),
    }


def init_timeout(request_id: str) -> dict[str, Any]:
    """The init phase ran past :data:`INIT_TIMEOUT`: the environment is destroyed."""
    return {
        "errorType": "Runtime.InitError",
        "errorMessage": (
            f"RequestId: {request_id} Error: Init phase timed out after {INIT_TIMEOUT:.2f} seconds"
        ),
    }


def import_error(handler: str, exc: BaseException, trace: list[str]) -> dict[str, Any]:
    """awslambdaric's init error for a handler it cannot load: ``Runtime.ImportModuleError``
    when the module does not import, ``Runtime.HandlerNotFound`` when the name is missing,
    ``Runtime.UserCodeSyntaxError`` for a syntax error, the exception's own type for any other
    error raised by module-level code."""
    module, _, name = handler.rpartition(".")
    if isinstance(exc, SyntaxError):
        kind, message = "Runtime.UserCodeSyntaxError", f"Syntax error in module '{module}': {exc}"
    elif isinstance(exc, ImportError):
        kind, message = "Runtime.ImportModuleError", f"Unable to import module '{module}': {exc}"
    elif isinstance(exc, AttributeError):
        kind, message = "Runtime.HandlerNotFound", f"Handler '{name}' missing on module '{module}'"
    else:
        kind, message = type(exc).__name__, str(exc)
    return {"errorMessage": message, "errorType": kind, "requestId": "", "stackTrace": trace}
