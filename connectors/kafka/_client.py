"""What the Kafka source, destination and event queue share: checking the connection and
client options once, starting an aiokafka client with retry (and telling refused credentials,
which no retry fixes, from a broker away), keeping a consumer in its group, and Lambda's
partition ids.

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
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    IllegalSaslStateError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from streamfn.backoff import retry_delay
from streamfn.errors import ConfigError, SourceError, SourceUnreachable

from .._retrylog import RetryLog
from .security import KafkaSecurity, Secret

log = logging.getLogger("streamfn.kafka")

#: What a broker answers to credentials it refuses, or a client that cannot authenticate at
#: all: no retry fixes these (:func:`start_client` gives up at once).
REFUSED = (
    AuthenticationFailedError,
    IllegalSaslStateError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
#: OpenSSL's reasons for a TLS handshake that fails on configuration: a certificate the other
#: side does not trust or did not get, or TLS spoken to a port that does not speak it.
_TLS_REFUSALS = ("CERTIFICATE", "UNKNOWN_CA", "WRONG_VERSION_NUMBER", "HANDSHAKE_FAILURE")
#: What aiokafka's SCRAM client raises when the server ends the exchange with an error
#: (``e=unknown-user``, as tansu answers) or a signature that does not hold, instead of a
#: Kafka error: KeyError('v'), ValueError.
_SASL_EXCHANGE_FAILURES = (KeyError, ValueError)

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
        "security_protocol": "security",
        "ssl_context": "security",
        "sasl_mechanism": "security",
        "sasl_plain_username": "security",
        "sasl_plain_password": "security",
        "sasl_oauth_token_provider": "security (KafkaSecurity.msk_iam)",
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


def security_of(
    security: KafkaSecurity | None,
    security_protocol: str = "PLAINTEXT",
    ssl_context: ssl.SSLContext | None = None,
    sasl_mechanism: str | None = None,
    sasl_plain_username: str | None = None,
    sasl_plain_password: str | None = None,
) -> KafkaSecurity:
    """The connector's security: ``security``, or the same said with aiokafka's own keywords
    (kept for existing callers), never both."""
    legacy = (security_protocol, ssl_context, sasl_mechanism, sasl_plain_username)
    if security is not None:
        if legacy != ("PLAINTEXT", None, None, None) or sasl_plain_password is not None:
            raise ConfigError(
                "security= is given: leave security_protocol, ssl_context and sasl_* out"
            )
        if not isinstance(security, KafkaSecurity):
            raise ConfigError.out_of_range("security", security, "a KafkaSecurity")
        return security
    return KafkaSecurity(
        security_protocol,
        sasl_mechanism,
        sasl_plain_username,
        None if sasl_plain_password is None else Secret(sasl_plain_password),
        ssl_context=ssl_context,
    )


def client_options(bootstrap_servers: list[str], security: KafkaSecurity) -> dict[str, Any]:
    """The connection settings a consumer and a producer share."""
    return {"bootstrap_servers": bootstrap_servers, **security.client_options()}


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
    security: KafkaSecurity | None = None,
) -> Any:
    """Start the aiokafka client ``make()`` builds, retrying with backoff until
    ``connect_timeout``: a broker that is still starting must not crash-loop the worker, one
    that never comes is a clear SourceUnreachable. ``subject`` names the caller in log lines;
    ``purpose`` (e.g. "for topic 'x' ") goes into the error.

    Credentials or certificates the brokers refuse are a SourceError at once, not retried: a
    retry changes nothing, as on Lambda, where an authentication failure disables the
    mapping. aiokafka reports them only as "Unable to bootstrap", so on a failed start the
    ``security`` given is tried on one connection of our own (:func:`refusal`)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + connect_timeout
    error: BaseException | None = None
    failures: tuple[type[BaseException], ...] = (KafkaError, OSError, TimeoutError)
    if security is not None and security.sasl_mechanism is not None:
        failures += _SASL_EXCHANGE_FAILURES
    attempt = 0
    while True:
        attempt += 1
        client = make()
        try:
            async with asyncio.timeout_at(deadline):
                await client.start()
        except failures as exc:
            await client.stop()
            if not isinstance(exc, TimeoutError) or error is None:  # keep the broker's reason
                error = exc
        except BaseException:
            await client.stop()
            raise
        else:
            return client
        remaining = deadline - loop.time()
        probe = remaining > 0 and not isinstance(error, TimeoutError)
        if security is not None and security.security_protocol != "PLAINTEXT" and probe:
            refused = await refusal(bootstrap_servers, security, min(remaining, 10.0))
            if refused is not None:
                raise SourceError(
                    f"Kafka at {bootstrap_servers} refused {security.describe()} {purpose}"
                    f"(not retried: check the credentials and certificates): {refused!r}"
                ) from refused
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


async def refusal(
    bootstrap_servers: str | Sequence[str], security: KafkaSecurity, timeout: float
) -> BaseException | None:
    """Why the brokers refuse a client with ``security``, if one of them does: the SASL error
    or the TLS handshake failure of a connection opened as aiokafka opens its own; None when
    one connects, or none answers (a broker away is no refusal)."""
    options = security.client_options()
    options.pop("security_protocol")
    servers = parse_servers(bootstrap_servers)
    try:
        async with asyncio.timeout(timeout):
            for server in servers:
                host, sep, port = server.rpartition(":")
                if not sep:
                    host, port = server, "9092"
                try:
                    conn = await create_conn(
                        host.strip("[]"),
                        int(port),
                        security_protocol=security.security_protocol,
                        request_timeout_ms=int(timeout * 1000),
                        **options,
                    )
                except REFUSED as exc:
                    refused: BaseException = exc
                    return refused
                except ssl.SSLError as exc:
                    if isinstance(exc, ssl.SSLCertVerificationError) or any(
                        reason in str(exc.reason or exc).upper() for reason in _TLS_REFUSALS
                    ):
                        return exc
                except _SASL_EXCHANGE_FAILURES as exc:
                    if security.sasl_mechanism is not None:
                        refused = AuthenticationFailedError(
                            f"the {security.sasl_mechanism} exchange failed (a user or password "
                            f"the broker refused, or a broker that cannot prove it knows them): "
                            f"{exc!r}"
                        )
                        return refused
                except (KafkaError, OSError):
                    # TLS 1.3 servers reject a client certificate after the handshake, which
                    # aiokafka sees as a closed connection: ask again, reading the alert.
                    if "ssl_context" in options:
                        alert = await _tls_alert(host.strip("[]"), int(port), options)
                        if alert is not None:
                            return alert
                    continue  # this one is away; another may answer
                else:
                    conn.close()
                    return None
    except TimeoutError:
        pass
    return None


#: Seconds :func:`_tls_alert` listens after the handshake; a broker that accepted the client
#: says nothing before a request, one that refused it sends its alert at once.
_ALERT_WAIT = 1.0


async def _tls_alert(host: str, port: int, options: Mapping[str, Any]) -> ssl.SSLError | None:
    """The TLS alert a broker sends right after the handshake (a missing or untrusted client
    certificate under TLS 1.3), if it sends one. Nothing is sent: a request racing the alert
    would meet a closed socket, whose reset loses the alert."""
    try:
        reader, writer = await asyncio.open_connection(host, port, ssl=options["ssl_context"])
    except ssl.SSLError as exc:
        return exc
    except OSError:
        return None
    try:
        async with asyncio.timeout(_ALERT_WAIT):
            await reader.read(1)
    except ssl.SSLError as exc:
        if any(reason in str(exc.reason or exc).upper() for reason in _TLS_REFUSALS):
            return exc
    except (OSError, TimeoutError):
        pass
    finally:
        writer.close()
    return None


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
