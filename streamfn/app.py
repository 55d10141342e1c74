"""The application object: functions and event source mappings registered with decorators, and
the ways to run them (``app.run()``, ``async with app.running()``, ``streamfn run``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
from collections.abc import AsyncIterator, Callable
from collections.abc import Mapping as MappingType
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .config import EventFormat, FunctionConfig, MappingConfig, StartingPosition, as_tuple
from .context import ClientContext
from .destinations import Destination, FunctionDestination
from .dispatch import Function, InvocationResult
from .errors import ConfigError, FunctionNotFound
from .mapping import Mapping
from .source import QueueSource, Source

H = TypeVar("H", bound=Callable[..., Any])


class App:
    """A set of functions, each optionally fed by event source mappings."""

    def __init__(
        self,
        name: str = "streamfn",
        *,
        region: str = "us-east-1",
        account_id: str = "000000000000",
        max_threads: int = 64,
    ) -> None:
        self.name = name
        self.region = region
        self.account_id = account_id
        self.functions: dict[str, Function] = {}
        self.mappings: list[Mapping] = []
        self._executor = ThreadPoolExecutor(max_threads, thread_name_prefix="streamfn-handler")
        self._mapping_destinations: list[Destination] = []

    def function(
        self,
        name: str | None = None,
        *,
        timeout: float = 3.0,
        memory_size: int = 128,
        reserved_concurrency: int | None = None,
    ) -> Callable[[H], H]:
        """Register a handler ``(event, context)`` as a function, invocable over the Invoke API.
        The handler is returned unchanged, so the module still works on Lambda."""

        def register(handler: H) -> H:
            self._add_function(handler, name, timeout, memory_size, reserved_concurrency)
            return handler

        return register

    def consume(
        self,
        source: Source | QueueSource,
        *,
        name: str | None = None,
        timeout: float = 3.0,
        memory_size: int = 128,
        reserved_concurrency: int | None = None,
        on_failure: Destination | None = None,
        aws: MappingType[str, Any] | None = None,
        batch_size: int | None = None,
        maximum_batching_window: float | None = None,
        parallelization_factor: int = 1,
        bisect_batch_on_function_error: bool = False,
        maximum_retry_attempts: int = -1,
        maximum_record_age: int = -1,
        function_response_types: list[str] | tuple[str, ...] | str | None = None,
        filter_criteria: Any = None,
        tumbling_window: int = 0,
        maximum_concurrency: int | None = None,
        starting_position: StartingPosition | None = None,
        starting_position_timestamp: float | None = None,
        event_format: EventFormat = "native",
        enabled: bool = True,
        payload_limit: int | None = None,
        retry_base_delay: float = 1.0,
        retry_max_delay: float = 60.0,
        shutdown_timeout: float = 30.0,
    ) -> Callable[[H], H]:
        """Register a function and an event source mapping that feeds it. Mapping settings are
        Lambda's CreateEventSourceMapping fields in snake_case; ``aws=`` takes the CamelCase dict
        instead (keyword settings given here override it)."""
        explicit: dict[str, Any] = {
            "batch_size": batch_size,
            "maximum_batching_window": maximum_batching_window,
            "parallelization_factor": parallelization_factor,
            "bisect_batch_on_function_error": bisect_batch_on_function_error,
            "maximum_retry_attempts": maximum_retry_attempts,
            "maximum_record_age": maximum_record_age,
            "function_response_types": as_tuple(function_response_types),
            "filter_criteria": filter_criteria,
            "tumbling_window": tumbling_window,
            "maximum_concurrency": maximum_concurrency,
            "starting_position": starting_position,
            "starting_position_timestamp": starting_position_timestamp,
            "event_format": event_format,
            "enabled": enabled,
            "retry_base_delay": retry_base_delay,
            "retry_max_delay": retry_max_delay,
            "shutdown_timeout": shutdown_timeout,
        }
        if payload_limit is not None:
            explicit["payload_limit"] = payload_limit
        base = MappingConfig.from_aws(aws) if aws is not None else MappingConfig()
        defaults = {f.name: f.default for f in dataclasses.fields(MappingConfig)}
        changed = {k: v for k, v in explicit.items() if v != defaults.get(k)}
        config = dataclasses.replace(base, **changed)

        def register(handler: H) -> H:
            function = self._add_function(handler, name, timeout, memory_size, reserved_concurrency)
            self.mappings.append(Mapping(function, source, config, on_failure))
            if on_failure is not None:
                self._mapping_destinations.append(on_failure)
            return handler

        return register

    def _add_function(
        self,
        handler: Callable[..., Any],
        name: str | None,
        timeout: float,
        memory_size: int,
        reserved_concurrency: int | None,
    ) -> Function:
        fname = name or handler.__name__
        if fname in self.functions:
            raise ConfigError(f"function {fname!r} is registered twice")
        config = FunctionConfig(
            name=fname,
            timeout=timeout,
            memory_size=memory_size,
            reserved_concurrency=reserved_concurrency,
            region=self.region,
            account_id=self.account_id,
        )
        function = Function(handler, config, self._executor)
        self.functions[fname] = function
        return function

    def get_function(self, name: str) -> Function:
        try:
            return self.functions[name]
        except KeyError:
            arn = f"arn:aws:lambda:{self.region}:{self.account_id}:function:{name}"
            raise FunctionNotFound(f"Function not found: {arn}") from None

    async def invoke(
        self,
        name: str,
        event: Any,
        *,
        client_context: ClientContext | None = None,
        request_id: str | None = None,
    ) -> InvocationResult:
        """Invoke a function synchronously, waiting for a concurrency slot."""
        return await self.get_function(name).invoke(
            event, client_context=client_context, request_id=request_id
        )

    def _bind(self) -> None:
        for destination in self._mapping_destinations:
            if isinstance(destination, FunctionDestination):
                destination.bind(self)

    @contextlib.asynccontextmanager
    async def running(self, *servers: Callable[[App, asyncio.Event], Any]) -> AsyncIterator[App]:
        """Run every mapping (and the given servers) for the duration of the block; on exit,
        drain partitions, commit and stop. A server is ``async def serve(app, stop_event)``."""
        self._bind()
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            for mapping in self.mappings:
                tg.create_task(mapping.run())
            for serve in servers:
                tg.create_task(serve(self, stop))
            try:
                yield self
            finally:
                stop.set()
                for mapping in self.mappings:
                    mapping.stop()

    async def serve(
        self, *servers: Callable[[App, asyncio.Event], Any], stop: asyncio.Event | None = None
    ) -> None:
        """Run until SIGTERM/SIGINT (or ``stop`` is set), then shut down gracefully."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        try:
            async with self.running(*servers):
                await stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)

    def run(self, *servers: Callable[[App, asyncio.Event], Any]) -> None:
        """Blocking entry point: uvloop when installed, graceful shutdown on signals."""
        from .runtime import run_loop

        run_loop(self.serve(*servers))
