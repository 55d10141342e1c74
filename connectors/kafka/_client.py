"""What the Kafka source, destination and event queue share: checking the connection and
client options once, starting an aiokafka client with retry, keeping a consumer in its group,
and Lambda's partition ids.

Internal: the public names of the package are in :mod:`streamfn.connectors.kafka`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import re
import ssl
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from streamfn.backoff import retry_delay
from streamfn.errors import ConfigError, SourceError, SourceUnreachable

from .._retrylog import RetryLog

log = logging.getLogger("streamfn.kafka")

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
GROUP_ID = re.compile(r"[ a-zA-Z0-9\-/*:_+=.@]{1,200}")  # AWS's ConsumerGroupId pattern

#: Options KafkaSource and KafkaDestination set from their own parameters or the mapping;
#: consumer_options and producer_options can't (for :func:`check_options`).
MANAGED_OPTIONS = {
    option: f"it is set by {setter}"
    for option, setter in {
        "bootstrap_servers": "bootstrap_servers",
        "group_id": "group_id",
        "group_instance_id": "group_instance_id",
        "enable_auto_commit": "(always False: the engine commits)",
        "auto_offset_reset": "the mapping's starting_position",
        "key_deserializer": "(none: records carry bytes)",
        "value_deserializer": "(none: records carry bytes)",
        "security_protocol": "security_protocol",
        "ssl_context": "ssl_context",
        "sasl_mechanism": "sasl_mechanism",
        "sasl_plain_username": "sasl_plain_username",
        "sasl_plain_password": "sasl_plain_password",
    }.items()
}

#: A partition no member is ever assigned; polling it keeps the consumer "active" without
#: draining records that belong to a partition's poller.
_KEEPALIVE_PARTITION = TopicPartition("", -1)
_KEEPALIVE_INTERVAL = 1.0  # seconds


def partition_id(topic: str, partition: int) -> str:
    """Lambda's name for a partition: ``"<topic>-<partition>"``."""
    return f"{topic}-{partition}"


@functools.lru_cache(maxsize=4096)
def split_partition_id(partition: str) -> tuple[str, int]:
    """``"<topic>-<n>"`` back into the topic and the partition number."""
    topic, sep, number = partition.rpartition("-")
    if not sep or not topic or not number.isdigit():
        raise ValueError(f"{partition!r} is not a Kafka partition id '<topic>-<n>'")
    return topic, int(number)


def parse_servers(value: str | Sequence[str]) -> list[str]:
    """``bootstrap_servers`` as ``"host:port,..."`` or a list, as a list of one or more."""
    servers = value.split(",") if isinstance(value, str) else list(value)
    servers = [s.strip() for s in servers if s.strip()]
    if not servers:
        raise ConfigError.out_of_range("bootstrap_servers", value, "one or more host:port")
    return servers


def check_group_id(group_id: object) -> None:
    if not isinstance(group_id, str) or not GROUP_ID.fullmatch(group_id):
        raise ConfigError.out_of_range(
            "group_id", group_id, r"1-200 characters matching [ a-zA-Z0-9-\/*:_+=.@-]"
        )


def check_seconds(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError.out_of_range(name, value, "a number of seconds > 0")


def client_options(
    bootstrap_servers: list[str],
    security_protocol: str,
    ssl_context: ssl.SSLContext | None,
    sasl_mechanism: str | None,
    sasl_plain_username: str | None,
    sasl_plain_password: str | None,
) -> dict[str, Any]:
    """The connection settings a consumer and a producer share, validated once."""
    if security_protocol not in SECURITY_PROTOCOLS:
        raise ConfigError.out_of_range(
            "security_protocol", security_protocol, " or ".join(SECURITY_PROTOCOLS)
        )
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers,
        "security_protocol": security_protocol,
    }
    if ssl_context is not None:
        options["ssl_context"] = ssl_context
    if security_protocol.startswith("SASL_"):
        if sasl_mechanism not in SASL_MECHANISMS:
            raise ConfigError.out_of_range(
                "sasl_mechanism", sasl_mechanism, " or ".join(SASL_MECHANISMS)
            )
        options["sasl_mechanism"] = sasl_mechanism
        options["sasl_plain_username"] = sasl_plain_username
        options["sasl_plain_password"] = sasl_plain_password
    elif sasl_mechanism is not None:
        raise ConfigError(
            f"sasl_mechanism={sasl_mechanism!r} needs security_protocol SASL_PLAINTEXT or SASL_SSL"
        )
    return options


def check_options(
    name: str, options: Mapping[str, Any], client: type, managed: Mapping[str, str]
) -> None:
    """Reject an unknown or a managed option now, rather than when the worker connects.
    ``managed`` maps each option the caller sets itself to why it is not allowed."""
    known = set(inspect.signature(client).parameters)
    for option in options:
        if option in managed:
            raise ConfigError(f"{name}[{option!r}] is not allowed: {managed[option]}")
        if option not in known:
            raise ConfigError(f"{name}[{option!r}] is not an option of {client.__name__}")


async def start_client(
    make: Callable[[], Any],
    bootstrap_servers: str | Sequence[str],
    connect_timeout: float,
    subject: dict[str, str],
    purpose: str = "",
) -> Any:
    """Start the aiokafka client ``make()`` builds, retrying with backoff until
    ``connect_timeout``: a broker that is still starting must not crash-loop the worker, one
    that never comes is a clear SourceError. ``subject`` names the caller in log lines;
    ``purpose`` (e.g. "for topic 'x' ") goes into the error."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + connect_timeout
    error: BaseException | None = None
    attempt = 0
    while True:
        attempt += 1
        client = make()
        try:
            async with asyncio.timeout_at(deadline):
                await client.start()
        except (KafkaError, OSError, TimeoutError) as exc:
            await client.stop()
            if not isinstance(exc, TimeoutError) or error is None:  # keep the broker's reason
                error = exc
        except BaseException:
            await client.stop()
            raise
        else:
            return client
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise SourceUnreachable(
                f"cannot connect to Kafka at {bootstrap_servers} {purpose}within "
                f"{connect_timeout:g} s ({attempt} attempts): {error!r}"
            ) from error
        delay = min(retry_delay(attempt - 1, 0.5, 10.0), remaining)
        log.warning(
            "cannot connect to Kafka; retrying",
            extra={
                **subject,
                "attempt": attempt,
                "retry_in": round(delay, 2),
                "error": repr(error),
            },
        )
        await asyncio.sleep(delay)


async def keep_alive(consumer: Any, subject: str) -> None:
    """Mark ``consumer`` active while its owner holds records and asks for no more, or aiokafka
    would leave the group after max_poll_interval_ms (a partition blocked on retries stops
    fetching). A fatal group error (authorization, ...) surfaces here as a SourceError that
    starts with ``subject``; a retriable one (no coordinator, a broker away) is logged at a
    bounded rate while aiokafka recovers by itself."""
    failures = RetryLog(log, f"{subject}: retriable error")
    while True:
        await asyncio.sleep(_KEEPALIVE_INTERVAL)
        try:
            await consumer.getmany(_KEEPALIVE_PARTITION, timeout_ms=0)
        except KafkaError as exc:
            if not exc.retriable:
                raise SourceError(f"{subject}: {exc!r}") from exc
            failures.failed(exc, "the client reconnects and rejoins by itself")
        else:
            failures.succeeded()
