"""A Python execution environment of streamfn's own: the worker's side of
:mod:`streamfn.execution.child`, spoken to over :mod:`streamfn.execution.channel`."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from typing import Any

from ..context import Context, FunctionInfo
from ..tracing import current_trace_id
from . import channel
from .errors import INIT_TIMEOUT, exit_error, init_exit_error, init_timeout, out_of_memory
from .process import Reply, kill, lambda_environ, started


class PythonEnvironment:
    """Runs ``module.qualname`` (a handler registered in the app) in a child interpreter."""

    def __init__(
        self, module: str, qualname: str, info: FunctionInfo, region: str, memory_mb: int
    ) -> None:
        self.module = module
        self.qualname = qualname
        self.info = info
        self.region = region
        self.memory_mb = memory_mb
        self.pid: int | None = None
        self.init_duration = 0.0
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def start(self, request_id: str) -> dict[str, Any] | None:
        began = time.perf_counter()
        ours, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "streamfn.execution.child",
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                env=lambda_environ(self.info, self.region, {}),
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            theirs.close()
        self._process = process
        self.pid = process.pid
        started(process, self.memory_mb)
        self._reader, self._writer = await asyncio.open_connection(sock=ours)
        init = (list(sys.path), self.module, self.qualname, self.info)
        self._writer.write(channel.frame(init))
        try:
            async with asyncio.timeout(INIT_TIMEOUT):
                message = await channel.receive(self._reader)
        except TimeoutError:
            await self.kill()
            return init_timeout(request_id)
        except (asyncio.IncompleteReadError, ConnectionError):
            return init_exit_error(request_id, await self._end())
        if message[0] == channel.INIT_ERROR:
            await self._end()
            error: dict[str, Any] = message[1]
            return error
        self.init_duration = time.perf_counter() - began
        return None

    async def invoke(self, event: Any, ctx: Context, tail: bool) -> Reply:
        assert self._writer is not None and self._reader is not None
        message = (
            channel.INVOKE,
            ctx.aws_request_id,
            ctx.deadline,
            ctx.invoked_function_arn,
            ctx.client_context,
            tail,
            current_trace_id.get(None),
            channel.pack_event(event),
        )
        self._writer.write(channel.frame(message))
        try:
            kind, payload, log = await channel.receive(self._reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return Reply(error=exit_error(ctx.aws_request_id, await self._end()), fatal=True)
        if kind == channel.RESULT:
            return Reply(value=channel.restore_records(payload, event), log=log)
        if kind == channel.ERROR:
            return Reply(error=payload, log=log)
        await self.kill()  # OOM: the child is on its way out; make sure
        return Reply(error=out_of_memory(ctx.aws_request_id), log=log, fatal=True)

    async def _end(self) -> int:
        """The process closed the channel: wait for it to be gone, and say how it ended."""
        if self._writer is not None:
            self._writer.close()
        assert self._process is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):  # it closed the channel: it is exiting
                await self._process.wait()
        return await kill(self._process)

    async def kill(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._process is not None:
            await kill(self._process)
