"""RabbitMQ as Lambda's Amazon MQ for RabbitMQ event source, on aiormq.

The engine owns batching, invocation and the outcome; this module owns the connection, one
consumer (a channel with its prefetch) per "partition", and the acknowledgements: a message is
acked only once the batch it came in succeeded, so a worker that dies, or a connection that
drops, loses nothing: the broker hands every unacknowledged message out again, marked
``redelivered``.

A failed batch is nacked with ``requeue=True`` at once, rather than held and handed to the
handler again, and its consumer then waits out a backoff before its next batch. The broker does
the retrying: it sets ``redelivered``, a quorum queue counts the delivery
(``x-delivery-count``) against its ``x-delivery-limit`` and dead-letters the message through
its ``x-dead-letter-exchange`` once it is reached, and the messages may go to any consumer of
the queue rather than staying pinned to a worker that may be the problem. Holding them would
retry forever past any delivery limit, which is the poison-message loop this is meant to avoid.
The backoff (the mapping's ``retry_base_delay``/``retry_max_delay``, growing while the
consumer's batches keep failing) keeps a fast-failing handler from spinning the CPU and the
broker: what the broker hands this consumer back meanwhile waits, unacked, in its prefetch
buffer. The wait is in :meth:`RabbitMQSource.fetch`, bounded by its timeout, not in
:meth:`~RabbitMQSource.settle`, so a worker told to stop during a long backoff stops at once.
Lambda retries an MQ batch "until processing succeeds or the messages expire": on a classic
queue with no delivery limit this is exactly that (a message TTL ends it).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiormq
import orjson
from aiormq.abc import AbstractChannel, DeliveredMessage
from aiormq.exceptions import (
    AMQPError,
    ChannelAccessRefused,
    ChannelClosed,
    ChannelLockedResource,
    ChannelNotFoundEntity,
    ConnectionClosed,
    InvalidFrameError,
    ProbableAuthenticationError,
)
from pamqp import commands as spec
from yarl import URL

from streamfn.backoff import retry_delay
from streamfn.config import MappingConfig
from streamfn.errors import ConfigError, SourceError, SourceUnreachable
from streamfn.record import Record
from streamfn.source import AssignmentListener

from .._retrylog import RetryLog
from . import event
from .access import RabbitMQAccess
from .acks import TagLedger

log = logging.getLogger("streamfn.rabbitmq")

#: AMQP's prefetch-count is a 16-bit field.
MAX_PREFETCH = 65_535
_PORTS = {"amqp": 5672, "amqps": 5671}


class _Consumer:
    """One channel consuming the queue: the deliveries not fetched yet, and which of its
    delivery tags are settled."""

    __slots__ = ("arrived", "buffer", "cancelled", "channel", "failures", "ledger", "resume_at")

    def __init__(self, channel: AbstractChannel, cancelled: asyncio.Future[str]) -> None:
        self.channel = channel
        self.buffer: deque[DeliveredMessage] = deque()
        self.arrived = asyncio.Event()
        self.ledger = TagLedger()
        self.failures = 0  # batches failed in a row: the retry backoff's exponent
        self.resume_at = 0.0  # loop time before which it hands out no batch (the backoff)
        self.cancelled = cancelled

    async def on_message(self, message: DeliveredMessage) -> None:
        self.buffer.append(message)
        self.arrived.set()

    def on_cancel(self, frame: spec.Basic.Cancel) -> None:
        if not self.cancelled.done():
            self.cancelled.set_result(frame.consumer_tag or "")


class RabbitMQSource:
    """A RabbitMQ queue feeding one event source mapping, as Lambda's Amazon MQ for RabbitMQ
    event source does.

    ``url`` is ``amqp://host[:port]`` or ``amqps://host[:port]`` (TLS); credentials and the
    virtual host are ``access`` (:class:`RabbitMQAccess`, Lambda's BASIC_AUTH and
    VIRTUAL_HOST), not parts of the URL, so they are declared once and the password stays out
    of logs. ``consumers`` channels consume the queue, each one a "partition" that runs one
    batch at a time; several workers may consume the same queue, and RabbitMQ hands each
    message to one consumer at a time.

    Each consumer's prefetch is ``prefetch``, by default twice the batch size (one batch in
    the handler, the next one arriving; at most 65,535, AMQP's limit), so a batch can fill up
    before the batching window (500 ms by default, as Lambda's) runs out.

    Acknowledgement, retries and poison messages: see the module docstring. Filtered-out
    messages are acked at once, as Lambda acks them. A message over the payload cap alone is
    rejected without requeue (dead-lettered, or dropped without a dead-letter exchange) and
    logged, since requeueing it could only loop. A partial batch response is refused (Lambda
    takes none from MQ mappings): a failed batch is retried whole.

    A lost connection or channel ends :meth:`run` with
    :class:`~streamfn.errors.SourceUnreachable` (the mapping reconnects with a backoff and
    the broker has already requeued every unacked message); refused credentials, a missing
    virtual host or queue, or a queue deleted while consumed end it with
    :class:`~streamfn.errors.SourceError` (the mapping is disabled).

    ``event_source_arn`` is the events' ``eventSourceArn``; by default an Amazon MQ broker
    ARN made from the host name.

    Example::

        access = RabbitMQAccess("orders-svc", Secret.env("RABBITMQ_PASSWORD"), virtual_host="shop")

        @app.consume(RabbitMQSource("orders", "amqps://mq.internal", access=access),
                     batch_size=100, event_format="lambda")
        def orders(event, context):  # Lambda's aws:rmq event
            for message in event["rmqMessagesByQueue"]["orders::shop"]:
                ...
    """

    kind = "rabbitmq"
    default_batch_size = 100
    default_batching_window = 0.5

    def __init__(
        self,
        queue: str,
        url: str = "amqp://127.0.0.1:5672",
        *,
        access: RabbitMQAccess | None = None,
        consumers: int = 1,
        prefetch: int | None = None,
        connect_timeout: float = 10.0,
        event_source_arn: str | None = None,
    ) -> None:
        if not isinstance(queue, str) or not queue or len(queue.encode()) > 255:
            raise ConfigError.out_of_range("queue", queue, "a queue name of 1-255 bytes")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in _PORTS or not parts.hostname:
            raise ConfigError.out_of_range("url", url, "amqp://host[:port] or amqps://host[:port]")
        if parts.username or parts.password or parts.path not in ("", "/") or parts.query:
            raise ConfigError(
                f"url={url!r} is invalid: give the user, password and virtual host as "
                "access=RabbitMQAccess(...), not in the URL"
            )
        if isinstance(consumers, bool) or not isinstance(consumers, int) or consumers < 1:
            raise ConfigError.out_of_range("consumers", consumers, "an integer >= 1")
        if prefetch is not None and (
            isinstance(prefetch, bool)
            or not isinstance(prefetch, int)
            or not 1 <= prefetch <= MAX_PREFETCH
        ):
            raise ConfigError.out_of_range("prefetch", prefetch, f"an integer 1-{MAX_PREFETCH}")
        if (
            isinstance(connect_timeout, bool)
            or not isinstance(connect_timeout, int | float)
            or connect_timeout <= 0
        ):
            raise ConfigError.out_of_range("connect_timeout", connect_timeout, "seconds > 0")
        self.queue = queue
        self.access = access if access is not None else RabbitMQAccess()
        self.tls = parts.scheme == "amqps"
        self.host = parts.hostname
        self.port = parts.port or _PORTS[parts.scheme]
        self.consumers = consumers
        self.prefetch = prefetch
        self.connect_timeout = float(connect_timeout)
        broker = uuid.uuid5(uuid.NAMESPACE_DNS, f"{self.host}:{self.port}")
        self.event_source_arn = event_source_arn or (
            f"arn:aws:mq:us-east-1:000000000000:broker:{self.host}:b-{broker}"
        )
        self._key = event.queue_key(queue, self.access.virtual_host)
        self._where = f"{parts.scheme}://{self.host}:{self.port}"
        #: Counters for benchmarks and tests: messages received, acked (filtered out
        #: included), requeued after a failed batch, rejected (over the payload cap), and
        #: settled after their channel closed (the broker delivers those again).
        self.received = 0
        self.acked = 0
        self.requeued = 0
        self.rejected = 0
        self.stale = 0
        #: Acks and nacks that failed (logged at a bounded rate; the broker redelivers).
        self.settle_failures = 0
        #: Connections opened, the first included.
        self.connections = 0
        self._consumers: dict[str, _Consumer] = {}
        self._payload_limit = 0  # the cap a lone message is measured against
        self._lambda_format = False
        self._retry = (1.0, 60.0)
        self._settle_failures = RetryLog(
            log, "could not settle messages", queue=queue, virtualHost=self.access.virtual_host
        )

    def describe(self) -> str:
        return f"rabbitmq://{self.host}:{self.port}/{self._key}"

    def check_aws(self, configurations: Sequence[Mapping[str, Any]]) -> None:
        """For ``App.consume(source, aws=...)``: the SourceAccessConfigurations must agree
        with ``access`` (:meth:`RabbitMQAccess.check_aws`)."""
        self.access.check_aws(configurations)

    # -- running ------------------------------------------------------------------------

    async def run(self, config: MappingConfig, listener: AssignmentListener) -> None:
        if config.function_response_types:
            raise ConfigError(
                f"function_response_types={list(config.function_response_types)!r} is invalid "
                "for a RabbitMQ source: Lambda takes no partial batch response from MQ "
                "mappings; a failed batch is retried whole"
            )
        batch = config.batch_size or self.default_batch_size
        prefetch = self.prefetch or min(MAX_PREFETCH, 2 * batch)
        # As the engine measures it: with Lambda events, a message's share of its event,
        # against the cap less the event's own fields.
        self._lambda_format = config.event_format == "lambda"
        envelope = len(orjson.dumps(self.lambda_event("", []))) if self._lambda_format else 0
        self._payload_limit = config.payload_limit - envelope
        self._retry = (config.retry_base_delay, config.retry_max_delay)
        connection = await self._connect()
        try:
            consumers = {}
            for i in range(self.consumers):
                consumers[f"consumer-{i}"] = await self._consume(connection, prefetch)
            self._consumers = consumers
            log.info(
                "rabbitmq queue opened",
                extra={
                    "queue": self.queue,
                    "virtualHost": self.access.virtual_host,
                    "broker": self._where,
                    "consumers": len(consumers),
                    "prefetch": prefetch,
                },
            )
            await listener.assigned(list(consumers))
            await self._watch(connection, list(consumers.values()))
        finally:
            self._consumers = {}
            if not connection.is_closed:
                # Unacked messages (a buffer not fetched, a batch abandoned) go back now.
                await asyncio.shield(connection.close())

    def _url(self) -> URL:
        access = self.access
        vhost = access.virtual_host
        return URL.build(
            scheme="amqps" if self.tls else "amqp",
            host=self.host,
            port=self.port,
            user=access.username,
            password=access.password.reveal(),
            # yarl quotes the rest; aiormq reads "%2F" back as "/"
            path="/" if vhost == "/" else "/" + vhost.replace("/", "%2F"),
            encoded=False,
        )

    async def _connect(self) -> aiormq.abc.AbstractConnection:
        """Open the connection; refused credentials or virtual host, or a TLS failure, are a
        SourceError, anything else SourceUnreachable."""
        access = self.access
        try:
            async with asyncio.timeout(self.connect_timeout):
                connection = await aiormq.connect(
                    self._url(),
                    context=access.context() if self.tls else None,
                    # shown by rabbitmqctl and the management UI
                    client_properties={"connection_name": f"streamfn {self.describe()}"},
                )
        except ProbableAuthenticationError as exc:
            raise SourceError(
                f"RabbitMQ at {self._where} refused user {access.username!r}: {exc.args[0]}"
            ) from exc
        except (InvalidFrameError, ConnectionClosed) as exc:
            # 530 NOT_ALLOWED answers Connection.Open for a virtual host the user may not use;
            # aiormq reports it as a Connection.Close frame it did not expect.
            refused = (
                exc.args[:1] == (530,)
                if isinstance(exc, ConnectionClosed)
                else ("Connection.Close" in str(exc))
            )
            if refused:
                raise SourceError(
                    f"RabbitMQ at {self._where} refused virtual host {access.virtual_host!r}: "
                    f"it does not exist, or user {access.username!r} has no permission on it"
                ) from exc
            raise SourceUnreachable(f"cannot connect to RabbitMQ at {self._where}: {exc}") from exc
        except (TimeoutError, OSError, AMQPError) as exc:
            tls = _tls_error(exc)
            if tls is not None:  # aiormq wraps it in an AMQPConnectionError
                raise SourceError(f"TLS with RabbitMQ at {self._where} failed: {tls}") from exc
            reason = str(exc) or f"no answer within {self.connect_timeout:g} s"
            raise SourceUnreachable(
                f"cannot connect to RabbitMQ at {self._where}: {reason}"
            ) from exc
        self.connections += 1
        return connection

    async def _consume(self, connection: aiormq.abc.AbstractConnection, prefetch: int) -> _Consumer:
        """A channel consuming the queue with ``prefetch`` unacked messages at most."""
        where = f"queue {self.queue!r} in virtual host {self.access.virtual_host!r}"
        try:
            channel = await connection.channel(publisher_confirms=False)
            await channel.basic_qos(prefetch_count=prefetch)
            await channel.queue_declare(self.queue, passive=True)
            consumer = _Consumer(channel, asyncio.get_running_loop().create_future())
            channel.on_consumer_cancel_callbacks.add(consumer.on_cancel)
            await channel.basic_consume(self.queue, consumer.on_message)
        except ChannelNotFoundEntity as exc:
            raise SourceError(f"RabbitMQ {where} at {self._where} does not exist") from exc
        except ChannelAccessRefused as exc:
            raise SourceError(
                f"RabbitMQ refused user {self.access.username!r} access to {where}: "
                f"{exc.args[0] if exc.args else exc}"
            ) from exc
        except ChannelLockedResource as exc:
            raise SourceError(
                f"RabbitMQ {where} is exclusive to another connection: {exc.args[0]}"
            ) from exc
        except (OSError, AMQPError, RuntimeError) as exc:  # the connection went meanwhile
            raise SourceUnreachable(
                f"lost RabbitMQ at {self._where} while opening {where}: {exc!r}"
            ) from exc
        return consumer

    async def _watch(
        self, connection: aiormq.abc.AbstractConnection, consumers: list[_Consumer]
    ) -> None:
        """Wait until the connection or a channel closes, or the broker cancels a consumer
        (the queue was deleted): raise what that means for the mapping."""
        ends: list[asyncio.Future[Any]] = [connection.closing]
        for consumer in consumers:
            ends += [consumer.channel.closing, consumer.cancelled]
        await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
        if any(c.cancelled.done() for c in consumers):
            raise SourceError(
                f"RabbitMQ cancelled the consumers of queue {self.queue!r} in virtual host "
                f"{self.access.virtual_host!r}: the queue was deleted"
            )
        ended = next(f for f in ends if f.done())
        reason = (
            repr(ended.exception()) if not ended.cancelled() and ended.exception() else "closed"
        )
        raise SourceUnreachable(
            f"lost the connection to RabbitMQ at {self._where} ({reason}); its unacknowledged "
            "messages go back to the queue"
        )

    # -- the engine's side --------------------------------------------------------------

    async def fetch(self, partition: str, max_records: int, timeout: float) -> Sequence[Record]:
        consumer = self._consumers.get(partition)
        if consumer is None:
            return ()
        pause = consumer.resume_at - asyncio.get_running_loop().time()
        if pause > 0:  # backing off after a failed batch
            await asyncio.sleep(min(pause, timeout))
            if pause > timeout:
                return ()
        buffer = consumer.buffer
        if not buffer:
            arrived = consumer.arrived
            arrived.clear()
            try:
                async with asyncio.timeout(timeout):
                    await arrived.wait()
            except TimeoutError:
                return ()
        count = min(max_records, len(buffer))
        popleft = buffer.popleft
        delivery = event.Delivery
        records = []
        for _ in range(count):
            message = popleft()
            tag = message.delivery.delivery_tag  # type: ignore[union-attr]
            records.append(
                Record(partition, tag, message.body, None, 0.0, (), delivery(message))  # type: ignore[arg-type]
            )
        self.received += count
        return records

    async def settle(
        self, partition: str, succeeded: Sequence[Record], failed: Sequence[Record]
    ) -> None:
        """Ack ``succeeded``; nack ``failed`` with requeue and start the consumer's backoff
        (reject a lone message over the payload cap). Never raises for a broker failure: what
        could not be settled comes back from the broker (at-least-once)."""
        consumer = self._consumers.get(partition)
        succeeded = self._current(consumer, succeeded)
        failed = self._current(consumer, failed)
        if consumer is None or not (succeeded or failed):
            return
        try:
            if succeeded:
                await self._send(consumer, succeeded, ack=True)
                self.acked += len(succeeded)
                if not failed:
                    consumer.failures = 0
            if failed:
                if len(failed) == 1 and self._measure(failed[0]) > self._payload_limit:
                    await self._reject(consumer, failed)
                else:
                    await self._requeue(consumer, failed)
            self._settle_failures.succeeded()
        except (AMQPError, ChannelClosed, OSError, RuntimeError) as exc:
            self.settle_failures += 1
            self._settle_failures.failed(
                exc, "the broker delivers the messages again once the channel is back"
            )

    def _current(self, consumer: _Consumer | None, records: Sequence[Record]) -> Sequence[Record]:
        """``records`` if they came on ``consumer``'s open channel; none (counted as stale)
        if the channel closed meanwhile: the broker has requeued them already."""
        if not records:
            return records
        if consumer is not None and records[0].meta.message.channel is consumer.channel:
            return records
        self.stale += len(records)
        return ()

    def _measure(self, record: Record) -> int:
        return event.event_size(record) if self._lambda_format else record.size

    async def _requeue(self, consumer: _Consumer, failed: Sequence[Record]) -> None:
        """Back to the queue now; the consumer's next batch waits out the backoff."""
        base, cap = self._retry
        delay = retry_delay(consumer.failures, base, cap)
        consumer.failures += 1
        consumer.resume_at = asyncio.get_running_loop().time() + delay
        await self._send(consumer, failed, ack=False, requeue=True)
        self.requeued += len(failed)

    async def _reject(self, consumer: _Consumer, records: Sequence[Record]) -> None:
        await self._send(consumer, records, ack=False, requeue=False)
        self.rejected += len(records)
        log.warning(
            "message over the payload cap rejected without requeue: the queue's dead-letter "
            "exchange receives it, or RabbitMQ drops it if the queue has none",
            extra={
                "queue": self.queue,
                "virtualHost": self.access.virtual_host,
                "bytes": self._measure(records[0]),
                "payloadLimit": self._payload_limit,
                "messageId": records[0].meta.message.header.properties.message_id,
            },
        )

    @staticmethod
    async def _send(
        consumer: _Consumer, records: Sequence[Record], *, ack: bool, requeue: bool = True
    ) -> None:
        """Ack or nack ``records`` in as few frames as :class:`TagLedger` allows; only the
        last frame waits for the socket to drain."""
        frames = consumer.ledger.settle(sorted(r.offset for r in records))
        channel = consumer.channel
        last = len(frames) - 1
        for i, (tag, multiple) in enumerate(frames):
            if ack:
                await channel.basic_ack(tag, multiple=multiple, wait=i == last)
            else:
                await channel.basic_nack(tag, multiple=multiple, requeue=requeue, wait=i == last)

    def item_identifier(self, record: Record) -> Any:
        """The delivery tag (failure lines name a batch by its first and last)."""
        return record.offset

    def identify(self, partition: str, item_identifier: Any) -> int:
        raise ValueError("RabbitMQ mappings take no partial batch response")

    def lambda_event(self, partition: str, records: Sequence[Record]) -> dict[str, Any]:
        return event.lambda_event(self.event_source_arn, self._key, list(records))

    def event_size(self, record: Record) -> int:
        return event.event_size(record)

    def filter_view(self, record: Record) -> dict[str, Any]:
        return event.filter_view(record)

    def trace_attributes(self, partition: str) -> Mapping[str, str]:
        """The batch span's messaging attributes (:class:`streamfn.source.TracedSource`)."""
        return {"messaging.destination.name": self.queue}

    def trace_carrier(self, record: Record) -> Mapping[str, str]:
        """A message's upstream trace context: its string headers (``traceparent``, as
        OpenTelemetry's pika/aio-pika instrumentations write it)."""
        headers = record.meta.message.header.properties.headers or {}
        return {str(k).lower(): v for k, v in headers.items() if isinstance(v, str)}


#: TLS failures of the network, not of the configuration: a reconnection may succeed.
_TRANSIENT_TLS = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


def _tls_error(exc: BaseException) -> ssl.SSLError | None:
    """The TLS failure behind ``exc`` that no reconnection fixes (a certificate refused, a
    listener that speaks no TLS); None for anything else, a connection cut mid-handshake
    included."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return None if isinstance(seen, _TRANSIENT_TLS) else seen
        seen = seen.__cause__ or seen.__context__
    return None
