"""A Kafka topic as an on-failure destination, on an aiokafka producer: each record produced
as JSON and acknowledged by the broker before ``send`` returns, in the shape AWS writes to a
Kafka topic destination (one message per failed record).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streamfn import tracing
from streamfn.errors import ConfigError, DestinationError, SourceError

from ._client import (
    MANAGED_OPTIONS,
    TOPIC,
    check_options,
    client_options,
    parse_servers,
    security_of,
    start_client,
)
from .security import KafkaSecurity

#: Seconds :meth:`KafkaDestination.check` waits for a broker that is down at start-up, as long
#: as a KafkaSource waits by default (its ``connect_timeout``).
CHECK_CONNECT_TIMEOUT = 60.0


class KafkaDestination:
    """Produces each record as JSON to a Kafka topic and returns once the broker acknowledged
    it (``acks="all"``), keeping the given key (AWS keeps the original record's key).

    ``include_payload`` is on by default: AWS puts the whole event under ``"payload"`` for a
    Kafka topic destination. As on AWS, a failed batch becomes one message per record
    (``per_record``), keyed like the record, whose ``KafkaBatchInfo`` carries ``recordInfo``
    (offset, timestamp) and whose ``payload`` is the event object, not a string.

    The producer starts on the first :meth:`send` (or on :meth:`start` / ``async with``); a
    mapping closes its on_failure destination when it stops, other owners call :meth:`close`.
    ``security`` is how to connect and authenticate (:class:`KafkaSecurity`). ``producer_options``
    passes any other AIOKafkaProducer option through (tansu refuses
    ``enable_idempotence=True``; a full Kafka broker accepts it).
    """

    def __init__(
        self,
        topic: str,
        *,
        bootstrap_servers: str | Sequence[str],
        include_payload: bool = True,
        security: KafkaSecurity | None = None,
        security_protocol: str = "PLAINTEXT",
        ssl_context: ssl.SSLContext | None = None,
        sasl_mechanism: str | None = None,
        sasl_plain_username: str | None = None,
        sasl_plain_password: str | None = None,
        producer_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(topic, str) or not TOPIC.fullmatch(topic):
            raise ConfigError.out_of_range("topic", topic, "a topic name")
        servers = parse_servers(bootstrap_servers)
        self.topic = topic
        self.bootstrap_servers = ",".join(servers)
        self.include_payload = include_payload
        options = dict(producer_options or {})
        check_options("producer_options", options, AIOKafkaProducer, MANAGED_OPTIONS)
        self.security = security_of(
            security,
            security_protocol,
            ssl_context,
            sasl_mechanism,
            sasl_plain_username,
            sasl_plain_password,
        )
        self._options = {"acks": "all", **options, **client_options(servers, self.security)}
        self._producer: Any = None
        self._lock = asyncio.Lock()

    def describe(self) -> str:
        return f"kafka://{self.bootstrap_servers}/{self.topic}"

    async def start(self) -> None:
        await self._started()

    async def _started(self) -> Any:
        async with self._lock:
            if self._producer is not None:
                return self._producer
            producer = AIOKafkaProducer(**self._options)
            try:
                await producer.start()
            except BaseException as exc:
                await producer.stop()
                if isinstance(exc, KafkaError | OSError):
                    raise DestinationError(f"cannot connect to {self.describe()}: {exc!r}") from exc
                raise
            self._producer = producer
            return producer

    async def check(self) -> None:
        """Make sure the topic exists before the app runs, on a producer of its own that is
        stopped again: the cluster's metadata must list it. A missing topic is a ConfigError
        even where the broker would create it on the first send: a misspelt name must not
        become a new topic that nobody reads. A broker still starting is waited for, as a
        source waits (:data:`CHECK_CONNECT_TIMEOUT`); one that never comes is a
        DestinationError."""
        try:
            producer = await start_client(
                lambda: AIOKafkaProducer(**self._options),
                self.bootstrap_servers,
                CHECK_CONNECT_TIMEOUT,
                {"destination": self.describe()},
                f"for destination topic {self.topic!r} ",
                self.security,
            )
        except SourceError as exc:
            raise DestinationError(str(exc)) from exc
        try:
            metadata = await producer.client.fetch_all_metadata()
        except KafkaError as exc:
            raise DestinationError(f"cannot list the topics of {self.describe()}: {exc!r}") from exc
        finally:
            await producer.stop()
        if self.topic not in metadata.topics():
            raise ConfigError(
                f"Kafka topic {self.topic!r} does not exist at {self.bootstrap_servers}: "
                "create it before starting"
            )

    async def close(self) -> None:
        """Flush and stop the producer; a later :meth:`send` starts a new one."""
        async with self._lock:
            producer, self._producer = self._producer, None
            if producer is not None:
                await producer.stop()

    async def __aenter__(self) -> KafkaDestination:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    per_record = True

    async def send(self, record: Mapping[str, Any], *, key: bytes | None = None) -> None:
        producer = self._producer or await self._started()
        # With tracing on, the message carries the trace context it was sent in.
        headers = [(name, value.encode()) for name, value in tracing.outgoing().items()]
        try:
            await producer.send_and_wait(
                self.topic, orjson.dumps(_topic_shape(record)), key=key, headers=headers or None
            )
        except KafkaError as exc:
            raise DestinationError(f"{self.describe()} refused the record: {exc!r}") from exc


def _topic_shape(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """The on-failure record as AWS writes it to a Kafka topic: ``recordInfo`` of the one
    record instead of ``recordsInfo``, and the payload as an object."""
    info = record.get("KafkaBatchInfo")
    if not isinstance(info, dict) or len(info.get("recordsInfo") or ()) != 1:
        return record
    [only] = info["recordsInfo"].values()
    shaped = dict(record)
    shaped["KafkaBatchInfo"] = {k: v for k, v in info.items() if k != "recordsInfo"} | {
        "recordInfo": {
            "offset": only["firstRecordOffset"],
            "timestamp": only["firstRecordTimestamp"],
        }
    }
    if isinstance(shaped.get("payload"), str):
        shaped["payload"] = orjson.loads(shaped["payload"])
    return shaped
