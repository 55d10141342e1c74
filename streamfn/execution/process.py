"""What every execution environment shares, whatever speaks to it: the process, its Lambda
environment variables, its memory cap, how it is killed and what an invocation's reply is.

The memory size is enforced as Lambda's cgroup would, as far as a process without one can:
``RLIMIT_AS`` (address space) of ``memory_size`` MB, set on the process as soon as it
exists, so its children (a bootstrap's ``curl``) inherit it. An allocation past it fails: in
Python a ``MemoryError``, which the environment reports as Lambda's ``Runtime.OutOfMemory``.
Address space counts mapped libraries too (~35 MB for Python with streamfn imported), so the
cap is a little stricter than Lambda's, which counts resident memory.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import resource
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..context import Context, FunctionInfo


@dataclass(slots=True)
class Reply:
    """How one invocation in an environment ended: a value, or Lambda's error object; ``log``
    is its output when the caller asked for the tail; ``fatal`` means the environment is gone
    (crash, out of memory, timeout) and must not be reused."""

    value: Any = None
    error: dict[str, Any] | None = None
    log: str | None = None
    fatal: bool = False
    timed_out: bool = False  # cut at the function's timeout; the caller words the error
    init_duration: float | None = None  # seconds, when this invocation started the environment
    max_memory_mb: int | None = None  # the environment's peak resident memory, when asked


def peak_memory_mb(pid: int) -> int | None:
    """A process's peak resident memory (``VmHWM``): Lambda's "Max Memory Used"."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


class Environment(Protocol):
    """One execution environment: :meth:`start` runs its init phase, then :meth:`invoke` runs
    invocations one at a time until one is fatal or :meth:`kill` ends it."""

    pid: int | None
    init_duration: float

    async def start(self, request_id: str) -> dict[str, Any] | None:
        """Run the init phase; Lambda's init error object if it failed (the process is then
        gone), None once the environment waits for its first invocation."""

    async def invoke(self, event: Any, ctx: Context, tail: bool) -> Reply: ...

    async def kill(self) -> None:
        """SIGKILL the process and wait for it: once this returns, nothing of it runs."""


def lambda_environ(
    info: FunctionInfo,
    region: str,
    extra: dict[str, str],
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The worker's environment (or ``base``) plus the variables Lambda sets in every sandbox,
    so runtime clients and libraries (Powertools reads several) see what they would on
    Lambda."""
    env = dict(os.environ if base is None else base)
    env.update(
        AWS_LAMBDA_FUNCTION_NAME=info.function_name,
        AWS_LAMBDA_FUNCTION_VERSION=info.function_version,
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE=info.memory_limit_in_mb,
        AWS_LAMBDA_LOG_GROUP_NAME=info.log_group_name,
        AWS_LAMBDA_LOG_STREAM_NAME=info.log_stream_name,
        AWS_LAMBDA_FUNCTION_TIMEOUT=str(int(info.timeout)),
        AWS_REGION=region,
        AWS_DEFAULT_REGION=env.get("AWS_DEFAULT_REGION", region),
        AWS_EXECUTION_ENV="AWS_Lambda_streamfn",
        LAMBDA_TASK_ROOT=env.get("LAMBDA_TASK_ROOT", os.getcwd()),
        TZ=":UTC",
    )
    env.update(extra)
    return env


#: Environments' process ids not reaped yet, killed at exit: an app invoked without
#: ``App.running()`` (a test, a script) never closes its pools.
_live: set[int] = set()


@atexit.register
def _kill_live() -> None:
    for pid in list(_live):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def started(process: asyncio.subprocess.Process, memory_mb: int) -> None:
    """Take charge of a new environment's process: cap its memory, kill it at exit."""
    _live.add(process.pid)
    cap_memory(process.pid, memory_mb)


def cap_memory(pid: int, memory_mb: int) -> None:
    """Cap the process's address space at its memory size (see the module's docstring)."""
    limit = memory_mb * 1024 * 1024
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        resource.prlimit(pid, resource.RLIMIT_AS, (limit, limit))


async def kill(process: asyncio.subprocess.Process) -> int:
    """SIGKILL ``process`` (and its process group: a bootstrap's ``curl`` too) and reap it."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    code = await process.wait()
    _live.discard(process.pid)
    return code


def wall_deadline_ms(ctx: Context) -> int:
    """The invocation's deadline as Lambda-Runtime-Deadline-Ms: Unix milliseconds."""
    return int((time.time() + (ctx.deadline - time.monotonic())) * 1000)
