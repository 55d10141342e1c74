"""Handlers the environment tests register: defined at module level, as Lambda loads them, so
an execution environment can import them by module and name. They talk to the test through
files named in the event (an environment shares no memory with the worker)."""

from __future__ import annotations

import base64
import ctypes
import fcntl
import json
import os
import time
from typing import Any

#: Module-level state, as Lambda code keeps it: lives as long as the environment.
INVOCATIONS = 0


def echo(event: Any, context: Any) -> Any:
    """Returns what it got, with what the context says, and counts warm invocations."""
    global INVOCATIONS
    INVOCATIONS += 1
    print(f"echo {event!r}")
    return {
        "event": event,
        "pid": os.getpid(),
        "invocations": INVOCATIONS,
        "request_id": context.aws_request_id,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "function_name": context.function_name,
        "memory_limit_in_mb": context.memory_limit_in_mb,
    }


def fail(event: Any, context: Any) -> Any:
    raise ValueError(f"bad {event}")


def params(event: Any) -> Any:
    """The test's parameters: the event itself (Invoke), or the JSON of the first record of a
    native batch or of a Lambda-format memory event."""
    if isinstance(event, dict) and "Records" in event:
        return json.loads(base64.b64decode(event["Records"][0]["data"]))
    if isinstance(event, dict):
        return event
    return event[0].json()


def sleepy(event: Any, context: Any) -> Any:
    """Sleeps ``sleep`` seconds holding an exclusive lock on ``lock``, writing ``start`` and
    ``stop`` lines with the time and the process id to ``log``. A copy that finds the lock
    taken (another copy of the same work still running: the lock dies with its process or
    thread's file) writes ``overlap``."""
    p = params(event)
    with open(p["lock"], "a") as lock, open(p["log"], "a", buffering=1) as out:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            out.write(f"overlap {time.monotonic()} {os.getpid()}\n")
        out.write(f"start {time.monotonic()} {os.getpid()}\n")
        time.sleep(p["sleep"])
        out.write(f"stop {time.monotonic()} {os.getpid()}\n")
    return "slept"


def crash(event: Any, context: Any) -> Any:
    """``exit``: ``os._exit(3)``; ``segfault``: read address 0 through ctypes; else succeed."""
    if event == "exit":
        os._exit(3)
    if event == "segfault":
        ctypes.string_at(0)
    return os.getpid()


def hog(event: Any, context: Any) -> Any:
    """Allocates ``event`` MB at once."""
    block = bytearray(event * 1024 * 1024)
    return len(block)


#: Offsets :func:`partial` has reported failed once: this environment's module state.
FAILED_ONCE: set[str] = set()


def partial(event: Any, context: Any) -> Any:
    """A Lambda-format batch handler: reports a record whose data is ``bad`` as failed the first
    time this environment sees it, and writes the offsets of each batch to ``BATCHES_OUT``."""
    offsets = [r["offset"] for r in event["Records"]]
    with open(os.environ["BATCHES_OUT"], "a") as out:
        out.write(" ".join(offsets) + "\n")
    failures = []
    for r in event["Records"]:
        if base64.b64decode(r["data"]) == b"bad" and r["offset"] not in FAILED_ONCE:
            FAILED_ONCE.add(r["offset"])
            failures.append({"itemIdentifier": r["offset"]})
    return {"batchItemFailures": failures}
