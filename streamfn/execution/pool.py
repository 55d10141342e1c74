"""A function's execution environments, as Lambda keeps them: created on demand (the cold
start runs the init phase), reused while warm, one invocation at a time each, destroyed and
replaced when an invocation times out, crashes or runs out of memory.

The pool never holds more than ``size`` environments (the function's reserved concurrency, or
:data:`~streamfn.config.DEFAULT_MAX_ENVIRONMENTS`); an invocation that finds none free waits
for one. An environment being killed still counts until its process is reaped, so a stream
batch retried after a timeout starts only once its first copy is dead: two copies never run
at once. The invoke phase's timeout starts once init is done, as on Lambda, where init has a
limit of its own (10 s).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import Any

from ..context import Context
from .process import Environment, Reply, peak_memory_mb

log = logging.getLogger("streamfn.execution")

#: Seconds between two log lines about one pool's failures of one kind; the rest are counted.
LOG_EVERY = 10.0


class PoolStats:
    """What a pool did, for tests, the bench and ``/metrics`` readers."""

    __slots__ = ("cold_starts", "crashes", "init_errors", "out_of_memory", "timeouts")

    def __init__(self) -> None:
        self.cold_starts = 0
        self.init_errors = 0
        self.timeouts = 0
        self.crashes = 0
        self.out_of_memory = 0


class EnvironmentPool:
    """The execution environments of one function version."""

    def __init__(
        self, name: str, factory: Callable[[], Environment], size: int, timeout: float
    ) -> None:
        self.name = name
        self.size = size
        self.timeout = timeout
        self.stats = PoolStats()
        self._factory = factory
        self._idle: list[Environment] = []  # warm, most recently used last
        self._count = 0  # alive, starting or being killed
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False
        self._logged: dict[str, tuple[float, int]] = {}  # kind -> (last logged, suppressed)

    @property
    def environments(self) -> int:
        """Environments alive now (warm, busy, starting or being killed)."""
        return self._count

    @property
    def pids(self) -> list[int]:
        return [e.pid for e in self._idle if e.pid is not None]

    async def invoke(self, event: Any, ctx: Context, tail: bool) -> Reply:
        """Run one invocation in a warm environment, or a fresh one. Returns the reply, with
        ``error`` set for an init error, a crash, running out of memory or (``timed_out``) the
        timeout; only cancellation propagates, after the environment it was using is dead."""
        env = await self._take()
        init_duration = None
        if env is None:
            env, error = await self._start(ctx)
            if env is None:
                return Reply(error=error, fatal=True)
            init_duration = env.init_duration
        ctx.deadline = time.monotonic() + self.timeout  # the invoke phase starts now
        try:
            async with asyncio.timeout(self.timeout):
                reply = await env.invoke(event, ctx, tail)
        except TimeoutError:
            await self._destroy(env)
            self.stats.timeouts += 1
            self._warn(
                "timeout",
                f"function {self.name}: an invocation ran past its {self.timeout:g} s timeout; "
                "its execution environment was killed, the invocation fails with "
                "Sandbox.Timedout and the next one starts a fresh environment",
            )
            return Reply(fatal=True, timed_out=True)
        except BaseException:  # cancelled: the environment is mid-invocation, it cannot stay
            await self._destroy(env)
            raise
        if reply.fatal:
            await self._destroy(env)
            self._count_failure(reply)
        else:
            if tail and env.pid is not None:
                reply.max_memory_mb = peak_memory_mb(env.pid)
            self._give_back(env)
        reply.init_duration = init_duration
        return reply

    async def _take(self) -> Environment | None:
        """A warm environment, or None when the caller may start one (a slot is taken)."""
        while True:
            if self._idle:
                return self._idle.pop()
            if self._count < self.size:
                self._count += 1
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif not waiter.cancelled():
                    self._wake()  # woken just as it gave up: pass the free environment on
                raise

    async def _start(self, ctx: Context) -> tuple[Environment | None, dict[str, Any] | None]:
        """A cold start: a new environment through its init phase (its slot is taken)."""
        self.stats.cold_starts += 1
        env = self._factory()
        try:
            error = await env.start(ctx.aws_request_id)
        except BaseException:
            await self._destroy(env)
            raise
        if error is None:
            return env, None
        self.stats.init_errors += 1
        self._released()
        self._warn(
            "init",
            f"function {self.name}: execution environment init failed: "
            f"{error.get('errorType')}: {error.get('errorMessage')}; the invocation fails and "
            "the next one starts a fresh environment",
        )
        return None, error

    def _give_back(self, env: Environment) -> None:
        if self._closed:
            self._count -= 1
            asyncio.get_running_loop().create_task(env.kill())
            return
        self._idle.append(env)
        self._wake()

    async def _destroy(self, env: Environment) -> None:
        try:
            await env.kill()
        finally:
            self._released()

    def _released(self) -> None:
        self._count -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _count_failure(self, reply: Reply) -> None:
        error = reply.error or {}
        kind = error.get("errorType", "")
        if kind == "Runtime.OutOfMemory":
            self.stats.out_of_memory += 1
        else:
            self.stats.crashes += 1
        self._warn(
            kind,
            f"function {self.name}: {kind}: {error.get('errorMessage')}; the invocation "
            "fails and its execution environment is replaced",
        )

    def _warn(self, kind: str, message: str) -> None:
        """Log a failure once per :data:`LOG_EVERY` per kind, with how many were not logged."""
        now = time.monotonic()
        last, suppressed = self._logged.get(kind, (-LOG_EVERY, 0))
        if now - last < LOG_EVERY:
            self._logged[kind] = (last, suppressed + 1)
            return
        more = f" ({suppressed} more since the last report)" if suppressed else ""
        log.warning(message + more, extra={"function": self.name})
        self._logged[kind] = (now, 0)

    async def close(self) -> None:
        """Kill every warm environment; busy ones are killed as their invocations end."""
        self._closed = True
        idle, self._idle = self._idle, []
        for env in idle:
            await self._destroy(env)
