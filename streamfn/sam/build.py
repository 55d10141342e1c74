"""A plan made into a running app: functions, versions, aliases, URLs, async settings,
mappings with their sources, and the schedules as a server for :meth:`App.running`.

The order is the one AWS deploys in: ``$LATEST`` of each function, its versions (snapshots of
it, each with the async settings of the EventInvokeConfig that targets it or an alias of it),
then aliases, then mappings on whichever version or alias they name.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..app import App
from ..aws_mapping import AwsMapping
from ..config import Cors, FunctionUrl
from ..destinations import Destination, FunctionDestination
from ..errors import ConfigError
from ..mapping import Mapping as EventSourceMapping
from ..source import QueueSource, Source
from .handlers import apply_environment, check_modules, environment, load_handler, unsupported
from .load import LoadOptions, load_template
from .plan import AliasPlan, InvokeConfigPlan, MappingPlan, Plan, UrlPlan
from .planner import build_plan
from .schedule import Clock, Scheduler, timers_of


def plan_template(path: str | Path, options: LoadOptions | None = None) -> Plan:
    """Load ``path`` and plan it: what ``streamfn validate`` prints and ``run`` runs."""
    template = load_template(path, options)
    try:
        plan = build_plan(template)
        for function in plan.functions.values():
            reason = unsupported(function)
            if reason is not None:
                plan.refuse(function.logical_id, "Runtime", reason)
    except ConfigError as exc:
        raise ConfigError(f"{template.path}: {exc}") from exc
    return plan


@dataclass
class Built:
    """The app a template makes, the servers to run with it (its schedules) and what was
    skipped."""

    app: App
    servers: list[Callable[..., Any]] = field(default_factory=list)
    scheduler: Scheduler | None = None
    skipped: list[str] = field(default_factory=list)
    environment_overrides: dict[str, str] = field(default_factory=dict)


def build_app(
    plan: Plan,
    *,
    skip_unsupported: bool = False,
    state_dir: str | os.PathLike[str] | None = None,
    clock: Clock | None = None,
    app_options: Mapping[str, Any] | None = None,
    secrets: Mapping[str, Mapping[str, Any]] | None = None,
) -> Built:
    """The App of ``plan``. A plan with unsupported parts is refused (one line, the first of
    them, and how many) unless ``skip_unsupported``; then functions with an unsupported
    runtime or package are left out with everything that targets them. ``secrets`` are the
    secrets the MQ mappings' BASIC_AUTH names (ARN -> JSON), as
    :func:`streamfn.sam.prepare.read_secrets` reads them."""
    path = plan.template.path
    check_supported(plan, skip_unsupported=skip_unsupported)
    try:
        return _build(plan, state_dir, clock, dict(app_options or {}), secrets or {})
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(
            message if message.startswith(str(path)) else f"{path}: {message}"
        ) from exc


def check_supported(plan: Plan, *, skip_unsupported: bool) -> None:
    """Refuse a plan with unsupported parts (one line: the first of them, and how many),
    unless told to skip them."""
    if plan.unsupported and not skip_unsupported:
        count = len(plan.unsupported)
        more = f" (and {count - 1} more)" if count > 1 else ""
        raise ConfigError(
            f"{plan.template.path}: Resources.{plan.unsupported[0]}{more}: streamfn validate "
            "lists them; pass --skip-unsupported to run the rest"
        )


def _build(
    plan: Plan,
    state_dir: Any,
    clock: Clock | None,
    app_options: dict[str, Any],
    secrets: Mapping[str, Mapping[str, Any]],
) -> Built:
    options = plan.template.options
    skipped_ids = {n.resource for n in plan.unsupported if n.part in ("Runtime", "PackageType")}
    functions = {k: f for k, f in plan.functions.items() if f.logical_id not in skipped_ids}
    check_modules(functions)
    worker_env = dict(os.environ)
    to_set, overridden = environment(functions, worker_env)
    app = App(
        options.stack_name,
        region=options.region,
        account_id=options.account_id,
        state_dir=state_dir,
        **app_options,
    )
    built = Built(app, environment_overrides=overridden)
    built.skipped = sorted(f.name for f in plan.functions.values() if f.logical_id in skipped_ids)
    apply_environment(to_set)
    handlers = {name: load_handler(function, worker_env) for name, function in functions.items()}
    urls = {u.function: u for u in plan.urls}
    configs = _invoke_configs(plan, options.account_id)
    for name, function in functions.items():
        base = {
            "timeout": function.timeout,
            "memory_size": function.memory_size,
            "reserved_concurrency": function.reserved_concurrency,
        }
        url = urls.get(name)
        latest = {**base, **configs.get((name, "$LATEST"), {})}
        if url is not None:
            latest["url"] = _function_url(url)
        app.function(name, **latest)(handlers[name])
        for version in sorted(
            (v for v in plan.versions if v.function == name), key=lambda v: int(v.number)
        ):
            settings = {**base, **configs.get((name, version.number), {})}
            app.function(name, version=version.number, **settings)(handlers[name])
    for alias in plan.aliases:
        if alias.function in functions:
            _alias(app, alias)
    for mapping in plan.mappings:
        if mapping.function in functions:
            _mapping(app, mapping, state_dir, secrets)
    schedules = [s for s in plan.schedules if s.function in functions]
    if schedules:
        timers = timers_of(schedules, plan.template.resources.arn)
        built.scheduler = Scheduler(timers, clock)
        built.servers.append(built.scheduler)
    return built


def _alias(app: App, alias: AliasPlan) -> None:
    where = f"Resources.{alias.logical_id}.Properties"
    try:
        app.alias(
            alias.function,
            alias.name,
            version=alias.version,
            additional_version_weights=alias.weights,
        )
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _function_url(url: UrlPlan) -> FunctionUrl:
    where = f"Resources.{url.logical_id}.Properties"
    fields = {
        "AllowOrigins": "allow_origins",
        "AllowMethods": "allow_methods",
        "AllowHeaders": "allow_headers",
        "ExposeHeaders": "expose_headers",
        "AllowCredentials": "allow_credentials",
        "MaxAge": "max_age",
    }
    cors = None
    if url.cors is not None:
        unknown = set(url.cors) - set(fields)
        if unknown:
            raise ConfigError(f"{where}.Cors.{sorted(unknown)[0]}: not a Cors field")
        values = {fields[k]: v for k, v in url.cors.items()}
        if "max_age" in values:
            values["max_age"] = int(values["max_age"])
        if isinstance(values.get("allow_credentials"), str):
            values["allow_credentials"] = values["allow_credentials"].lower() == "true"
        try:
            cors = Cors(**values)
        except ConfigError as exc:
            raise ConfigError(f"{where}.Cors: {exc}") from exc
    qualifier = url.qualifier if url.qualifier not in (None, "$LATEST") else None
    try:
        return FunctionUrl(auth_type=url.auth_type, cors=cors, qualifier=qualifier)  # type: ignore[arg-type]
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _invoke_configs(plan: Plan, account_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Async settings by (function, version): an EventInvokeConfig on an alias applies to the
    versions the alias routes to; two configs for one version must agree."""
    aliases = {(a.function, a.name): a for a in plan.aliases}
    by_version: dict[tuple[str, str], tuple[dict[str, Any], InvokeConfigPlan]] = {}
    for config in plan.invoke_configs:
        settings = _async_settings(config, account_id)
        alias = aliases.get((config.function, config.qualifier))
        versions = [config.qualifier] if alias is None else [alias.version, *alias.weights]
        for version in versions:
            key = (config.function, version)
            if key in by_version and by_version[key][0] != settings:
                other = by_version[key][1].logical_id
                raise ConfigError(
                    f"Resources.{config.logical_id}: version {version} of "
                    f"{config.function!r} also gets the EventInvokeConfig {other}, which "
                    "differs; streamfn keeps async settings per version"
                )
            by_version[key] = (settings, config)
    return {key: settings for key, (settings, _) in by_version.items()}


def _async_settings(config: InvokeConfigPlan, account_id: str) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    if config.maximum_retry_attempts is not None:
        settings["maximum_retry_attempts"] = config.maximum_retry_attempts
    if config.maximum_event_age is not None:
        settings["maximum_event_age"] = config.maximum_event_age
    for role, arn in (("on_success", config.on_success), ("on_failure", config.on_failure)):
        if arn is not None:
            settings[role] = _async_destination(arn, account_id)
    return settings


def _async_destination(arn: str, account_id: str) -> Destination:
    """A function (by name: the plan refused qualified ARNs) or an SQS queue: by name in the
    run's own account, so the client finds it where it points; by ARN in another account."""
    parts = arn.split(":")
    if parts[2] == "lambda":
        return FunctionDestination(parts[6])
    from streamfn.connectors.sqs import SQSDestination  # the aws extra

    return SQSDestination(parts[5] if parts[4] == account_id else arn, region_name=parts[3])


def _mapping(
    app: App, mapping: MappingPlan, state_dir: Any, secrets: Mapping[str, Mapping[str, Any]]
) -> None:
    where = f"Resources.{mapping.logical_id}.Properties"
    try:
        source = _source(mapping, state_dir, secrets)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    qualifier = mapping.qualifier  # never a weighted alias: the plan refuses those
    function = app.resolve(mapping.function, qualifier)
    try:
        esm = AwsMapping.parse(mapping.settings, source)
        # a template's handlers are Lambda handlers: they get Lambda's event for the source
        config = dataclasses.replace(esm.config, event_format="lambda")
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    app.mappings.append(EventSourceMapping(function, source, config, esm.on_failure))


def _source(
    mapping: MappingPlan, state_dir: Any, secrets: Mapping[str, Mapping[str, Any]]
) -> Source | QueueSource:
    kind, args = mapping.kind, dict(mapping.source)
    if kind in ("rabbitmq", "activemq"):
        return _mq_source(kind, args, secrets)
    if kind == "sqs":
        from streamfn.connectors.sqs import SQSSource

        return SQSSource(args.pop("queue"), **args)
    if kind in ("kinesis", "dynamodb"):
        from streamfn.connectors.kinesis import DynamoDBStreamSource, KinesisSource

        cls = KinesisSource if kind == "kinesis" else DynamoDBStreamSource
        directory = Path(state_dir or ".streamfn") / "leases" / mapping.logical_id
        return cls(args.pop("stream"), state_dir=directory, **args)
    from streamfn.connectors.kafka import KafkaSource

    return KafkaSource(
        args["topic"],
        bootstrap_servers=args["bootstrap_servers"],
        group_id=args["group_id"],
        cluster_arn=args["cluster_arn"],
    )


def _mq_source(
    kind: str, args: dict[str, Any], secrets: Mapping[str, Mapping[str, Any]]
) -> Source | QueueSource:
    """An Amazon MQ mapping's source, with the user and password of its BASIC_AUTH secret."""
    secret = args["secret"]
    if secret not in secrets:
        raise ConfigError(
            f"SourceAccessConfigurations: BASIC_AUTH secret {secret} was not read "
            "(build_app(plan, secrets=await read_secrets(plan)))"
        )
    if kind == "rabbitmq":
        from streamfn.connectors.rabbitmq import RabbitMQAccess, RabbitMQSource

        access = RabbitMQAccess.from_aws(args["access"], secrets)
        return RabbitMQSource(
            args["queue"], args["url"], access=access, event_source_arn=args["broker_arn"]
        )
    from streamfn.connectors.activemq import ActiveMQSource

    username, password = (secrets[secret].get(k) for k in ("username", "password"))
    if not (isinstance(username, str) and username and isinstance(password, str) and password):
        raise ConfigError(f"secret {secret} (BASIC_AUTH) needs a 'username' and a 'password'")
    return ActiveMQSource(
        args["queue"],
        host=args["host"],
        port=args["port"],
        username=username,
        password=password,
        broker_arn=args["broker_arn"],
    )
