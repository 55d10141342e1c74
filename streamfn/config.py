"""Typed, validated settings of functions and event source mappings.

Names are Lambda's CreateFunction / CreateEventSourceMapping fields in snake_case; every value is
checked once, at construction, with a message naming the field, the value and the allowed range.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .destinations import Destination
from .errors import ConfigError

REPORT_BATCH_ITEM_FAILURES = "ReportBatchItemFailures"
DEFAULT_PAYLOAD_LIMIT = 6 * 1024 * 1024  # bytes; AWS's invoke payload cap (6,291,456)
#: Execution environments of a function without reserved concurrency: each is a process of
#: ~30 MB, and a worker's partitions and pollers rarely need more at once; more invocations wait.
DEFAULT_MAX_ENVIRONMENTS = 8

EventFormat = Literal["native", "lambda"]
StartingPosition = Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"]
AuthType = Literal["NONE", "AWS_IAM"]
#: Where a function's invocations run (README, "Execution modes"): ``loop`` (an ``async def``
#: handler as a task of the worker's event loop), ``thread`` (a ``def`` handler in a worker
#: thread of the worker process), ``environment`` (a Lambda execution environment: a worker
#: process of its own, one invocation at a time, killed and replaced on timeout or crash).
Execution = Literal["loop", "thread", "environment"]
EXECUTIONS: tuple[Execution, ...] = ("loop", "thread", "environment")

_CORS_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "*"})
# An alias name (CreateAlias's Name): letters, digits, '-' and '_', not all digits.
_ALIAS = re.compile(r"(?!^[0-9]+$)[a-zA-Z0-9_-]{1,128}")


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError.out_of_range(name, value, f"an integer from {low} to {high}")


def _check_number(name: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError.out_of_range(name, value, f"a number from {low:g} to {high:g}")


def _strings(name: str, value: Sequence[str], limit: int) -> tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError.out_of_range(name, value, "a list of non-empty strings")
    if len(value) > limit:
        raise ConfigError.out_of_range(name, value, f"at most {limit} entries")
    return tuple(value)


def _as_tuple(value: Sequence[str] | str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def check_alias_name(name: str) -> None:
    if not isinstance(name, str) or _ALIAS.fullmatch(name) is None:
        raise ConfigError.out_of_range(
            "alias", name, "1-128 letters, digits, '-' and '_', not all digits"
        )


@dataclass(frozen=True, slots=True)
class Cors:
    """A function URL's CORS settings (the Lambda ``Cors`` object). Lists become tuples, so the
    object stays hashable; ``max_age`` 0 sends no ``Access-Control-Max-Age``."""

    allow_origins: Sequence[str] = ()
    allow_methods: Sequence[str] = ()
    allow_headers: Sequence[str] = ()
    expose_headers: Sequence[str] = ()
    allow_credentials: bool = False
    max_age: int = 0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "allow_origins", _strings("allow_origins", self.allow_origins, 100))
        methods = _strings("allow_methods", self.allow_methods, 6)
        if not set(m.upper() for m in methods) <= _CORS_METHODS:
            raise ConfigError.out_of_range(
                "allow_methods", list(methods), f"some of {', '.join(sorted(_CORS_METHODS))}"
            )
        set_(self, "allow_methods", tuple(m.upper() for m in methods))
        headers = _strings("allow_headers", self.allow_headers, 100)
        set_(self, "allow_headers", tuple(h.lower() for h in headers))
        expose = _strings("expose_headers", self.expose_headers, 100)
        set_(self, "expose_headers", tuple(h.lower() for h in expose))
        if not isinstance(self.allow_credentials, bool):
            raise ConfigError.out_of_range("allow_credentials", self.allow_credentials, "a bool")
        _check_int("max_age", self.max_age, 0, 86_400)


@dataclass(frozen=True, slots=True)
class FunctionUrl:
    """A function URL (CreateFunctionUrlConfig): its auth type, CORS, and the alias it targets
    (``None`` = ``$LATEST``; numbered versions are not allowed, as on Lambda)."""

    auth_type: AuthType = "NONE"
    cors: Cors | None = None
    qualifier: str | None = None

    def __post_init__(self) -> None:
        if self.auth_type not in ("NONE", "AWS_IAM"):
            raise ConfigError.out_of_range("auth_type", self.auth_type, "'NONE' or 'AWS_IAM'")
        if self.cors is not None and not isinstance(self.cors, Cors):
            raise ConfigError.out_of_range("cors", self.cors, "a streamfn.config.Cors")
        if self.qualifier is not None:
            check_alias_name(self.qualifier)


@dataclass(frozen=True, slots=True)
class FunctionConfig:
    """A function's settings: CreateFunction's Timeout, MemorySize and reserved concurrency, the
    asynchronous invocation config (PutFunctionEventInvokeConfig) and its function URL."""

    name: str
    timeout: float = 3.0
    memory_size: int = 128
    reserved_concurrency: int | None = None
    version: str = "$LATEST"
    region: str = "us-east-1"
    account_id: str = "000000000000"
    maximum_retry_attempts: int = 2
    maximum_event_age: int = 21_600
    on_success: Destination | None = None
    on_failure: Destination | None = None
    dead_letter: bool = True
    url: FunctionUrl | None = None
    #: None: chosen from the handler when it is registered (:mod:`streamfn.execution.modes`).
    execution: Execution | None = None
    #: Execution environments the function may keep at once (``execution="environment"``);
    #: None: its reserved concurrency, else :data:`DEFAULT_MAX_ENVIRONMENTS`.
    max_environments: int | None = None

    def __post_init__(self) -> None:
        if (
            not self.name
            or len(self.name) > 64
            or not all(c.isalnum() or c in "-_" for c in self.name)
        ):
            raise ConfigError.out_of_range(
                "name", self.name, "1-64 characters of letters, digits, '-' and '_'"
            )
        _check_number("timeout", self.timeout, 0.001, 900)
        _check_int("memory_size", self.memory_size, 128, 10240)
        if self.reserved_concurrency is not None:
            _check_int("reserved_concurrency", self.reserved_concurrency, 0, 1_000_000)
        if self.version != "$LATEST" and not (self.version.isdigit() and self.version[0] != "0"):
            raise ConfigError.out_of_range("version", self.version, "'$LATEST' or 1, 2, 3, ...")
        _check_int("maximum_retry_attempts", self.maximum_retry_attempts, 0, 2)
        _check_int("maximum_event_age", self.maximum_event_age, 60, 21_600)
        for name in ("on_success", "on_failure"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Destination):
                raise ConfigError.out_of_range(name, value, "a Destination or None")
        if self.url is not None and not isinstance(self.url, FunctionUrl):
            raise ConfigError.out_of_range("url", self.url, "a streamfn.config.FunctionUrl")
        if self.execution is not None and self.execution not in EXECUTIONS:
            raise ConfigError.out_of_range(
                "execution", self.execution, " or ".join(map(repr, EXECUTIONS))
            )
        if self.max_environments is not None:
            _check_int("max_environments", self.max_environments, 1, 1024)

    @property
    def environments(self) -> int:
        """How many execution environments the function may run at once: as many as its
        reserved concurrency allows (at least one, so 0 still throttles rather than hangs),
        else the documented default."""
        if self.max_environments is not None:
            return self.max_environments
        if self.reserved_concurrency is not None:
            return max(1, min(self.reserved_concurrency, 1024))
        return DEFAULT_MAX_ENVIRONMENTS

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{self.name}"


@dataclass(frozen=True, slots=True)
class MappingConfig:
    """An event source mapping's settings. ``None`` means "the source's default";
    ``function_response_types`` takes a list, a tuple or the one type name, and keeps a tuple."""

    batch_size: int | None = None
    maximum_batching_window: float | None = None
    parallelization_factor: int = 1
    bisect_batch_on_function_error: bool = False
    maximum_retry_attempts: int = -1
    maximum_record_age: int = -1
    function_response_types: Sequence[str] = ()
    filter_criteria: Any = None
    tumbling_window: int = 0
    maximum_concurrency: int | None = None
    starting_position: StartingPosition | None = None
    starting_position_timestamp: float | None = None
    event_format: EventFormat = "native"
    enabled: bool = True
    payload_limit: int = DEFAULT_PAYLOAD_LIMIT
    retry_base_delay: float = 1.0
    retry_max_delay: float = 60.0
    shutdown_timeout: float = 30.0
    #: Stream sources: records settled but not yet committed that a partition may hold before
    #: its next invocation waits for the commit; bounds the records run again after a crash
    #: (None: the batch size; -1: no bound, the commit trails as far as it likes).
    max_uncommitted_records: int | None = None
    #: Filled in by the engine from the mapped function, so a source can check its own
    #: timeouts against it (SQS: the queue's visibility timeout must not be shorter).
    function_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.batch_size is not None:
            _check_int("batch_size", self.batch_size, 1, 10_000)
        if self.maximum_batching_window is not None:
            _check_number("maximum_batching_window", self.maximum_batching_window, 0, 300)
        _check_int("parallelization_factor", self.parallelization_factor, 1, 10)
        _check_int("maximum_retry_attempts", self.maximum_retry_attempts, -1, 10_000)
        if self.maximum_record_age != -1:
            _check_int("maximum_record_age", self.maximum_record_age, 60, 604_800)
        response_types = _as_tuple(self.function_response_types)
        object.__setattr__(self, "function_response_types", response_types)
        bad = set(response_types) - {REPORT_BATCH_ITEM_FAILURES}
        if bad or len(response_types) > 1:
            raise ConfigError.out_of_range(
                "function_response_types",
                list(response_types),
                f'empty or ["{REPORT_BATCH_ITEM_FAILURES}"]',
            )
        _check_int("tumbling_window", self.tumbling_window, 0, 900)
        if self.maximum_concurrency is not None:
            _check_int("maximum_concurrency", self.maximum_concurrency, 2, 1000)
        if self.starting_position not in (None, "TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"):
            raise ConfigError.out_of_range(
                "starting_position", self.starting_position, "TRIM_HORIZON, LATEST or AT_TIMESTAMP"
            )
        if self.starting_position == "AT_TIMESTAMP" and self.starting_position_timestamp is None:
            raise ConfigError(
                "starting_position='AT_TIMESTAMP' needs starting_position_timestamp (Unix seconds)"
            )
        if self.event_format not in ("native", "lambda"):
            raise ConfigError.out_of_range(
                "event_format", self.event_format, "'native' or 'lambda'"
            )
        _check_int("payload_limit", self.payload_limit, 1, 1 << 40)
        # Not 0: every retry of a failing batch would follow at once, a tight loop.
        _check_number("retry_base_delay", self.retry_base_delay, 0.001, 3600)
        _check_number("retry_max_delay", self.retry_max_delay, self.retry_base_delay, 86_400)
        _check_number("shutdown_timeout", self.shutdown_timeout, 0, 3600)
        if self.max_uncommitted_records not in (None, -1):
            _check_int("max_uncommitted_records", self.max_uncommitted_records, 1, 1_000_000)

    @property
    def report_batch_item_failures(self) -> bool:
        return REPORT_BATCH_ITEM_FAILURES in self.function_response_types

    def resolved(self, batch_size: int, maximum_batching_window: float) -> MappingConfig:
        """This config with the source's defaults filled in."""
        size = self.batch_size if self.batch_size is not None else batch_size
        return dataclasses.replace(
            self,
            batch_size=size,
            max_uncommitted_records=(
                self.max_uncommitted_records if self.max_uncommitted_records is not None else size
            ),
            maximum_batching_window=(
                self.maximum_batching_window
                if self.maximum_batching_window is not None
                else maximum_batching_window
            ),
        )

    @classmethod
    def from_aws(cls, data: Mapping[str, Any]) -> MappingConfig:
        """Build from a CreateEventSourceMapping-shaped dict (CamelCase), e.g. copied from AWS.
        No field is dropped unnoticed: a field is a setting, or bookkeeping that changes
        nothing streamfn does (:data:`_AWS_BOOKKEEPING`, checked for shape), or it is refused
        by name. Refused are the fields streamfn takes from elsewhere or does not offer, and
        those naming the function, the source and the on-failure destination
        (:data:`AWS_CONSUME_FIELDS`), which only ``App.consume(aws=...)`` can check against
        what it is given (:mod:`streamfn.aws_mapping`)."""
        unknown = set(data) - set(_AWS_FIELDS) - _AWS_BOOKKEEPING.keys() - _AWS_REFUSED.keys()
        if unknown:
            raise ConfigError(
                f"unknown event source mapping field(s): {', '.join(sorted(unknown))}"
            )
        kwargs: dict[str, Any] = {}
        for aws_name, value in data.items():
            if aws_name in _AWS_REFUSED:
                raise ConfigError(
                    f"event source mapping field {aws_name}: {_AWS_REFUSED[aws_name]}"
                )
            if aws_name in _AWS_BOOKKEEPING:
                if not _AWS_BOOKKEEPING[aws_name](value):
                    raise ConfigError(f"event source mapping field {aws_name}={value!r} is invalid")
                continue
            name = _AWS_FIELDS[aws_name]
            if aws_name == "ScalingConfig":
                value = value.get("MaximumConcurrency") if isinstance(value, Mapping) else None
            elif aws_name == "StartingPositionTimestamp" and hasattr(value, "timestamp"):
                value = value.timestamp()
            kwargs[name] = value
        return cls(**kwargs)


_AWS_FIELDS: dict[str, str] = {
    "BatchSize": "batch_size",
    "MaximumBatchingWindowInSeconds": "maximum_batching_window",
    "ParallelizationFactor": "parallelization_factor",
    "BisectBatchOnFunctionError": "bisect_batch_on_function_error",
    "MaximumRetryAttempts": "maximum_retry_attempts",
    "MaximumRecordAgeInSeconds": "maximum_record_age",
    "FunctionResponseTypes": "function_response_types",
    "FilterCriteria": "filter_criteria",
    "TumblingWindowInSeconds": "tumbling_window",
    "ScalingConfig": "maximum_concurrency",
    "StartingPosition": "starting_position",
    "StartingPositionTimestamp": "starting_position_timestamp",
    "Enabled": "enabled",
}
#: Fields that name what ``App.consume`` is given directly: checked there against the function
#: and the source, or (DestinationConfig) turned into the mapping's on_failure destination.
AWS_CONSUME_FIELDS = frozenset(
    {"FunctionName", "EventSourceArn", "DestinationConfig", "SourceAccessConfigurations"}
)
_METRICS = frozenset({"EventCount", "ErrorCount", "KafkaMetrics"})
#: AWS bookkeeping that changes nothing streamfn does, accepted when well formed: resource tags;
#: the KMS key AWS encrypts the stored filter criteria with (streamfn stores them nowhere);
#: the mapping metrics AWS emits on request (streamfn's are always on, at /metrics).
_AWS_BOOKKEEPING: dict[str, Callable[[Any], bool]] = {
    "Tags": lambda v: isinstance(v, Mapping) and all(isinstance(x, str) for x in (*v, *v.values())),
    "KMSKeyArn": lambda v: isinstance(v, str),
    "MetricsConfig": lambda v: (
        isinstance(v, Mapping) and set(v) <= {"Metrics"} and set(v.get("Metrics") or ()) <= _METRICS
    ),
}
_KAFKA_SOURCE = "set it on the KafkaSource"
#: Fields that would change what streamfn does but are set elsewhere or not offered.
_AWS_REFUSED = {
    **dict.fromkeys(
        AWS_CONSUME_FIELDS,
        "it names what App.consume(source, aws=...) is given, "
        "which checks it; MappingConfig holds the mapping's settings only",
    ),
    "Topics": f"the topics to read; {_KAFKA_SOURCE} (topic=)",
    "SelfManagedEventSource": f"the brokers to read; {_KAFKA_SOURCE} (bootstrap_servers=)",
    "AmazonManagedKafkaEventSourceConfig": f"the consumer group; {_KAFKA_SOURCE} (group_id=)",
    "SelfManagedKafkaEventSourceConfig": f"the consumer group; {_KAFKA_SOURCE} (group_id=)",
    "ProvisionedPollerConfig": (
        "streamfn has no provisioned mode: it polls every partition it owns (Kafka, Kinesis, "
        "DynamoDB) or up to maximum_concurrency pollers (SQS)"
    ),
    "Queues": "the queue to read; set it on the source (RabbitMQSource(queue=...), "
    "ActiveMQSource(queue=...))",
}


def _field_names(cls: type[Any]) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


#: The keywords of ``@app.function(...)``: FunctionConfig's fields, but for those the app fills
#: in (the name is the decorator's own argument, or the handler's name).
FUNCTION_SETTINGS = _field_names(FunctionConfig) - {"name", "region", "account_id"}
#: The mapping keywords of ``@app.consume(...)``: MappingConfig's fields, but for the one the
#: engine fills in from the mapped function.
MAPPING_SETTINGS = _field_names(MappingConfig) - {"function_timeout"}


def check_settings(given: Iterable[str], allowed: Collection[str], where: str) -> None:
    """Refuse a keyword that names no setting, suggesting the closest one: settings arrive as
    ``**settings`` so that each is declared once, in its dataclass, and a typo must fail here
    rather than pass as a setting left at its default."""
    for name in given:
        if name not in allowed:
            close = difflib.get_close_matches(name, sorted(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown setting {name!r}{hint}")
