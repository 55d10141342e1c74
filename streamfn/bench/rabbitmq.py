"""``streamfn bench rabbitmq``: drain a RabbitMQ queue with a raw aio-pika consumer and with
streamfn (RabbitMQSource and a no-op batch handler), side by side on the same broker.

Before each run a fresh queue is filled with ``--messages`` messages of ``--size`` bytes
(transient, on a classic queue: the consumer's path is measured, not the broker's disk). Both
sides use the same prefetch (``--prefetch``, by default twice ``--batch-size``, as
RabbitMQSource sizes it) and acknowledge once per batch: the raw consumer acks every
``--batch-size``-th message with ``multiple``, streamfn after each batch its handler
returned. Each side is timed from its first message to its last acknowledgement, and its CPU
seconds are this process's (the broker is another process, not counted).

The sides alternate in ``--rounds`` rounds (see :mod:`streamfn.bench.rounds`); a warm-up
drain of the raw side times ``--messages`` first, and when it took under ``--min-seconds``
every run drains proportionally more messages. ``streamfn bench fill rabbitmq`` uses
:func:`fill_rabbitmq` to load a queue of your own.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq
import orjson
from pamqp.commands import Basic

from streamfn.app import App
from streamfn.bench import kit, rounds
from streamfn.connectors.rabbitmq import RabbitMQAccess, RabbitMQSource
from streamfn.context import Context
from streamfn.record import Batch
from streamfn.runtime import run_loop

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
PROGRESS_POLL = 0.002  # seconds between two looks at the ack count
PUBLISH_CHUNK = 1000  # confirmed publishes in flight at once while filling
MAX_MESSAGES = 2_000_000  # --min-seconds grows a run to at most this many messages


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=DEFAULT_URL,
        help=f"the broker, with user, password and virtual host (default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--messages", type=int, default=100_000, help="messages drained per run (default 100000)"
    )
    parser.add_argument("--size", type=int, default=100, help="message body bytes (default 100)")
    parser.add_argument(
        "--batch-size", type=int, default=100, help="messages per batch (default 100, Lambda's)"
    )
    parser.add_argument(
        "--prefetch", type=int, default=None, help="prefetch count (default 2x --batch-size)"
    )
    rounds.add_arguments(parser, extends=kit.grown_drains(MAX_MESSAGES))


@dataclass
class _Run(kit.MessageDrain):
    """One side's drain, with the messages acknowledged so far."""

    acked: int = 0


MESSAGES = rounds.Unit(
    "messages", "messages_per_s", "cpu_s_per_million", 1_000_000, "messages/s", "CPU s/M msgs"
)


def split_url(url: str) -> tuple[str, RabbitMQAccess]:
    """``amqp://user:pw@host:port/vhost`` as RabbitMQSource takes it: the broker's URL and
    its access."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    access = RabbitMQAccess(
        unquote(parts.username or "guest"),
        unquote(parts.password or "guest"),
        virtual_host=vhost,
    )
    return f"{parts.scheme}://{parts.hostname}{port}", access


async def fill_rabbitmq(
    url: str,
    queue: str,
    load: Any,
    progress: kit.Progress | None = None,
    *,
    durable: bool = True,
) -> float:
    """Publish ``load`` (a :class:`streamfn.bench.fill.Load`) to ``queue`` (declared when
    missing) through the default exchange, with publisher confirms, at most
    :data:`PUBLISH_CHUNK` unconfirmed at once, paced to ``load.rate`` when set; a key goes
    into a ``key`` header. Returns the seconds it took."""
    started = time.perf_counter()
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.queue_declare(queue, durable=durable)
        pacer = kit.Pacer(load.rate)
        mode = 2 if durable else 1
        for first in range(0, load.records, PUBLISH_CHUNK):
            await asyncio.sleep(pacer.delay(first))
            sends = []
            for n in range(first, min(first + PUBLISH_CHUNK, load.records)):
                key = load.keys.next()
                properties = Basic.Properties(
                    delivery_mode=mode, headers={"key": key.decode()} if key else None
                )
                body = kit.stamp(load.first_id + n, load.size)
                sends.append(channel.basic_publish(body, routing_key=queue, properties=properties))
            await asyncio.gather(*sends)
            if progress is not None:
                progress.update(min(first + PUBLISH_CHUNK, load.records))
    finally:
        await connection.close()
    return time.perf_counter() - started


async def _prefill(url: str, queue: str, count: int, size: int) -> None:
    """A fresh transient queue holding ``count`` messages."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.queue_declare(queue)
        body = b"x" * size
        properties = Basic.Properties(delivery_mode=1)
        for first in range(0, count, PUBLISH_CHUNK):
            chunk = min(PUBLISH_CHUNK, count - first)
            await asyncio.gather(
                *(
                    channel.basic_publish(body, routing_key=queue, properties=properties)
                    for _ in range(chunk)
                )
            )
    finally:
        await connection.close()


async def _delete(url: str, queue: str) -> None:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.queue_delete(queue)
    finally:
        await connection.close()


async def _raw(url: str, queue: str, run: _Run, batch: int, prefetch: int) -> None:
    """aio-pika's consumer as its documentation writes one, acking once per batch."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        source = await channel.get_queue(queue)
        drained = asyncio.Event()
        pending = 0

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal pending
            run.start()
            pending += 1
            run.acked += 1
            if pending == batch or run.acked == run.total:
                await message.ack(multiple=True)
                pending = 0
                if run.acked == run.total:
                    run.finish()
                    drained.set()

        await source.consume(on_message)
        await drained.wait()
    finally:
        await connection.close()


async def _streamfn(url: str, queue: str, run: _Run, batch: int, prefetch: int) -> None:
    broker, access = split_url(url)
    source = RabbitMQSource(queue, broker, access=access, prefetch=prefetch)
    app = App("bench-rabbitmq")

    @app.consume(source, batch_size=batch)
    async def handler(batch: Batch, context: Context) -> None:
        run.start()

    async with app.running():
        while source.acked < run.total:
            await asyncio.sleep(PROGRESS_POLL)
        run.finish()
        run.acked = source.acked


async def _side(side: str, args: argparse.Namespace, messages: int) -> dict[str, Any]:
    """Drain ``messages`` from a fresh queue with one side: its count, seconds, rate and CPU."""
    queue = f"streamfn-bench-{side}-{uuid.uuid4().hex[:8]}"
    prefetch = args.prefetch or min(65_535, 2 * args.batch_size)
    run = _Run(messages)
    await _prefill(args.url, queue, messages, args.size)
    try:
        drain = _raw if side == "raw" else _streamfn
        await drain(args.url, queue, run, args.batch_size, prefetch)
    finally:
        await _delete(args.url, queue)
    return run.result()


def main(args: argparse.Namespace) -> int:
    if args.messages < args.batch_size or args.size < 1 or not 1 <= args.batch_size <= 10_000:
        print(
            "streamfn bench rabbitmq: --batch-size must be 1-10000, --messages >= --batch-size "
            "and --size >= 1",
            file=sys.stderr,
        )
        return 2
    messages, warmup = args.messages, None
    if args.min_seconds > 0:
        warmup = run_loop(_side("raw", args, messages))
        messages = rounds.lengthened(messages, warmup["seconds"], args.min_seconds, MAX_MESSAGES)
        messages -= messages % args.batch_size  # whole batches on both sides
    runs = rounds.run_rounds(
        ["raw", "streamfn"],
        args.rounds,
        lambda side, _: run_loop(_side(side, args, messages)),
        MESSAGES,
        args.min_seconds,
    )
    summary = rounds.summarize(runs, MESSAGES, [("streamfn", "raw")])
    broker, access = split_url(args.url)
    if getattr(args, "json", False):
        settings = {
            "messages": messages,
            "size": args.size,
            "batch_size": args.batch_size,
            "prefetch": args.prefetch or min(65_535, 2 * args.batch_size),
            "rounds": args.rounds,
            "min_seconds": args.min_seconds,
            "broker": broker,
        }
        result = {**settings, "warmup": warmup, "summary": summary, "runs": runs}
        print(orjson.dumps(result).decode())
        return 0
    print(
        f"rabbitmq drain: {messages} messages of {args.size} bytes, batches of "
        f"{args.batch_size}, prefetch {args.prefetch or min(65_535, 2 * args.batch_size)}, "
        f"broker {broker} virtual host {access.virtual_host!r}"
    )
    print(rounds.render(summary, MESSAGES, args.rounds, args.min_seconds))
    return 0
