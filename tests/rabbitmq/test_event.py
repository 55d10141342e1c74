"""``event_format="lambda"`` hands the handler Lambda's exact ``aws:rmq`` event (with the
Java client's header encoding and Gson's dates), which aws-lambda-powertools' RabbitMQEvent
reads unchanged; and ``event_size`` bounds what each message adds to it."""

from __future__ import annotations

import base64
import datetime
from decimal import Decimal
from typing import Any

import orjson
from aws_lambda_powertools.utilities.data_classes.rabbit_mq_event import RabbitMQEvent

from streamfn import App
from streamfn.connectors.rabbitmq import RabbitMQSource
from streamfn.connectors.rabbitmq.event import header_value, java_date
from streamfn.testing import wait_until

from .conftest import URL, Broker

NULL_PROPERTIES = {
    "contentType": None,
    "contentEncoding": None,
    "headers": None,
    "deliveryMode": None,
    "priority": None,
    "correlationId": None,
    "replyTo": None,
    "expiration": None,
    "messageId": None,
    "timestamp": None,
    "type": None,
    "userId": None,
    "appId": None,
    "clusterId": None,
}


def test_dates_are_gsons_default_text_in_utc() -> None:
    epoch = datetime.datetime(1970, 1, 1, 0, 33, 41, tzinfo=datetime.UTC)
    assert java_date(epoch) == "Jan 1, 1970, 12:33:41 AM"  # AWS's own example
    assert java_date(datetime.datetime(2026, 12, 5, 13, 4, 5)) == "Dec 5, 2026, 1:04:05 PM"
    eastern = datetime.timezone(datetime.timedelta(hours=-5))
    noon = datetime.datetime(2024, 7, 9, 7, 0, 0, tzinfo=eastern)
    assert java_date(noon) == "Jul 9, 2024, 12:00:00 PM"


def test_header_values_are_encoded_as_the_java_client_and_gson_write_them() -> None:
    assert header_value("value1") == {"bytes": [118, 97, 108, 117, 101, 49]}  # AWS's example
    assert header_value("é") == {"bytes": [-61, -87]}  # Java bytes are signed
    assert header_value(b"\xff\x00") == {"bytes": [-1, 0]}  # a long string, not UTF-8
    assert header_value(bytearray(b"\x80\x01")) == [-128, 1]  # AMQP byte array: byte[]
    assert header_value(10) == 10
    assert header_value(True) is True
    assert header_value(None) is None
    assert header_value(1.5) == 1.5
    assert header_value(Decimal("2.50")) == 2.5
    assert header_value(Decimal("3")) == 3
    assert header_value(["a", 1]) == [{"bytes": [97]}, 1]
    assert header_value({"k": {"n": "v"}}) == {"k": {"n": {"bytes": [118]}}}


async def test_the_lambda_event_is_amazon_mqs_for_rabbitmq(rabbit: Broker) -> None:
    queue = await rabbit.queue()
    sent = datetime.datetime(2024, 3, 1, 17, 30, 5, tzinfo=datetime.UTC)
    await rabbit.publish(
        queue,
        [b'{"order": 1}'],
        content_type="application/json",
        content_encoding="utf-8",
        headers={
            "header1": "value1",
            "numberInHeader": 10,
            "flag": True,
            "nested": {"inner": "x"},
            "list": ["y", 2],
            "when": sent,
        },
        delivery_mode=2,
        priority=5,
        correlation_id="corr-1",
        reply_to="replies",
        expiration="60000",
        message_id="msg-1",
        timestamp=sent,
        message_type="order.created",
        user_id="guest",
        app_id="shop",
    )
    # aiormq gives every message it publishes a message id: the only property set here
    await rabbit.publish(queue, ["plain text, é".encode()], message_id="msg-2")
    arn = "arn:aws:mq:us-west-2:111122223333:broker:pizzaBroker:b-9bcfa592"
    source = RabbitMQSource(queue, URL, access=rabbit.access, event_source_arn=arn)
    events: list[dict[str, Any]] = []
    decoded: list[Any] = []
    app = App()

    @app.consume(source, batch_size=2, event_format="lambda", maximum_batching_window=1)
    def handler(event: dict[str, Any], context: Any) -> None:  # a Lambda handler, as is
        events.append(event)
        rmq = RabbitMQEvent(event)
        for messages in rmq.rmq_messages_by_queue.values():
            decoded.extend(
                (m.decoded_data, m.redelivered, m.basic_properties.content_type) for m in messages
            )

    async with app.running():
        await wait_until(lambda: source.acked == 2)
    [event] = events
    signed = [b - 256 if b > 127 else b for b in b"value1"]
    assert event == {
        "eventSource": "aws:rmq",
        "eventSourceArn": arn,
        "rmqMessagesByQueue": {
            f"{queue}::{rabbit.vhost}": [
                {
                    "basicProperties": {
                        "contentType": "application/json",
                        "contentEncoding": "utf-8",
                        "headers": {
                            "header1": {"bytes": signed},
                            "numberInHeader": 10,
                            "flag": True,
                            "nested": {"inner": {"bytes": [120]}},
                            "list": [{"bytes": [121]}, 2],
                            "when": "Mar 1, 2024, 5:30:05 PM",
                        },
                        "deliveryMode": 2,
                        "priority": 5,
                        "correlationId": "corr-1",
                        "replyTo": "replies",
                        "expiration": "60000",
                        "messageId": "msg-1",
                        "timestamp": "Mar 1, 2024, 5:30:05 PM",
                        "type": "order.created",
                        "userId": "guest",
                        "appId": "shop",
                        "clusterId": None,
                        "bodySize": 12,
                    },
                    "redelivered": False,
                    "data": base64.b64encode(b'{"order": 1}').decode(),
                },
                {
                    "basicProperties": {**NULL_PROPERTIES, "messageId": "msg-2", "bodySize": 14},
                    "redelivered": False,
                    "data": base64.b64encode("plain text, é".encode()).decode(),
                },
            ]
        },
    }
    assert list(event["rmqMessagesByQueue"][f"{queue}::{rabbit.vhost}"][0]["basicProperties"]) == [
        *NULL_PROPERTIES,
        "bodySize",
    ]  # the Java client's order
    assert decoded == [
        ('{"order": 1}', False, "application/json"),
        ("plain text, é", False, None),
    ]


async def test_event_size_bounds_each_message_of_the_lambda_event(rabbit: Broker) -> None:
    """The payload cap counts ``event_size``: never less than what a message adds to its
    event (a handler would get an event over the cap), and close to it."""
    queue = await rabbit.queue()
    values = [b"x", b'{"quote": "\\"", "tab": "\t"}', bytes(range(256)) * 40]
    await rabbit.publish(queue, values[:2])
    await rabbit.publish(queue, values[2:], headers={"h": "é", "n": [1, "two"]}, priority=1)
    source = RabbitMQSource(queue, URL, access=rabbit.access)
    records: list[Any] = []
    app = App()

    @app.consume(source, batch_size=3, maximum_batching_window=1)
    def handler(batch: Any, context: Any) -> None:
        records.extend(batch)

    async with app.running():
        await wait_until(lambda: len(records) == 3)
        envelope = len(orjson.dumps(source.lambda_event("consumer-0", [])))
        for record in records:
            alone = len(orjson.dumps(source.lambda_event("consumer-0", [record]))) - envelope
            assert alone < source.event_size(record) <= alone + 128
        whole = len(orjson.dumps(source.lambda_event("consumer-0", records)))
        assert whole <= envelope + sum(source.event_size(r) for r in records)
