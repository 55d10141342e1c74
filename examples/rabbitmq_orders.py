"""Orders from a RabbitMQ queue, handled by an unmodified Lambda handler for Amazon MQ.

Run it (RabbitMQ on 127.0.0.1:5672, guest/guest)::

    streamfn bench fill rabbitmq --name orders --records 1000   # some orders to handle
    streamfn run examples.rabbitmq_orders:app

``event_format="lambda"`` hands the handler Lambda's ``aws:rmq`` event, so the same file
deploys to Lambda as is. A batch that raises goes back to the queue (redelivered) after a
backoff; declare ``orders`` as a quorum queue with ``x-delivery-limit`` and an
``x-dead-letter-exchange`` so a message that keeps failing is dead-lettered instead of
retried forever (see the README's RabbitMQ section).
"""

from __future__ import annotations

import base64
import logging
from typing import Any

import orjson

from streamfn import App
from streamfn.connectors.rabbitmq import RabbitMQAccess, RabbitMQSource

log = logging.getLogger("orders")
app = App("orders")

source = RabbitMQSource(
    "orders",
    "amqp://127.0.0.1:5672",
    access=RabbitMQAccess("guest", "guest", virtual_host="/"),
)


@app.consume(source, batch_size=100, maximum_batching_window=0.5, event_format="lambda")
def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    """A Lambda handler for Amazon MQ for RabbitMQ: messages grouped by "<queue>::<vhost>"."""
    handled = 0
    for queue, messages in event["rmqMessagesByQueue"].items():
        for message in messages:
            order = orjson.loads(base64.b64decode(message["data"]))
            if message["redelivered"]:
                log.info("order seen before", extra={"queue": queue, "id": order.get("id")})
            handled += 1
    return {"handled": handled}
