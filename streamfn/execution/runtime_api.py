"""Execution environments run by any runtime interface client: the Lambda Runtime API
(``/2018-06-01/runtime/...``), served on loopback to one environment each, so AWS's
``awslambdaric`` and a custom runtime's ``bootstrap`` (a bash script with ``curl``, as in AWS's
tutorial) run unchanged, in any language.

A function is declared by its command::

    app.function(name="ric")(Command([sys.executable, "-m", "awslambdaric", "app.handler"]))
    app.consume(source, name="sh", event_format="lambda")(Command(["./bootstrap"]))

The command starts with ``AWS_LAMBDA_RUNTIME_API`` pointing at its own server, ``_HANDLER``
set to ``handler`` and Lambda's other variables. Its init phase ends with its first
``GET .../invocation/next``; ``POST .../init/error`` reports an init error. The server speaks
just enough HTTP/1.1 for that: one request at a time per connection, keep-alive, bodies by
``Content-Length`` or chunked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from ..context import Context, FunctionInfo
from ..tracing import current_trace_id
from .errors import INIT_TIMEOUT, exit_error, init_exit_error, init_timeout, out_of_memory
from .process import Reply, kill, lambda_environ, started, wall_deadline_ms

_PREFIX = "/2018-06-01/runtime/"
_MAX_BODY = 8 * 1024 * 1024  # above Lambda's 6 MB response cap, so the cap can be reported


class Command:
    """A handler that is a program speaking the Runtime API. ``handler`` becomes ``_HANDLER``
    (awslambdaric's ``module.function``; a bootstrap reads it as it likes). Calling it in the
    worker is an error: it only runs as an execution environment.

    ``cwd`` is the directory it starts in (Lambda starts a bootstrap in its code directory,
    ``LAMBDA_TASK_ROOT``, which ``cwd`` also sets unless ``env`` does). ``base_env`` replaces
    the worker's ``os.environ`` as the environment ``env`` and Lambda's variables are added
    to: a worker running several functions keeps one function's variables from another's
    process, as separate Lambda sandboxes do."""

    def __init__(
        self,
        argv: Sequence[str],
        handler: str = "",
        env: dict[str, str] | None = None,
        *,
        cwd: str | os.PathLike[str] | None = None,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        if isinstance(argv, str) or not argv:
            raise ValueError("Command needs the program and its arguments as a list")
        self.argv = list(argv)
        self.handler = handler
        self.cwd = os.fspath(cwd) if cwd is not None else None
        self.base_env = dict(base_env) if base_env is not None else None
        self.env = dict(env or {})
        if self.cwd is not None:
            self.env.setdefault("LAMBDA_TASK_ROOT", self.cwd)
        self.__name__ = self.__qualname__ = "command"

    def __call__(self, event: Any, context: Any) -> Any:
        raise RuntimeError(f"{self.argv[0]} runs only in an execution environment")

    def __repr__(self) -> str:
        return f"Command({self.argv!r})"


class _Output(asyncio.subprocess.SubprocessStreamProtocol):
    """The runtime's stdout and stderr (one pipe), handed to ``sink`` as they arrive: they are
    its log. The runtime writes a line before it posts its response, and the pipe's data is
    handled in the loop iteration it arrives in, so the log tail is complete when the
    response is."""

    def __init__(self, sink: Callable[[bytes], None], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=1 << 16, loop=loop)
        self._sink = sink

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        self._sink(data if isinstance(data, bytes) else data.encode())


class _Exchange:
    """What the environment answers to the invocation it was given."""

    def __init__(self) -> None:
        self.done: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()

    def settle(self, kind: str, payload: Any) -> None:
        if not self.done.done():
            self.done.set_result((kind, payload))


class RuntimeApiEnvironment:
    """One process of ``command`` and the Runtime API server it alone talks to."""

    def __init__(self, command: Command, info: FunctionInfo, region: str, memory_mb: int) -> None:
        self.command = command
        self.info = info
        self.region = region
        self.memory_mb = memory_mb
        self.pid: int | None = None
        self.init_duration = 0.0
        self._process: asyncio.subprocess.Process | None = None
        self._server: asyncio.Server | None = None
        self._next: asyncio.Queue[tuple[bytes, dict[str, str]] | None] = asyncio.Queue()
        self._ready: asyncio.Future[dict[str, Any] | None] | None = None
        self._exchange: _Exchange | None = None
        self._request_id: str | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._tail: list[bytes] | None = None  # the running invocation's output, when asked

    def _output(self, data: bytes) -> None:
        """The runtime's output: to the worker's stderr, as a sandbox's goes to its log, and
        into the running invocation's tail."""
        if self._tail is not None:
            self._tail.append(data)
        sys.stderr.buffer.write(data)
        sys.stderr.buffer.flush()

    async def start(self, request_id: str) -> dict[str, Any] | None:
        began = time.perf_counter()
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        extra = {"AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}", "_HANDLER": self.command.handler}
        transport, protocol = await loop.subprocess_exec(
            lambda: _Output(self._output, loop),
            *self.command.argv,
            env=lambda_environ(
                self.info, self.region, {**extra, **self.command.env}, self.command.base_env
            ),
            cwd=self.command.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        process = asyncio.subprocess.Process(transport, protocol, loop)
        self._process = process
        self.pid = process.pid
        started(process, self.memory_mb)
        exited: asyncio.Future[int] = asyncio.ensure_future(process.wait())
        try:
            async with asyncio.timeout(INIT_TIMEOUT):
                await asyncio.wait((self._ready, exited), return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            await self.kill()
            return init_timeout(request_id)
        finally:
            exited.cancel()
        if self._ready.done():
            error = self._ready.result()
            if error is not None:
                await self.kill()
                return error
            self.init_duration = time.perf_counter() - began
            return None
        code = await process.wait()
        await self.kill()
        return init_exit_error(request_id, code)

    async def invoke(self, event: Any, ctx: Context, tail: bool) -> Reply:
        assert self._process is not None
        request_id = ctx.aws_request_id
        headers = {
            "Lambda-Runtime-Aws-Request-Id": request_id,
            "Lambda-Runtime-Deadline-Ms": str(wall_deadline_ms(ctx)),
            "Lambda-Runtime-Invoked-Function-Arn": ctx.invoked_function_arn,
            "Lambda-Runtime-Trace-Id": current_trace_id.get(None) or "",
        }
        if ctx.client_context is not None:
            headers["Lambda-Runtime-Client-Context"] = orjson.dumps(
                ctx.client_context, default=vars
            ).decode()
        exchange = self._exchange = _Exchange()
        self._request_id = request_id
        self._tail = [] if tail else None
        await self._next.put((orjson.dumps(event), headers))
        exited: asyncio.Future[int] = asyncio.ensure_future(self._process.wait())
        try:
            await asyncio.wait((exchange.done, exited), return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
            self._exchange = None
            log = b"".join(self._tail).decode(errors="replace") if self._tail is not None else None
            self._tail = None
        if not exchange.done.done():
            code = await self._process.wait()
            await self.kill()
            return Reply(error=exit_error(request_id, code), log=log, fatal=True)
        kind, payload = exchange.done.result()
        if kind == "response":
            return Reply(value=payload, log=log)
        if isinstance(payload, dict) and payload.get("errorType") == "MemoryError":
            await self.kill()  # the memory cap refused an allocation: Lambda's cgroup kills
            return Reply(error=out_of_memory(request_id), log=log, fatal=True)
        return Reply(error=payload, log=log)

    async def kill(self) -> None:
        if self._process is not None:
            await kill(self._process)
        for writer in self._connections:
            writer.transport.abort()
        self._next.put_nowait(None)  # wakes a runtime's pending GET .../next: it is gone
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection of the runtime: requests in turn until it closes."""
        self._connections.add(writer)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                method, path, headers, body = request
                status, out_headers, out_body = await self._route(method, path, headers, body)
                head = f"HTTP/1.1 {status}\r\nContent-Length: {len(out_body)}\r\n"
                head += "".join(f"{k}: {v}\r\n" for k, v in out_headers.items())
                writer.write(head.encode() + b"\r\n" + out_body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            self._connections.discard(writer)
            writer.close()

    async def _route(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[str, dict[str, str], bytes]:
        accepted = ("202 Accepted", {"Content-Type": "application/json"}, b'{"status":"OK"}')
        if not path.startswith(_PREFIX):
            return "404 Not Found", {}, b'{"errorType":"InvalidRequest"}'
        route = path[len(_PREFIX) :]
        if method == "GET" and route == "invocation/next":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
            invocation = await self._next.get()
            if invocation is None:
                raise ConnectionError("the environment is being killed")
            event, next_headers = invocation
            return "200 OK", {"Content-Type": "application/json", **next_headers}, event
        if method == "POST" and route == "init/error":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(_error_body(body, "Runtime.Unknown"))
            return accepted
        if method == "POST" and route.startswith("invocation/"):
            request_id, _, what = route[len("invocation/") :].partition("/")
            exchange = self._exchange
            if exchange is None or request_id != self._request_id:
                return "400 Bad Request", {}, b'{"errorType":"InvalidRequestID"}'
            if what == "response":
                exchange.settle("response", orjson.loads(body) if body else None)
                return accepted
            if what == "error":
                kind = headers.get("lambda-runtime-function-error-type", "Runtime.Unknown")
                exchange.settle("error", _error_body(body, kind))
                return accepted
        return "404 Not Found", {}, b'{"errorType":"InvalidRequest"}'


def _error_body(body: bytes, kind: str) -> dict[str, Any]:
    """A runtime's error report: its JSON object, or one made from what it sent."""
    try:
        error = orjson.loads(body)
    except orjson.JSONDecodeError:
        error = None
    if isinstance(error, dict):
        return error
    return {"errorType": kind, "errorMessage": body.decode(errors="replace")}


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, str, dict[str, str], bytes] | None:
    line = await reader.readline()
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                await reader.readline()
                break
            chunks.append(await reader.readexactly(size))
            await reader.readline()
        body = b"".join(chunks)
    else:
        length = int(headers.get("content-length", "0"))
        if length > _MAX_BODY:
            raise ValueError("body too large")
        body = await reader.readexactly(length) if length else b""
    return method, path.split("?", 1)[0], headers, body
