"""Lambda's Amazon MQ for RabbitMQ event (``aws:rmq``), built from aiormq deliveries.

Lambda's pollers are Java, and the event is what Gson makes of the RabbitMQ Java client's
objects; a handler written against it (or aws-lambda-powertools' ``RabbitMQEvent``) expects
exactly that, so this module reproduces it rather than tidying it:

- every ``basicProperties`` field is present, ``null`` when the message does not set it, and
  ``bodySize`` is the body's length;
- a header's string value is the Java client's ``LongString``, which Gson writes as
  ``{"bytes": [...]}`` with Java's *signed* bytes (``é`` is ``[-61, -87]``); a byte-array
  value (AMQP ``x``) is a bare ``byte[]``, a signed list; numbers and booleans stay JSON
  values, nested tables objects, arrays lists;
- dates (the ``timestamp`` property, a timestamp header) are Gson's default ``Date`` text in
  UTC, ``"Jan 1, 1970, 12:33:41 AM"``;
- messages are grouped under ``"<queue>::<virtual host>"``.

A :class:`Delivery` is a record's ``meta``: the delivery and, once built, its
``basicProperties``, so that the payload cap's :func:`event_size` and the event share one
construction.
"""

from __future__ import annotations

import base64
import datetime
from array import array
from decimal import Decimal
from typing import Any

import orjson
from aiormq.abc import DeliveredMessage

from streamfn.record import Record

EVENT_SOURCE = "aws:rmq"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: Bytes a record of the event takes around its properties and data, the comma after it
#: included: ``{"basicProperties":,"redelivered":false,"data":""},``.
_RECORD_OVERHEAD = len(b'{"basicProperties":,"redelivered":false,"data":""},')


class Delivery:
    """A record's ``meta``: the aiormq delivery, and its ``basicProperties`` once built."""

    __slots__ = ("message", "properties")

    def __init__(self, message: DeliveredMessage) -> None:
        self.message = message
        self.properties: dict[str, Any] | None = None

    def basic_properties(self) -> dict[str, Any]:
        if self.properties is None:
            self.properties = basic_properties(self.message)
        return self.properties


def queue_key(queue: str, virtual_host: str) -> str:
    """The key of ``rmqMessagesByQueue``: ``"orders::/"``."""
    return f"{queue}::{virtual_host}"


def java_date(when: datetime.datetime) -> str:
    """Gson's default text for a ``java.util.Date``, in UTC: ``"Jan 1, 1970, 12:33:41 AM"``."""
    if when.tzinfo is not None:
        when = when.astimezone(datetime.UTC)
    hour = when.hour % 12 or 12
    noon = "AM" if when.hour < 12 else "PM"
    return (
        f"{_MONTHS[when.month - 1]} {when.day}, {when.year}, "
        f"{hour}:{when.minute:02d}:{when.second:02d} {noon}"
    )


def _signed(data: bytes | bytearray) -> list[int]:
    """Java's view of bytes: -128..127."""
    return array("b", data).tolist()


def header_value(value: Any) -> Any:
    """One header value as Lambda's event spells it (see the module docstring)."""
    kind = type(value)
    if kind is str:
        return {"bytes": _signed(value.encode())}
    if kind is bytes:  # a long string that is not UTF-8
        return {"bytes": _signed(value)}
    if kind is bytearray:  # an AMQP byte array: a bare Java byte[]
        return _signed(value)
    if kind is list or kind is tuple:
        return [header_value(v) for v in value]
    if kind is dict:
        return {str(k): header_value(v) for k, v in value.items()}
    if isinstance(value, datetime.datetime):
        return java_date(value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value  # None, bool, int, float


def basic_properties(message: DeliveredMessage) -> dict[str, Any]:
    """The message's ``basicProperties``, every field present, in the Java client's order."""
    p = message.header.properties
    headers = p.headers
    timestamp = p.timestamp
    return {
        "contentType": p.content_type,
        "contentEncoding": p.content_encoding,
        "headers": header_value(headers) if headers is not None else None,
        "deliveryMode": p.delivery_mode,
        "priority": p.priority,
        "correlationId": p.correlation_id,
        "replyTo": p.reply_to,
        "expiration": p.expiration,
        "messageId": p.message_id,
        "timestamp": java_date(timestamp) if timestamp is not None else None,
        "type": p.message_type,
        "userId": p.user_id,
        "appId": p.app_id,
        "clusterId": p.cluster_id or None,  # deprecated; pamqp reads an absent one as ""
        "bodySize": len(message.body),
    }


def event_record(record: Record) -> dict[str, Any]:
    """One message of the event."""
    delivery: Delivery = record.meta
    return {
        "basicProperties": delivery.basic_properties(),
        "redelivered": bool(delivery.message.redelivered),
        "data": base64.b64encode(record.value).decode("ascii"),
    }


def lambda_event(arn: str, key: str, records: list[Record]) -> dict[str, Any]:
    return {
        "eventSource": EVENT_SOURCE,
        "eventSourceArn": arn,
        "rmqMessagesByQueue": {key: [event_record(r) for r in records]},
    }


def event_size(record: Record) -> int:
    """What ``record`` adds to its event as JSON, the comma after it included: exact for its
    data (base64 is 4/3 of the bytes) and its properties (built once and kept for the event;
    ``redelivered`` counted as ``false``, one byte over for ``true``)."""
    delivery: Delivery = record.meta
    data = (len(record.value) + 2) // 3 * 4
    return _RECORD_OVERHEAD + len(orjson.dumps(delivery.basic_properties())) + data


_UNREADABLE = object()


def _decoded(data: bytes) -> Any:
    """JSON when the bytes parse as JSON, else the UTF-8 text, else _UNREADABLE (Lambda then
    filters on the metadata only)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        try:
            return data.decode()
        except UnicodeDecodeError:
            return _UNREADABLE


def filter_view(record: Record) -> dict[str, Any]:
    """The message as filter_criteria patterns see it: ``data`` decoded (JSON, else text),
    with ``basicProperties`` and ``redelivered`` for patterns on metadata."""
    delivery: Delivery = record.meta
    view: dict[str, Any] = {
        "basicProperties": delivery.basic_properties(),
        "redelivered": bool(delivery.message.redelivered),
    }
    data = _decoded(record.value)
    if data is not _UNREADABLE:
        view["data"] = data
    return view
