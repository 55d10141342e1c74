r"""An orders worker on ActiveMQ 5.x (or Amazon MQ for ActiveMQ): an unmodified Lambda handler
for the ``aws:mq`` event, fed by an :class:`~streamfn.connectors.activemq.ActiveMQSource`.

``handler`` is written for Lambda: it reads ``event["messages"]`` and decodes each ``data``
(base64). As on Lambda, an exception fails the whole batch: every message of it is
redelivered, and after six redeliveries all of them go to the broker's dead-letter queue
(``ActiveMQ.DLQ`` unless the broker's ``deadLetterStrategy`` says otherwise). So the handler
sets an unreadable order aside itself (a log line) and lets only errors that a retry can fix
(``PricingUnavailable`` here) fail the batch.

Locally, against a broker whose STOMP connector listens on 127.0.0.1:61613::

    python examples/activemq_orders.py seed --orders 20   # send 20 orders (one unreadable)
    streamfn run examples/activemq_orders.py:app

Settings (environment): ``ACTIVEMQ_HOST`` (127.0.0.1), ``ACTIVEMQ_STOMP_PORT`` (61613),
``ACTIVEMQ_USER`` / ``ACTIVEMQ_PASSWORD`` (unset: no login), ``ORDERS_QUEUE`` (orders).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
from typing import Any

import orjson

from streamfn import App, Context
from streamfn.connectors.activemq import ActiveMQSource
from streamfn.connectors.activemq.stomp import StompConnection

log = logging.getLogger("orders")

HOST = os.environ.get("ACTIVEMQ_HOST", "127.0.0.1")
PORT = int(os.environ.get("ACTIVEMQ_STOMP_PORT", "61613"))
USER = os.environ.get("ACTIVEMQ_USER") or None
PASSWORD = os.environ.get("ACTIVEMQ_PASSWORD") or None
QUEUE = os.environ.get("ORDERS_QUEUE", "orders")

app = App("orders")


@app.consume(
    ActiveMQSource(QUEUE, host=HOST, port=PORT, username=USER, password=PASSWORD),
    batch_size=10,
    maximum_batching_window=0.5,
    event_format="lambda",
    timeout=30,
)
def handler(event: dict[str, Any], context: Context) -> dict[str, Any]:
    """The same code runs on Lambda with an Amazon MQ trigger."""
    total = 0.0
    priced = 0
    for message in event["messages"]:
        try:
            order = orjson.loads(base64.b64decode(message["data"]))
            total += sum(item["price"] * item["quantity"] for item in order["items"])
            priced += 1
        except (ValueError, KeyError, TypeError) as exc:  # a retry would not fix it
            log.warning(
                "unreadable order set aside",
                extra={"messageID": message["messageID"], "error": repr(exc)},
            )
    if total < 0:
        raise PricingUnavailable("negative total")  # stands for a transient failure
    log.info("batch priced", extra={"orders": priced, "total": total})
    return {"orders": priced, "total": total}


class PricingUnavailable(Exception):
    """A failure worth retrying: the batch goes back to the broker and comes again."""


async def seed(count: int) -> None:
    """Send ``count`` orders, the last one unreadable (the handler sets it aside)."""
    async with await StompConnection.open(HOST, PORT, USER, PASSWORD) as stomp:
        for n in range(count):
            order = {"order": n, "items": [{"sku": "a", "quantity": 1 + n % 3, "price": 2.5}]}
            body = orjson.dumps(order) if n < count - 1 else b"not an order"
            await stomp.send(f"/queue/{QUEUE}", body, {"persistent": "true"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    seed_cmd = commands.add_parser("seed", help="send orders to the queue")
    seed_cmd.add_argument("--orders", type=int, default=20)
    args = parser.parse_args()
    if args.command == "seed":
        asyncio.run(seed(args.orders))


if __name__ == "__main__":
    main()
