"""The application object: functions (with versions and aliases) and event source mappings
registered with decorators, and the ways to run them (``app.run()``, ``async with
app.running()``, ``streamfn run``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import os
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from collections.abc import Mapping as MappingType
from pathlib import Path
from typing import Any, TypeVar, overload

import orjson

from . import access_keys as _access_keys
from . import tracing
from .asyncq import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_EVENTS,
    EventQueue,
    MemoryEventQueue,
    SQLiteEventQueue,
    check_bounds,
)
from .aws_mapping import AwsMapping
from .config import (
    FUNCTION_SETTINGS,
    MAPPING_SETTINGS,
    FunctionConfig,
    check_settings,
)
from .context import ClientContext
from .destinations import Destination, FunctionDestination, check_destination
from .dispatch import Concurrency, Function, InvocationResult
from .errors import ConfigError, FunctionNotFound, InvocationError
from .execution import Command, HandlerThreads
from .execution.modes import choose
from .execution.pool import PoolStats
from .health import DEFAULT_STUCK_AFTER, Health
from .invoke_async import AsyncInvoker
from .mapping import Mapping
from .metrics import AppMetrics
from .source import QueueSource, Source
from .versions import LATEST, Alias, Versions

H = TypeVar("H", bound=Callable[..., Any])
#: streamfn_execution_replacements_total's reasons, and the PoolStats count of each.
_REPLACEMENT_REASONS = (
    ("timeout", "timeouts"),
    ("crash", "crashes"),
    ("out_of_memory", "out_of_memory"),
    ("init_error", "init_errors"),
)


def _check_handler(handler: object, name: str, where: str) -> None:
    """Refuse at registration a handler that cannot be called as ``handler(event, context)``,
    which is how Lambda, and streamfn, call every handler: a wrong signature would otherwise
    register, start, and fail every invocation. Defaults, ``*args``, ``functools.partial``,
    classes and objects with ``__call__`` are judged by :func:`inspect.signature`; a callable
    that has none (some builtins) is let through."""
    if not callable(handler):
        raise ConfigError(f"{where}: {name!r} is a {type(handler).__name__}, not a handler")
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(None, None)
    except TypeError:
        bare = signature.replace(
            parameters=[p.replace(annotation=p.empty) for p in signature.parameters.values()],
            return_annotation=signature.empty,
        )
        raise ConfigError(
            f"{where}: handler {name!r} takes {bare}, but it is called with two arguments: "
            "define it as (event, context)"
        ) from None


class App:
    """A set of functions (with their versions and aliases), each optionally fed by event source
    mappings.

    ``state_dir`` holds the durable queue of asynchronous invocations and their dead letters
    (``streamfn run`` defaults it to ``./.streamfn``); without one, ``Event`` invocations wait in
    memory. ``event_queue`` plugs in another :class:`~streamfn.asyncq.EventQueue` instead.
    ``async_queue_max_events`` and ``async_queue_max_bytes`` (payload bytes) bound the local
    queue (memory or state directory): when full, ``Event`` invocations are refused with 429
    ``TooManyRequestsException`` and ``Retry-After``, so a slow consumer cannot grow it without
    limit.
    ``async_time_scale`` shrinks the async retry delays, throttle backoff and maximum event age
    alike (for tests). ``access_keys`` are the keys that may call the Invoke API and ``AWS_IAM``
    function URLs: ``{access key id: secret}`` (each granted everything) or
    :class:`~streamfn.access_keys.AccessKey` objects with grants; once there is one, every Invoke
    API request must be signed (``streamfn run --access-keys-file`` adds keys from a file;
    ``self.access_keys`` holds them all by id). ``routing_seed`` seeds the weighted alias
    routing, for reproducible runs.
    ``stuck_after`` is the seconds without progress after which a partition with records in
    flight fails liveness (``/health``; :mod:`streamfn.health` says what counts).
    """

    def __init__(
        self,
        name: str = "streamfn",
        *,
        region: str = "us-east-1",
        account_id: str = "000000000000",
        max_threads: int = 64,
        state_dir: str | os.PathLike[str] | None = None,
        event_queue: EventQueue | None = None,
        async_time_scale: float = 1.0,
        async_max_in_flight: int = 256,
        async_shutdown_timeout: float = 30.0,
        async_queue_max_events: int = DEFAULT_MAX_EVENTS,
        async_queue_max_bytes: int = DEFAULT_MAX_BYTES,
        access_keys: MappingType[str, str] | Iterable[_access_keys.AccessKey] | None = None,
        routing_seed: int | None = None,
        stuck_after: float = DEFAULT_STUCK_AFTER,
    ) -> None:
        if not 0 < async_time_scale <= 1:
            raise ConfigError.out_of_range(
                "async_time_scale", async_time_scale, "a number in (0, 1]"
            )
        self.name = name
        self.region = region
        self.account_id = account_id
        self.functions: dict[str, Function] = {}  # name -> $LATEST
        self.versions: dict[str, Versions] = {}
        self.mappings: list[Mapping] = []
        self.health = Health(self.mappings, stuck_after)
        self.metrics = AppMetrics()
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.event_queue = event_queue
        self.async_time_scale = async_time_scale
        self.async_max_in_flight = async_max_in_flight
        self.async_shutdown_timeout = async_shutdown_timeout
        check_bounds(async_queue_max_events, async_queue_max_bytes, prefix="async_queue_")
        self.async_queue_max_events = async_queue_max_events
        self.async_queue_max_bytes = async_queue_max_bytes
        self.access_keys: dict[str, _access_keys.AccessKey] = _access_keys.collect(access_keys)
        self.rng = random.Random(routing_seed)
        self.ready = False
        self._invoker: AsyncInvoker | None = None
        self._executor = HandlerThreads(max_threads)
        self._concurrency: dict[str, tuple[Concurrency, bool]] = {}  # name -> (pool, explicit)
        self._queue: EventQueue | None = None
        self._add_gauges()
        self.metrics.add_mappings(self.mappings)

    @overload
    def function(self, name: H, /) -> H: ...

    @overload
    def function(self, name: str | None = None, **settings: Any) -> Callable[[H], H]: ...

    def function(self, name: str | H | None = None, **settings: Any) -> H | Callable[[H], H]:
        """Register a handler ``(event, context)`` as a function, invocable over the Invoke API.
        ``settings`` are :class:`~streamfn.config.FunctionConfig`'s fields, declared and checked
        there: ``timeout``, ``memory_size``, ``reserved_concurrency``, the async settings of
        PutFunctionEventInvokeConfig, ``url`` to opt in to a function URL, and ``version="3"`` to
        register the handler as published version 3 of ``name`` instead of ``$LATEST``. The
        handler is returned unchanged, so the module still works on Lambda. ``@app.function``
        without parentheses registers the handler with the default settings.

        Example::

            @app.function(timeout=10, on_failure=FileDestination("failed.jsonl"))
            def greet(event, context):
                return {"hello": event["name"]}
        """
        check_settings(settings, FUNCTION_SETTINGS, "@app.function")
        if callable(name):  # used bare: the handler itself came as ``name``
            self._add_function(name, None, settings, "@app.function")
            return name

        def register(handler: H) -> H:
            self._add_function(handler, name, settings, "@app.function")
            return handler

        return register

    def consume(
        self,
        source: Source | QueueSource,
        *,
        name: str | None = None,
        on_failure: Destination | None = None,
        aws: MappingType[str, Any] | None = None,
        **settings: Any,
    ) -> Callable[[H], H]:
        """Register a function and an event source mapping that feeds it. ``settings`` are the
        mapping's (:class:`~streamfn.config.MappingConfig`: Lambda's CreateEventSourceMapping
        fields in snake_case) and the function's, as :meth:`function` takes them; where both
        have a setting (``maximum_retry_attempts``, and ``on_failure``) it is the mapping's.
        ``aws=`` takes the mapping's CamelCase dict instead; a keyword given here overrides it.
        Its FunctionName, EventSourceArn and DestinationConfig are checked against the
        function, the source and ``on_failure`` (:mod:`streamfn.aws_mapping`).

        Example::

            @app.consume(source, batch_size=500, timeout=30, aws={"MaximumRetryAttempts": 3})
            def orders(batch, context):
                ...
        """
        check_settings(settings, MAPPING_SETTINGS | FUNCTION_SETTINGS, "@app.consume")
        if callable(source) and not isinstance(source, Source | QueueSource):
            raise ConfigError(  # used bare, as @app.consume: nothing would be registered
                f"@app.consume needs the source first: @app.consume(source, ...) above "
                f"{getattr(source, '__name__', 'the handler')!r}"
            )
        mapping = {k: v for k, v in settings.items() if k in MAPPING_SETTINGS}
        function = {k: v for k, v in settings.items() if k not in MAPPING_SETTINGS}
        esm = AwsMapping.parse(aws or {}, source)
        config = dataclasses.replace(esm.config, **mapping)
        if on_failure is None:  # an explicit on_failure= wins over DestinationConfig
            on_failure = esm.on_failure

        lambda_events = config.event_format == "lambda"

        def register(handler: H) -> H:
            if isinstance(handler, Command) and not lambda_events:
                raise ConfigError(
                    f"@app.consume: {handler!r} speaks the Runtime API, which carries JSON: "
                    "give the mapping event_format='lambda'"
                )
            registered = self._add_function(
                handler, name, function, "@app.consume", lambda_events=lambda_events
            )
            esm.check_function(registered.config)
            self.mappings.append(Mapping(registered, source, config, on_failure))
            return handler

        return register

    def _add_function(
        self,
        handler: Callable[..., Any],
        name: str | None,
        settings: MappingType[str, Any],
        where: str,
        *,
        lambda_events: bool = True,
    ) -> Function:
        """``lambda_events``: the handler receives Lambda's events (the Invoke API's, or a
        mapping's with ``event_format="lambda"``), which decides its default execution mode
        (:mod:`streamfn.execution.modes`)."""
        name = name or getattr(handler, "__name__", None)
        if isinstance(handler, Command) and name == "command":
            raise ConfigError(f"{where}: a Command has no name of its own: pass name=...")
        if not name:  # a functools.partial, an object with __call__
            raise ConfigError(f"{where}: {handler!r} has no __name__: pass name=...")
        _check_handler(handler, name, where)
        config = FunctionConfig(
            name=name,
            region=self.region,
            account_id=self.account_id,
            **settings,
        )
        execution = choose(handler, config.execution, lambda_events, name)
        return self._register(handler, dataclasses.replace(config, execution=execution))

    def _register(self, handler: Callable[..., Any], config: FunctionConfig) -> Function:
        versions = self.versions.setdefault(config.name, Versions(config.name))
        function = Function(
            handler,
            config,
            self._executor,
            concurrency=self._pool(config.name, config.reserved_concurrency),
            metrics=self.metrics,
        )
        versions.add(function)
        if config.version == LATEST:
            self.functions[config.name] = function
        return function

    def _pool(self, name: str, limit: int | None) -> Concurrency:
        """The concurrency pool of ``name``: reserved concurrency belongs to the function as a
        whole, so all its versions share one, and two registrations may not disagree on it."""
        pool, explicit = self._concurrency.get(name, (None, False))
        if pool is None:
            pool = Concurrency(limit)
        elif limit is not None and explicit and limit != pool.limit:
            raise ConfigError(
                f"reserved_concurrency of {name!r} is {pool.limit} on another version; it is "
                f"one setting for the whole function, not {limit}"
            )
        elif limit is not None:
            pool.set_limit(limit)
        self._concurrency[name] = (pool, explicit or limit is not None)
        return pool

    def publish_version(self, name: str) -> str:
        """Snapshot ``$LATEST`` of ``name`` (handler and settings) as the next numbered version,
        as PublishVersion does, and return its number."""
        versions = self.versions.get(name)
        if versions is None or versions.latest is None:
            raise ConfigError(f"cannot publish {name!r}: no $LATEST is registered")
        latest = versions.latest
        version = versions.next_version()
        self._register(latest.handler, dataclasses.replace(latest.config, version=version))
        return version

    def alias(
        self,
        function: str,
        name: str,
        *,
        version: str,
        additional_version_weights: MappingType[str, float] | None = None,
    ) -> Alias:
        """Point alias ``name`` of ``function`` at ``version``; with
        ``additional_version_weights={"2": 0.1}`` about one invocation in ten runs version 2
        instead (CreateAlias's RoutingConfig)."""
        versions = self.versions.get(function)
        if versions is None:
            raise ConfigError(f"cannot alias {function!r}: it is not registered")
        return versions.add_alias(name, version, additional_version_weights or {})

    def arn(self, name: str, qualifier: str | None = None) -> str:
        arn = f"arn:aws:lambda:{self.region}:{self.account_id}:function:{name}"
        return f"{arn}:{qualifier}" if qualifier is not None else arn

    def check(self, name: str, qualifier: str | None = None) -> None:
        """Raise FunctionNotFound unless ``name`` (with ``qualifier``) can be invoked; draws no
        routing decision. The message names ``$LATEST`` for an unqualified name, as AWS's
        does."""
        versions = self.versions.get(name)
        if versions is None or not versions.has(qualifier):
            raise FunctionNotFound(f"Function not found: {self.arn(name, qualifier or LATEST)}")

    def resolve(self, name: str, qualifier: str | None = None) -> Function:
        """The function version one invocation runs; an alias with routing weights draws its
        version here, per invocation, from the app's seeded generator."""
        if qualifier is None and (latest := self.functions.get(name)) is not None:
            return latest
        versions = self.versions.get(name)
        function = versions.resolve(qualifier, self.rng) if versions is not None else None
        if function is None:
            raise FunctionNotFound(f"Function not found: {self.arn(name, qualifier or LATEST)}")
        return function

    def pinned(self, name: str, qualifier: str | None = None) -> Function | None:
        """The version ``name`` (with ``qualifier``) always runs, so a caller may keep it; None
        for an alias that splits its traffic by weight, which :meth:`resolve` draws per call."""
        versions = self.versions.get(name)
        alias = versions.aliases.get(qualifier) if versions and qualifier else None
        if alias is not None and alias.additional_version_weights:
            return None
        return self.resolve(name, qualifier)

    def get_function(self, name: str) -> Function:
        return self.resolve(name)

    async def invoke(
        self,
        name: str,
        event: Any,
        *,
        client_context: ClientContext | None = None,
        request_id: str | None = None,
        qualifier: str | None = None,
    ) -> InvocationResult:
        """Invoke a function synchronously, waiting for a concurrency slot."""
        return await self.resolve(name, qualifier).invoke(
            event,
            client_context=client_context,
            request_id=request_id,
            invoked_arn=self.arn(name, qualifier) if qualifier else None,
        )

    @property
    def invoker(self) -> AsyncInvoker:
        """The running asynchronous invoker; only inside :meth:`running`."""
        if self._invoker is None:
            raise InvocationError(
                "asynchronous invocation is not running: serve the app with App.running(), "
                "App.serve() or streamfn run"
            )
        return self._invoker

    async def invoke_async(self, name: str, event: Any, *, qualifier: str | None = None) -> str:
        """Queue an ``Event`` invocation (durably, given a state directory) and return its
        request id; it runs with retries and destinations, like an HTTP ``Event`` invoke."""
        self.check(name, qualifier)
        request_id = str(uuid.uuid4())
        await self.invoker.submit(name, qualifier, orjson.dumps(event), request_id)
        return request_id

    def _all_versions(self) -> list[Function]:
        return [f for v in self.versions.values() for f in (v.latest, *v.published.values()) if f]

    def _bind(self) -> None:
        """Check what only the whole app can check, and connect function destinations."""
        for name, versions in self.versions.items():
            if versions.latest is None:
                raise ConfigError(
                    f"function {name!r} has versions but no $LATEST: register one handler "
                    "for it without version="
                )
        for function in self._all_versions():
            self._check_url(function)
        for _, destination in self._destinations():
            if isinstance(destination, FunctionDestination):
                destination.bind(self)

    def _destinations(self) -> list[tuple[str, Destination]]:
        """Every destination of the app's mappings and functions, with the role it plays."""
        found: list[tuple[str, Destination]] = []
        for mapping in self.mappings:
            if mapping.on_failure is not None:
                found.append((f"on_failure of mapping {mapping.describe()!r}", mapping.on_failure))
        for function in self._all_versions():
            for role in ("on_success", "on_failure"):
                destination = getattr(function.config, role)
                if destination is not None:
                    found.append((f"{role} of function {function.name!r}", destination))
        return found

    async def _check_destinations(self) -> None:
        """Run every destination's start-up check once, before anything runs, so a missing
        queue or topic stops the app now, not when a record first needs it."""
        checked: set[int] = set()
        for role, destination in self._destinations():
            if id(destination) not in checked:
                checked.add(id(destination))
                await check_destination(destination, role)

    def _check_url(self, function: Function) -> None:
        url = function.config.url
        if url is None:
            return
        if url.qualifier is not None and url.qualifier not in self.versions[function.name].aliases:
            raise ConfigError(
                f"the URL of {function.name!r} targets alias {url.qualifier!r}, which is not "
                "defined"
            )
        if url.auth_type == "AWS_IAM" and not self.access_keys:
            raise ConfigError(
                f"the URL of {function.name!r} uses AWS_IAM auth but App(access_keys=...) is empty"
            )

    def _event_queue(self) -> EventQueue:
        if self.event_queue is not None:
            return self.event_queue
        if self.state_dir is not None:
            return SQLiteEventQueue(
                self.state_dir,
                max_events=self.async_queue_max_events,
                max_bytes=self.async_queue_max_bytes,
            )
        return MemoryEventQueue(
            max_events=self.async_queue_max_events, max_bytes=self.async_queue_max_bytes
        )

    def _add_gauges(self) -> None:
        def concurrent() -> list[tuple[tuple[str, ...], float]]:
            return [((n,), float(c.running)) for n, (c, _) in self._concurrency.items()]

        def depth() -> list[tuple[tuple[str, ...], float]]:
            return [((), float(self._queue.depth() if self._queue else 0))]

        def age() -> list[tuple[tuple[str, ...], float]]:
            oldest = self._queue.oldest() if self._queue else None
            return [((), 0.0 if oldest is None else max(0.0, time.time() - oldest))]

        self.metrics.add_gauge(
            "streamfn_concurrent_executions",
            "Invocations running now, by function (all versions).",
            ("function",),
            concurrent,
        )

        def environments() -> list[tuple[tuple[str, ...], float]]:
            return [
                ((f.name, f.version), float(f.environments.environments))
                for f in self._all_versions()
                if f.environments is not None
            ]

        self.metrics.add_gauge(
            "streamfn_execution_environments",
            "Execution environments alive now (warm, busy, starting or being killed), by "
            "function version.",
            ("function", "version"),
            environments,
        )

        def pool_stats() -> Iterable[tuple[tuple[str, ...], PoolStats]]:
            for f in self._all_versions():
                if f.environments is not None:
                    yield (f.name, f.version), f.environments.stats

        self.metrics.add_counter(
            "streamfn_execution_cold_starts_total",
            "Execution environments started (each a cold start: process start and init), by "
            "function version.",
            ("function", "version"),
            lambda: [(labels, float(stats.cold_starts)) for labels, stats in pool_stats()],
        )
        self.metrics.add_counter(
            "streamfn_execution_replacements_total",
            "Execution environments destroyed by a failure, by reason: timeout, crash (a "
            "signal or non-zero exit), out_of_memory, init_error.",
            ("function", "version", "reason"),
            lambda: [
                ((*labels, reason), float(getattr(stats, attribute)))
                for labels, stats in pool_stats()
                for reason, attribute in _REPLACEMENT_REASONS
            ],
        )
        self.metrics.add_gauge(
            "streamfn_handler_threads_outlived",
            "Worker threads still running a def handler whose invocation timed out (a thread "
            "cannot be stopped; each keeps its function's concurrency slot).",
            (),
            lambda: [((), float(self._executor.written_off))],
        )
        self.metrics.add_gauge(
            "streamfn_async_queue_depth",
            "Asynchronous invocations queued or running.",
            (),
            depth,
        )
        self.metrics.add_gauge(
            "streamfn_async_oldest_event_age_seconds",
            "Age of the oldest asynchronous invocation still queued (0 when empty).",
            (),
            age,
        )

    @contextlib.asynccontextmanager
    async def running(self, *servers: Callable[[App, asyncio.Event], Any]) -> AsyncIterator[App]:
        """Run every mapping, the asynchronous invoker and the given servers for the duration of
        the block; on exit, stop the servers, drain partitions and commit, then give in-flight
        asynchronous invocations their grace period. A server is
        ``async def serve(app, stop_event)``. Whether to trace is decided here, before any
        invocation (:func:`streamfn.tracing.start`)."""
        tracing.start()
        self._bind()
        await self._check_destinations()
        self._queue = self._event_queue()
        invoker = AsyncInvoker(
            self,
            self._queue,
            self.metrics,
            time_scale=self.async_time_scale,
            max_in_flight=self.async_max_in_flight,
            shutdown_timeout=self.async_shutdown_timeout,
        )
        stop = asyncio.Event()
        async with contextlib.AsyncExitStack() as cleanup:
            cleanup.push_async_callback(self._close_environments)
            await cleanup.enter_async_context(invoker.running())
            self._invoker = invoker
            try:
                async with asyncio.TaskGroup() as tg:
                    for mapping in self.mappings:
                        tg.create_task(mapping.run())
                    for serve in servers:
                        tg.create_task(serve(self, stop))
                    self.ready = True
                    try:
                        yield self
                    finally:
                        self.ready = False
                        stop.set()
                        for mapping in self.mappings:
                            mapping.stop()
            finally:
                self._invoker = None

    async def _close_environments(self) -> None:
        """Kill every warm execution environment: nothing of the app outlives its run."""
        for function in self._all_versions():
            if function.environments is not None:
                await function.environments.close()

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
