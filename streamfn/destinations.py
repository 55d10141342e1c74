"""Where records go when an invocation's outcome is final: the Destination protocol, the core
destinations (file, another function) and Lambda's on-failure record format."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import orjson

from .errors import ConfigError, DestinationError, FunctionNotFound


@runtime_checkable
class Destination(Protocol):
    """Receives Lambda-format records (on-failure records, async invocation records).

    ``send`` returns only once the record is stored; raising means it was not, and the caller
    retries, so a destination never loses a record silently."""

    #: Whether the record should carry the original event under "payload" (AWS: only S3 does).
    include_payload: bool

    async def send(self, record: Mapping[str, Any], *, key: bytes | None = None) -> None: ...

    def describe(self) -> str: ...


@runtime_checkable
class CheckedDestination(Destination, Protocol):
    """A destination that can tell before the app starts whether it will be able to store
    records. The app calls :meth:`check` once on start-up for every destination it was given,
    so a misnamed queue or topic stops the worker at once instead of surfacing when a record
    first fails, possibly days later. Optional: a destination without it is used unchecked."""

    async def check(self) -> None:
        """Raise :class:`~streamfn.errors.ConfigError` when the destination as configured
        cannot store records (a missing queue or topic, a path that cannot be written), or
        :class:`~streamfn.errors.DestinationError` when it cannot be reached now. Leaves no
        connection open: nobody may close the destination afterwards."""


async def check_destination(destination: Destination, role: str) -> None:
    """Run ``destination``'s start-up check, if it has one, naming its ``role`` (e.g.
    ``"on_failure of function 'orders'"``) in the error: an app may hold several destinations
    of one kind, and the message must say which one is wrong."""
    if not isinstance(destination, CheckedDestination):
        return
    try:
        await destination.check()
    except (ConfigError, DestinationError) as exc:
        raise type(exc)(f"{role}: {exc}") from exc


def iso_timestamp(epoch: float | None = None) -> str:
    """ISO-8601 UTC with milliseconds, as Lambda writes ``timestamp`` fields."""
    t = time.time() if epoch is None else epoch
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def failure_record(
    *,
    request_id: str,
    function_arn: str,
    condition: str,
    invoke_count: int,
    batch_info: tuple[str, dict[str, Any]],
    function_error: str | None = "Unhandled",
    payload: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Lambda's on-failure record for an event source mapping (streams and Kafka)."""
    record: dict[str, Any] = {
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": invoke_count,
        },
        "responseContext": (
            None
            if condition == "MaximumPayloadSizeExceeded"
            else {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": function_error,
            }
        ),
        "version": "1.0",
        "timestamp": iso_timestamp(),
        batch_info[0]: batch_info[1],
    }
    if record["responseContext"] is not None and function_error is None:
        del record["responseContext"]["functionError"]
    if payload is not None:
        record["payload"] = orjson.dumps(payload).decode()
    return record


class FileDestination:
    """Appends each record as one JSON line to a file and fsyncs it before returning."""

    def __init__(self, path: str | os.PathLike[str], *, include_payload: bool = True) -> None:
        self.path = Path(path)
        self.include_payload = include_payload
        self._lock = asyncio.Lock()

    def describe(self) -> str:
        return f"file://{self.path}"

    async def check(self) -> None:
        """Refuse a path that cannot be appended to: a directory, a file that is not
        writable, or a new file whose nearest existing ancestor is not a writable directory
        (:meth:`send` creates the missing directories). Creates nothing."""
        try:
            problem = await asyncio.to_thread(self._unwritable)
        except OSError as exc:  # e.g. a directory on the way that may not be searched
            problem = f"cannot be checked: {exc}"
        if problem is not None:
            raise ConfigError(f"FileDestination {str(self.path)!r}: {problem}")

    def _unwritable(self) -> str | None:
        path = self.path.absolute()
        if path.exists():
            if path.is_dir():
                return "is a directory"
            return None if os.access(path, os.W_OK) else "the file is not writable"
        ancestor = next(parent for parent in path.parents if parent.exists())
        if not ancestor.is_dir():
            return f"cannot be created: {ancestor} is not a directory"
        if not os.access(ancestor, os.W_OK | os.X_OK):
            return f"cannot be created: directory {ancestor} is not writable"
        return None

    async def send(self, record: Mapping[str, Any], *, key: bytes | None = None) -> None:
        line = orjson.dumps(record) + b"\n"
        async with self._lock:
            try:
                await asyncio.to_thread(self._append, line)
            except OSError as exc:
                raise DestinationError(f"cannot write to {self.path}: {exc}") from exc

    def _append(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


class InvocationOutcome(Protocol):
    """What a :class:`FunctionDestination` reads of an invocation's result: Lambda's error
    object, or None when the function succeeded."""

    @property
    def error(self) -> Mapping[str, Any] | None: ...


class FunctionInvoker(Protocol):
    """What a :class:`FunctionDestination` needs of the app that binds it (``streamfn.App`` is
    one): to check that a function exists, and to invoke its ``$LATEST``. Declared here rather
    than taking the App: config and dispatch import this module, so it may import neither the
    app nor dispatch, not even for a type."""

    def check(self, name: str, qualifier: str | None = None) -> None:
        """Raise :class:`~streamfn.errors.FunctionNotFound` unless ``name`` can be invoked."""

    async def invoke(self, name: str, event: Any) -> InvocationOutcome: ...


class FunctionDestination:
    """Invokes another function of the same app with the record as its event."""

    include_payload = False

    def __init__(self, function_name: str) -> None:
        self.function_name = function_name
        self._functions: FunctionInvoker | None = None

    def describe(self) -> str:
        return f"function:{self.function_name}"

    def bind(self, functions: FunctionInvoker) -> None:
        try:
            functions.check(self.function_name)
        except FunctionNotFound:
            raise ConfigError(
                f"destination function {self.function_name!r} is not registered"
            ) from None
        self._functions = functions

    async def send(self, record: Mapping[str, Any], *, key: bytes | None = None) -> None:
        if self._functions is None:
            raise DestinationError(f"{self.describe()} is not bound to an app")
        result = await self._functions.invoke(self.function_name, dict(record))
        if result.error is not None:
            raise DestinationError(
                f"destination function {self.function_name!r} failed: "
                f"{result.error['errorMessage']}"
            )


class CallbackDestination:
    """Hands each record to an async callable; for embedding and tests."""

    def __init__(
        self,
        callback: Callable[[Mapping[str, Any]], Awaitable[None]],
        *,
        include_payload: bool = False,
    ) -> None:
        self.callback = callback
        self.include_payload = include_payload

    def describe(self) -> str:
        return f"callback:{getattr(self.callback, '__qualname__', self.callback)!s}"

    async def send(self, record: Mapping[str, Any], *, key: bytes | None = None) -> None:
        await self.callback(record)
