r"""An orders worker on a real Kafka broker: the app that ``deploy/`` builds and runs (the image of
``deploy/Dockerfile``, ``deploy/compose.yaml``, the Kubernetes manifests).

``process`` consumes the ``orders`` topic in batches and reports the orders it cannot read as
batch item failures; ``quote`` prices an order over the Invoke API, synchronously or as an
``Event``. Where ``Event`` invocations wait is chosen by the environment:

- ``ORDERS_EVENT_TOPIC`` unset: the SQLite queue in the state directory (``--state-dir``,
  ``STREAMFN_STATE_DIR``), which belongs to one worker (a StatefulSet of one, with a volume);
- ``ORDERS_EVENT_TOPIC=orders-events``: a Kafka topic every replica shares
  (:class:`~streamfn.connectors.kafka.KafkaEventQueue`), so a Deployment may have many.

Locally, with a broker on 127.0.0.1:9092::

    python examples/kafka_orders.py seed --orders 100     # create the topics, produce orders
    streamfn run examples/kafka_orders.py:app
    curl -s -XPOST localhost:9000/2015-03-31/functions/quote/invocations \
         -d '{"order": 1, "items": [{"sku": "a", "quantity": 2, "price": 2.5}]}'

Settings (environment): ``KAFKA_BOOTSTRAP_SERVERS`` (127.0.0.1:9092), ``ORDERS_TOPIC``
(orders), ``ORDERS_GROUP_ID`` (orders), ``ORDERS_EVENT_TOPIC`` (unset), and for a secured
cluster ``KAFKA_SECURITY_PROTOCOL`` (PLAINTEXT), ``KAFKA_SASL_MECHANISM``,
``KAFKA_SASL_USERNAME``, ``KAFKA_SASL_PASSWORD``, ``KAFKA_SSL_CAFILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import ssl
import sys
from typing import Any

import orjson

from streamfn import App, Batch, BatchResult, Context
from streamfn.connectors.kafka import KafkaEventQueue, KafkaSource

log = logging.getLogger("orders")

BOOTSTRAP_SERVERS = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
TOPIC = os.environ.get("ORDERS_TOPIC", "orders")
GROUP_ID = os.environ.get("ORDERS_GROUP_ID", "orders")
EVENT_TOPIC = os.environ.get("ORDERS_EVENT_TOPIC") or None
SECURITY: dict[str, Any] = {
    "security_protocol": os.environ.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
    "sasl_mechanism": os.environ.get("KAFKA_SASL_MECHANISM") or None,
    "sasl_plain_username": os.environ.get("KAFKA_SASL_USERNAME") or None,
    "sasl_plain_password": os.environ.get("KAFKA_SASL_PASSWORD") or None,
}
if SECURITY["security_protocol"] in ("SSL", "SASL_SSL"):  # the system's CAs, or KAFKA_SSL_CAFILE
    SECURITY["ssl_context"] = ssl.create_default_context(
        cafile=os.environ.get("KAFKA_SSL_CAFILE") or None
    )

app = App(
    "orders",
    event_queue=(
        KafkaEventQueue(EVENT_TOPIC, bootstrap_servers=BOOTSTRAP_SERVERS, **SECURITY)
        if EVENT_TOPIC
        else None
    ),
)


def _total(order: dict[str, Any]) -> float:
    return round(sum(item["quantity"] * item["price"] for item in order["items"]), 2)


@app.function(timeout=5.0)
async def quote(event: dict[str, Any], context: Context) -> dict[str, Any]:
    """The total of an order; the same handler runs on AWS Lambda unchanged."""
    return {"order": event.get("order"), "total": _total(event)}


@app.consume(
    KafkaSource(TOPIC, bootstrap_servers=BOOTSTRAP_SERVERS, group_id=GROUP_ID, **SECURITY),
    starting_position="TRIM_HORIZON",  # KEDA's offsetResetPolicy: earliest says the same
    batch_size=100,
    maximum_batching_window=0.5,
    function_response_types=["ReportBatchItemFailures"],
    maximum_retry_attempts=3,
    bisect_batch_on_function_error=True,
    timeout=10.0,
)
async def process(batch: Batch, context: Context) -> BatchResult:
    """Totals a batch of orders; an order that is not JSON with items is a failed item."""
    failed, total = [], 0.0
    for record in batch:
        try:
            total += _total(record.json())
        except (ValueError, KeyError, TypeError):
            failed.append(record)
    log.info(
        "orders processed",
        extra={
            "partition": batch.partition,
            "records": len(batch),
            "failed": len(failed),
            "total": round(total, 2),
        },
    )
    return BatchResult(failed)


async def seed(orders: int, partitions: int, connect_timeout: float) -> None:
    """Create the topics this app uses (when missing) and produce ``orders`` sample orders."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

    topics = [TOPIC] + ([EVENT_TOPIC, f"{EVENT_TOPIC}.dlq"] if EVENT_TOPIC else [])
    async with asyncio.timeout(connect_timeout):
        while True:  # the broker may still be starting (compose starts both at once)
            admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP_SERVERS, **SECURITY)
            try:
                await admin.start()
                break
            except KafkaConnectionError:
                await admin.close()
                await asyncio.sleep(1.0)
    try:
        for topic in topics:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP_SERVERS, acks="all", **SECURITY)
    await producer.start()
    try:
        for n in range(orders):
            order = {
                "order": n,
                "items": [{"sku": f"sku-{n % 7}", "quantity": 1 + n % 3, "price": 9.5}],
            }
            await producer.send(TOPIC, orjson.dumps(order), key=b"%d" % n)
        await producer.flush()
    finally:
        await producer.stop()
    print(f"topics {', '.join(topics)} ready; {orders} orders produced to {TOPIC}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="create this app's topics and produce orders")
    sub = parser.add_subparsers(dest="command", required=True)
    seeding = sub.add_parser("seed", help="create the topics (when missing), produce orders")
    seeding.add_argument("--orders", type=int, default=20)
    seeding.add_argument("--partitions", type=int, default=3)
    seeding.add_argument("--connect-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    asyncio.run(seed(args.orders, args.partitions, args.connect_timeout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
