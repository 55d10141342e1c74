"""ActiveMQ 5.x as Lambda's Amazon MQ (ActiveMQ) event source, over STOMP 1.2 (:mod:`.stomp`).

What Lambda's MQ poller does and the engine does not: one queue per mapping, a login
(``BASIC_AUTH``), a prefetch of one batch (``activemq.prefetchSize`` = ``batch_size``) so a
poller never holds messages another consumer could run, acknowledgement only after the batch
succeeded, and on a function error the whole batch back to the broker, redelivered
(``redelivered: true``) after a delay. Lambda "does not support custom redelivery policies"
and applies ActiveMQ's default client policy with ``maximumRedeliveries`` 6: a message that
failed on its 7th delivery is rejected (STOMP NACK, a JMS poison ack) and the broker moves it
to its dead-letter queue (``ActiveMQ.DLQ``, or a per-queue DLQ when the broker's
``deadLetterStrategy`` says so). ``maximum_redeliveries`` and ``redelivery_delay`` change
those two numbers.

How a failed batch goes back: the poller unsubscribes and subscribes again, and ActiveMQ
returns every message the old subscription held unacknowledged to the queue with its
redelivery counter raised. A NACK would not do: ActiveMQ turns it into a poison ack and
dead-letters the message at once (unless the broker runs ``redeliveryPlugin``). Records the
engine already holds for the next batch must not go back with them (another consumer could
then run them while this one does), so after a failure the poller hands out nothing more,
lets the records it handed out settle, and only then subscribes again.

Message types: ActiveMQ writes ``content-length`` on a STOMP MESSAGE frame for a
``BytesMessage`` only (``LegacyFrameTranslator``), so a frame with ``content-length`` is
``jms/bytes-message`` and one without is ``jms/text-message``. The one exception is a message
sent over STOMP with ``amq-msg-type``, which ActiveMQ keeps as a property: it names the type.
A ``content-type`` header is only a user property to ActiveMQ and decides nothing.

Broker times: ActiveMQ keeps ``brokerInTime`` / ``brokerOutTime`` on each message but its
STOMP transport does not send them. ``brokerInTime`` is the message's JMS ``timestamp``
(ActiveMQ stamps a STOMP producer's message on arrival; ``<timeStampingBrokerPlugin/>`` makes
it the arrival time for every producer), ``brokerOutTime`` the time this source took the
message from its connection (at least ``brokerInTime``).

Failures: refused credentials and a queue the user may not read are a
:class:`~streamfn.errors.SourceError` (the mapping is disabled, one line); a broker that cannot
be reached, a connection lost while running, or an ERROR frame the broker sends unasked (it
then closes the connection), a :class:`~streamfn.errors.SourceUnreachable`: the mapping
reconnects with a backoff, and the broker redelivers whatever was not acknowledged, so nothing
is lost.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamfn.config import MappingConfig
from streamfn.errors import ConfigError, SourceError, SourceUnreachable
from streamfn.record import Record
from streamfn.source import AssignmentListener

from .._retrylog import RetryLog
from .stomp import ConnectionLost, Frame, StompConnection, StompError

log = logging.getLogger("streamfn.activemq")

MAX_POLLERS = 5  # Lambda: at most five concurrent environments per ActiveMQ mapping
#: Messages whose failures a poller remembers at most (the oldest are forgotten first).
MAX_TRACKED = 100_000
#: A queue name: no STOMP prefix, no wildcard, no composite destination.
_QUEUE_NAME = re.compile(r"[^\s,*>/]+")
#: Bytes a Lambda ``aws:mq`` message takes around its variable fields.
_MESSAGE_OVERHEAD = len(
    orjson.dumps(
        {
            "messageID": "",
            "messageType": "jms/bytes-message",
            "deliveryMode": 1,
            "replyTo": None,
            "type": None,
            "expiration": 0,
            "priority": 0,
            "correlationId": None,
            "redelivered": False,
            "destination": {"physicalname": ""},
            "data": "",
            "timestamp": 0,
            "brokerInTime": 0,
            "brokerOutTime": 0,
        }
    )
)
#: Digits a millisecond timestamp takes, three times, plus the larger of two longer constants.
_NUMBERS = 3 * 13 + 20 + 4


@dataclass(slots=True, eq=False)
class _Message:
    """What a record keeps of its MESSAGE frame: the ack id of the subscription that got it,
    and the headers its Lambda event needs."""

    ack: str
    subscription: str
    headers: dict[str, str]
    received: int  # ms since the epoch


@dataclass(slots=True, eq=False)
class _Poller:
    """One consumer: its own connection and subscription, so returning a failed batch (by
    subscribing again) or losing a connection touches no other poller."""

    name: str
    connection: StompConnection
    subscription: str = ""
    failures: dict[str, int] = field(default_factory=dict)  # message-id -> failed deliveries
    outstanding: int = 0  # records handed out and not settled yet
    returning: bool = False  # a failed batch waits to go back to the queue
    resumed: asyncio.Event = field(default_factory=asyncio.Event)  # set while not returning


class ActiveMQSource:
    """One ActiveMQ queue feeding one event source mapping, as Lambda's Amazon MQ poller reads
    it, over the broker's STOMP connector (``stomp://host:61613`` by default).

    ``username`` / ``password`` are the ``BASIC_AUTH`` secret's (leave both out for a broker
    without authentication). ``pollers`` consumers (1-5; Lambda runs up to five per ActiveMQ
    mapping) each take one batch at a time. ``broker_arn`` is the event's ``eventSourceArn``
    (a made-up ARN naming host and port by default).

    Example::

        source = ActiveMQSource("orders", port=61613, username="app", password="secret")

        @app.consume(source, batch_size=10, event_format="lambda")
        def handler(event, context):
            for message in event["messages"]:
                ...
    """

    kind = "activemq"
    default_batch_size = 100
    default_batching_window = 0.5

    def __init__(
        self,
        queue: str,
        *,
        host: str = "127.0.0.1",
        port: int = 61613,
        username: str | None = None,
        password: str | None = None,
        vhost: str | None = None,
        pollers: int = 1,
        maximum_redeliveries: int = 6,
        redelivery_delay: float = 1.0,
        broker_arn: str | None = None,
        connect_timeout: float = 10.0,
        heartbeat: float = 10.0,
    ) -> None:
        if queue.startswith("/queue/"):
            queue = queue[len("/queue/") :]
        if not isinstance(queue, str) or _QUEUE_NAME.fullmatch(queue) is None:
            raise ConfigError.out_of_range(
                "queue", queue, "one queue name (no '/', ',', '*', '>' or spaces)"
            )
        if (username is None) != (password is None):
            raise ConfigError("username and password go together: set both or neither")
        _check_int("port", port, 1, 65535)
        _check_int("pollers", pollers, 1, MAX_POLLERS)
        _check_int("maximum_redeliveries", maximum_redeliveries, 0, 1000)
        for name, value, high in (
            ("redelivery_delay", redelivery_delay, 3600.0),
            ("connect_timeout", connect_timeout, 600.0),
            ("heartbeat", heartbeat, 3600.0),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 <= value <= high
            ):
                raise ConfigError.out_of_range(
                    name, value, f"a number of seconds from 0 to {high:g}"
                )
        if connect_timeout <= 0:
            raise ConfigError.out_of_range("connect_timeout", connect_timeout, "seconds > 0")
        self.queue = queue
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.vhost = vhost
        self.pollers = pollers
        self.maximum_redeliveries = maximum_redeliveries
        self.redelivery_delay = float(redelivery_delay)
        self.connect_timeout = float(connect_timeout)
        self.heartbeat = int(heartbeat * 1000)
        self.broker_arn = broker_arn or (
            f"arn:aws:mq:us-east-1:000000000000:broker:{host}:b-{host}-{port}"
        )
        self.destination = f"/queue/{queue}"
        #: Counters for tests and benchmarks: messages received, acknowledged, returned to the
        #: queue after a failure, rejected to the broker's dead-letter queue.
        self.received = 0
        self.acknowledged = 0
        self.returned = 0
        self.dead_lettered = 0
        self._prefetch = self.default_batch_size
        self._pollers: dict[str, _Poller] = {}
        self._next_offset = 0
        self._subscriptions = 0
        self._overhead = _MESSAGE_OVERHEAD + _NUMBERS + len(queue)
        self._lost_acks = RetryLog(
            log, "could not acknowledge messages", queue=queue, broker=self._address
        )

    @property
    def _address(self) -> str:
        return f"{self.host}:{self.port}"

    def describe(self) -> str:
        return f"activemq://{self._address}/{self.queue}"

    async def run(self, config: MappingConfig, listener: AssignmentListener) -> None:
        self._check(config)
        assert config.batch_size is not None
        self._prefetch = config.batch_size
        self._pollers = {}
        try:
            for i in range(self.pollers):
                name = f"poller-{i}"
                connection = await self._connect()
                poller = self._pollers[name] = _Poller(name, connection)
                await self._subscribe(poller)
            log.info(
                "activemq queue opened",
                extra={
                    "queue": self.queue,
                    "broker": self._address,
                    "server": next(iter(self._pollers.values())).connection.server,
                    "pollers": self.pollers,
                    "prefetch": self._prefetch,
                },
            )
            await listener.assigned(list(self._pollers))
            # Any one connection lost ends the run: the mapping reconnects them all with its
            # backoff, and the broker redelivers what the lost one held.
            waits = [
                asyncio.ensure_future(p.connection.closed.wait()) for p in self._pollers.values()
            ]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            lost = next(p for p in self._pollers.values() if p.connection.closed.is_set())
            error = lost.connection.error
            raise SourceUnreachable(
                f"lost the connection to ActiveMQ at {self._address} (queue {self.queue!r}): "
                f"{error}; unacknowledged messages go back to the queue"
            )
        finally:
            pollers, self._pollers = list(self._pollers.values()), {}
            await asyncio.gather(*(p.connection.close() for p in pollers), return_exceptions=True)

    def _check(self, config: MappingConfig) -> None:
        """What Lambda's Amazon MQ mapping refuses."""
        if config.report_batch_item_failures:
            raise ConfigError(
                "function_response_types=['ReportBatchItemFailures'] is invalid for ActiveMQ: "
                "Lambda's Amazon MQ source has no partial batch response (a failed batch is "
                "retried whole)"
            )
        if config.parallelization_factor != 1:
            raise ConfigError.out_of_range(
                "parallelization_factor", config.parallelization_factor, "1 for ActiveMQ"
            )

    async def _connect(self) -> StompConnection:
        try:
            return await StompConnection.open(
                self.host,
                self.port,
                self.username,
                self._password,
                vhost=self.vhost,
                heartbeat=(self.heartbeat, self.heartbeat),
                timeout=self.connect_timeout,
            )
        except StompError as exc:
            raise SourceError(
                f"ActiveMQ at {self._address} refused the login of user {self.username!r} for "
                f"queue {self.queue!r}: {exc.message} (not retried: check the credentials)"
            ) from exc
        except (OSError, TimeoutError, ConnectionLost) as exc:
            raise SourceUnreachable(
                f"cannot connect to ActiveMQ at {self._address} for queue {self.queue!r} "
                f"within {self.connect_timeout:g} s: {exc!r}"
            ) from exc

    async def _subscribe(self, poller: _Poller) -> None:
        # Unique across connections too, so a record of a lost connection never matches.
        self._subscriptions += 1
        poller.subscription = f"{poller.name}-{self._subscriptions}"
        try:
            await poller.connection.subscribe(
                self.destination,
                poller.subscription,
                {"activemq.prefetchSize": str(self._prefetch)},
            )
        except StompError as exc:
            raise SourceError(
                f"ActiveMQ at {self._address} refused to let user {self.username!r} read queue "
                f"{self.queue!r}: {exc.message}"
            ) from exc
        except ConnectionLost as exc:
            raise SourceUnreachable(
                f"lost the connection to ActiveMQ at {self._address} while subscribing to "
                f"queue {self.queue!r}: {exc}"
            ) from exc

    async def fetch(self, partition: str, max_records: int, timeout: float) -> Sequence[Record]:
        poller = self._pollers.get(partition)
        if poller is None:
            return ()
        if poller.returning:  # nothing new until the failed batch is back in the queue
            try:
                async with asyncio.timeout(timeout):
                    await poller.resumed.wait()
            except TimeoutError:
                return ()
            return ()
        inbox = poller.connection.messages
        frames: list[Frame] = []
        if inbox.empty():
            try:
                async with asyncio.timeout(timeout):
                    frames.append(await inbox.get())
            except TimeoutError:
                return ()
        while len(frames) < max_records and not inbox.empty():
            frames.append(inbox.get_nowait())
        return self._records(poller, frames)

    def _records(self, poller: _Poller, frames: list[Frame]) -> list[Record]:
        """Records of the frames of the current subscription; frames of an earlier one are
        already back in the queue (the broker returned them when it ended)."""
        now = int(time.time() * 1000)
        subscription = poller.subscription
        overhead = self._overhead
        offset = self._next_offset
        records = []
        for frame in frames:
            headers = frame.headers
            if headers.get("subscription") != subscription:
                continue
            message = _Message(headers.pop("ack", ""), subscription, headers, now)
            body = frame.body
            rec = Record(poller.name, offset, body, None, _millis(headers, "timestamp") / 1000)
            rec.meta = message
            rec.size = overhead + len(headers.get("message-id", "")) + _json_extra(headers)
            rec.size += (len(body) + 2) // 3 * 4
            records.append(rec)
            offset += 1
        self._next_offset = offset
        self.received += len(records)
        poller.outstanding += len(records)
        return records

    async def settle(
        self, partition: str, succeeded: Sequence[Record], failed: Sequence[Record]
    ) -> None:
        """Acknowledge ``succeeded``; for ``failed``, reject those past their last allowed
        delivery (the broker dead-letters them) and return the rest by subscribing again
        after ``redelivery_delay``. Never raises for a broker failure: what is not
        acknowledged comes back (at-least-once)."""
        poller = self._pollers.get(partition)
        if poller is None:  # stopped: the broker returns everything unacknowledged
            return
        current = [r for r in (*succeeded, *failed) if r.meta.subscription == poller.subscription]
        if len(current) < len(succeeded) + len(failed):
            self._lost_acks.failed(
                ConnectionLost("subscription ended"),
                f"{len(succeeded) + len(failed) - len(current)} messages were returned to the "
                "queue when their subscription ended and will be delivered again",
            )
        poller.outstanding -= len(current)
        live = {id(r) for r in current}
        acks = [r.meta.ack for r in succeeded if id(r) in live]
        failures = poller.failures
        for rec in succeeded:
            failures.pop(rec.meta.headers.get("message-id", ""), None)
        poison: list[Record] = []
        back: list[Record] = []
        for rec in failed:
            if id(rec) not in live:
                continue
            message_id = rec.meta.headers.get("message-id", "")
            seen = failures.pop(message_id, 0)
            if not seen and rec.meta.headers.get("redelivered") == "true":
                seen = 1  # delivered before, by a connection this poller does not remember
            if seen + 1 > self.maximum_redeliveries:
                poison.append(rec)
            else:
                failures[message_id] = seen + 1
                back.append(rec)
        while len(failures) > MAX_TRACKED:
            del failures[next(iter(failures))]
        try:
            await poller.connection.settle(acks, [r.meta.ack for r in poison])
        except (ConnectionLost, StompError) as exc:
            self._lost_acks.failed(exc, "the broker delivers the batch again")
            return
        self._lost_acks.succeeded()
        self.acknowledged += len(acks)
        if poison:
            self.dead_lettered += len(poison)
            log.warning(
                "messages failed on their last allowed delivery (maximum_redeliveries); "
                "rejected to the broker's dead-letter queue",
                extra={
                    "queue": self.queue,
                    "count": len(poison),
                    "messageIds": [r.meta.headers.get("message-id") for r in poison[:20]],
                    "maximumRedeliveries": self.maximum_redeliveries,
                },
            )
        if back:
            self.returned += len(back)
            poller.returning = True
            poller.resumed.clear()
        if poller.returning and not poller.outstanding:
            await self._redeliver(poller)

    async def _redeliver(self, poller: _Poller) -> None:
        """Hand every unacknowledged message of the poller back to the broker, after the
        redelivery delay (Lambda's policy waits one second between deliveries)."""
        if self.redelivery_delay:
            await asyncio.sleep(self.redelivery_delay)
        try:
            await poller.connection.unsubscribe(poller.subscription)
            await self._subscribe(poller)
        except (ConnectionLost, StompError, SourceError) as exc:
            # Without a subscription the poller would wait for nothing: drop the connection,
            # so that run() ends, the broker takes the messages back and the mapping
            # reconnects (or is disabled, if the broker now refuses the queue).
            self._lost_acks.failed(exc, "reconnecting; the broker delivers the batch again")
            poller.connection.abort()
            return
        poller.returning = False
        poller.resumed.set()

    def item_identifier(self, record: Record) -> Any:
        return record.meta.headers.get("message-id", "")

    def identify(self, partition: str, item_identifier: Any) -> int:
        raise ValueError("ActiveMQ batches have no partial batch response")

    def event_size(self, record: Record) -> int:
        return record.size + 1

    def lambda_event(self, partition: str, records: Sequence[Record]) -> dict[str, Any]:
        return {
            "eventSource": "aws:mq",
            "eventSourceArn": self.broker_arn,
            "messages": [self._event_message(rec) for rec in records],
        }

    def _event_message(self, rec: Record) -> dict[str, Any]:
        """One message of Lambda's ``aws:mq`` event, in the reference's field order."""
        message: _Message = rec.meta
        headers = message.headers
        timestamp = _millis(headers, "timestamp")
        return {
            "messageID": headers.get("message-id", ""),
            "messageType": message_type(headers),
            "deliveryMode": 2 if headers.get("persistent") == "true" else 1,
            "replyTo": _jms_destination(headers.get("reply-to")),
            "type": headers.get("type"),
            "expiration": _millis(headers, "expires"),
            "priority": int(headers.get("priority", "4")),
            "correlationId": headers.get("correlation-id"),
            "redelivered": headers.get("redelivered") == "true",
            "destination": {"physicalname": self.queue},
            "data": base64.b64encode(rec.value).decode("ascii"),
            "timestamp": timestamp,
            "brokerInTime": timestamp,
            "brokerOutTime": max(timestamp, message.received),
        }

    def filter_view(self, record: Record) -> dict[str, Any]:
        """The message as filter patterns see it: ``data`` decoded as UTF-8 JSON when it is
        (Lambda: "MQ data (UTF-8 decoded)"), else as text, else left out, so that only
        metadata filters apply."""
        view = self._event_message(record)
        try:
            view["data"] = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            try:
                view["data"] = record.value.decode()
            except UnicodeDecodeError:
                del view["data"]
        return view

    def trace_attributes(self, partition: str) -> Mapping[str, str]:
        return {"messaging.destination.name": self.queue}

    def trace_carrier(self, record: Record) -> Mapping[str, str]:
        headers = record.meta.headers
        return {k: headers[k] for k in ("traceparent", "tracestate") if k in headers}


def message_type(headers: Mapping[str, str]) -> str:
    """``jms/bytes-message`` or ``jms/text-message`` for a MESSAGE frame's headers (see the
    module docstring for why ``content-length`` tells them apart)."""
    declared = headers.get("amq-msg-type")
    if declared is not None:
        return "jms/bytes-message" if declared.lower() == "bytes" else "jms/text-message"
    return "jms/bytes-message" if "content-length" in headers else "jms/text-message"


def _jms_destination(stomp_name: str | None) -> str | None:
    """A STOMP destination as JMS prints it (``/queue/x`` -> ``queue://x``)."""
    if stomp_name is None:
        return None
    for prefix, scheme in (
        ("/queue/", "queue://"),
        ("/topic/", "topic://"),
        ("/temp-queue/", "temp-queue://"),
        ("/temp-topic/", "temp-topic://"),
        ("/remote-temp-queue/", "temp-queue://"),
        ("/remote-temp-topic/", "temp-topic://"),
    ):
        if stomp_name.startswith(prefix):
            return scheme + stomp_name[len(prefix) :]
    return stomp_name


def _millis(headers: Mapping[str, str], name: str) -> int:
    try:
        return int(headers.get(name, "0"))
    except ValueError:
        return 0


def _json_extra(headers: Mapping[str, str]) -> int:
    """Bytes the optional string fields add to the event (an upper bound)."""
    size = 0
    for name in ("reply-to", "type", "correlation-id"):
        value = headers.get(name)
        if value is not None:
            size += 2 * len(value) + 12
    return size


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError.out_of_range(name, value, f"an integer from {low} to {high}")
