"""``streamfn bench fill``: write N stamped records (or an offered rate for a duration) into a
Kafka topic, an SQS queue, a Kinesis stream or a RabbitMQ queue you point it at.

Every record is JSON of the given size carrying its produce time and a sequence number
(:func:`streamfn.bench.kit.stamp`), so a worker, ``bench kafka-load`` or a peer can measure
end-to-end latency and count duplicates and losses. Keys follow ``--keys``: none, uniform over
K keys, or a zipf-like skew. The Kafka fill goes straight to per-partition record batches (the
broker, not the client, is the limit); at a fixed ``--rate`` records are sent one by one so
each leaves at its time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner

from streamfn.bench import kit
from streamfn.runtime import run_loop

TARGETS = ("kafka", "sqs", "kinesis", "rabbitmq")
BATCH_BYTES = 256 * 1024  # a Kafka request: few, large ones for a backlog
MOTO_CREDENTIALS = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}


@dataclass
class Load:
    """What to write: ``records`` records (``rate`` 0: as fast as the target takes them)."""

    records: int
    size: int
    keys: kit.Keys
    rate: float = 0.0
    first_id: int = 0

    def __post_init__(self) -> None:
        if self.size < kit.STAMP_BYTES:
            raise ValueError(f"record size {self.size} < {kit.STAMP_BYTES} (the stamp)")


@dataclass
class Filled:
    target: str
    records: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "records": self.records,
            "seconds": round(self.seconds, 3),
            "records_per_s": round(self.records / self.seconds) if self.seconds else 0,
        }


async def create_topic(servers: str, topic: str, partitions: int) -> None:
    """Create ``topic`` unless it exists."""
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def fill_kafka(
    servers: str,
    topic: str,
    load: Load,
    progress: kit.Progress | None = None,
    on_sent: Callable[[int, int, float], None] | None = None,
) -> Filled:
    """Write ``load`` to ``topic``; ``on_sent(partition, offset, produced_at)`` is called for
    each acknowledged record when writing at a rate (commit-latency watchers use it)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=servers, max_batch_size=BATCH_BYTES, max_request_size=4 * BATCH_BYTES
    )
    await producer.start()
    started = time.perf_counter()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        if load.rate:
            await _paced_kafka(producer, topic, load, progress, on_sent)
        else:
            await _batched_kafka(producer, topic, partitions, load, progress)
    finally:
        await producer.stop()
    return Filled("kafka", load.records, time.perf_counter() - started)


async def _batched_kafka(
    producer: Any,
    topic: str,
    partitions: list[int],
    load: Load,
    progress: kit.Progress | None,
) -> None:
    choose = DefaultPartitioner()
    batches: dict[int, Any] = {}
    sent: list[Awaitable[Any]] = []
    for n in range(load.records):
        key = load.keys.next()
        partition = choose(key, partitions, partitions) if key else partitions[n % len(partitions)]
        value = kit.stamp(load.first_id + n, load.size)
        batch = batches.get(partition) or batches.setdefault(partition, producer.create_batch())
        if batch.append(key=key, value=value, timestamp=None) is None:
            batch.close()
            sent.append(await producer.send_batch(batch, topic, partition=partition))
            batch = batches[partition] = producer.create_batch()
            batch.append(key=key, value=value, timestamp=None)
            if progress is not None:
                progress.update(n)
    for partition, batch in batches.items():
        batch.close()
        sent.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*sent)


async def _paced_kafka(
    producer: Any,
    topic: str,
    load: Load,
    progress: kit.Progress | None,
    on_sent: Callable[[int, int, float], None] | None,
) -> None:
    pacer = kit.Pacer(load.rate)
    pending: set[asyncio.Future[Any]] = set()
    for n in range(load.records):
        delay = pacer.delay(n)
        if delay > 0:
            await asyncio.sleep(delay)
            if progress is not None:
                progress.update(n)
        now = time.time()
        future = await producer.send(
            topic, kit.stamp(load.first_id + n, load.size, now), key=load.keys.next()
        )
        if on_sent is not None:
            future.add_done_callback(_reporter(on_sent, now))
        pending.add(future)
        future.add_done_callback(pending.discard)
    await asyncio.gather(*pending)


def _reporter(
    on_sent: Callable[[int, int, float], None], now: float
) -> Callable[[asyncio.Future[Any]], None]:
    def report(future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is None:
            meta = future.result()
            on_sent(meta.partition, meta.offset, now)

    return report


def aws_client(service: str, endpoint: str | None, region: str) -> Any:
    """An aiobotocore client; a loopback endpoint (moto) gets dummy credentials."""
    from aiobotocore.session import get_session

    options: dict[str, Any] = {"region_name": region}
    if endpoint:
        options["endpoint_url"] = endpoint
        if "127.0.0.1" in endpoint or "localhost" in endpoint:
            options.update(MOTO_CREDENTIALS)
    return get_session().create_client(service, **options)


async def fill_sqs(
    client: Any,
    queue_url: str,
    load: Load,
    progress: kit.Progress | None = None,
    inflight: int = 4,
) -> Filled:
    """SendMessageBatch, ten at a time, ``inflight`` calls at once; a key becomes the
    MessageGroupId on a FIFO queue and a ``key`` message attribute otherwise."""
    fifo = queue_url.endswith(".fifo")

    def entry(n: int) -> dict[str, Any]:
        body = kit.stamp(load.first_id + n, load.size).decode()
        item: dict[str, Any] = {"Id": str(n % 10), "MessageBody": body}
        key = load.keys.next()
        if fifo:
            item["MessageGroupId"] = (key or b"default").decode()
            item["MessageDeduplicationId"] = str(load.first_id + n)
        elif key:
            item["MessageAttributes"] = {"key": {"DataType": "String", "StringValue": key.decode()}}
        return item

    async def send(first: int, last: int) -> None:
        entries = [entry(n) for n in range(first, last)]
        reply = await client.send_message_batch(QueueUrl=queue_url, Entries=entries)
        if reply.get("Failed"):
            raise RuntimeError(f"SQS refused messages: {reply['Failed'][:3]}")

    return await _chunked("sqs", load, 10, inflight, send, progress)


async def fill_kinesis(
    client: Any,
    stream: str,
    load: Load,
    progress: kit.Progress | None = None,
    inflight: int = 4,
) -> Filled:
    """PutRecords, 500 at a time (the API's limit), ``inflight`` calls at once; without keys
    each record's partition key is its id, which spreads records evenly over the shards."""

    def entry(n: int) -> dict[str, Any]:
        key = load.keys.next()
        return {
            "Data": kit.stamp(load.first_id + n, load.size),
            "PartitionKey": key.decode() if key else str(load.first_id + n),
        }

    async def send(first: int, last: int) -> None:
        records = [entry(n) for n in range(first, last)]
        reply = await client.put_records(StreamName=stream, Records=records)
        if reply.get("FailedRecordCount"):
            raise RuntimeError(f"Kinesis refused {reply['FailedRecordCount']} records")

    return await _chunked("kinesis", load, 500, inflight, send, progress)


async def _chunked(
    target: str,
    load: Load,
    chunk: int,
    inflight: int,
    send: Callable[[int, int], Awaitable[None]],
    progress: kit.Progress | None,
) -> Filled:
    """Send ``load`` in chunks of ``chunk`` records, at most ``inflight`` calls at once, paced
    to ``load.rate`` (by chunk start) when set."""
    started = time.perf_counter()
    pacer = kit.Pacer(load.rate)
    limit = asyncio.Semaphore(inflight)
    done = 0

    async def one(first: int) -> None:
        nonlocal done
        try:
            await send(first, min(first + chunk, load.records))
        finally:
            limit.release()
        done += min(chunk, load.records - first)
        if progress is not None:
            progress.update(done)

    async with asyncio.TaskGroup() as tg:
        for first in range(0, load.records, chunk):
            await asyncio.sleep(pacer.delay(first))
            await limit.acquire()
            tg.create_task(one(first))
    return Filled(target, load.records, time.perf_counter() - started)


async def _sqs_url(client: Any, queue: str) -> str:
    if queue.startswith(("http://", "https://")):
        return queue
    attributes = {"FifoQueue": "true"} if queue.endswith(".fifo") else {}
    reply = await client.create_queue(QueueName=queue, Attributes=attributes)
    url: str = reply["QueueUrl"]
    return url


async def create_stream(client: Any, stream: str, shards: int) -> None:
    """Create ``stream`` unless it exists, and wait until it is ACTIVE."""
    with contextlib.suppress(client.exceptions.ResourceInUseException):
        await client.create_stream(StreamName=stream, ShardCount=shards)
    for _ in range(300):
        reply = await client.describe_stream_summary(StreamName=stream)
        if reply["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"stream {stream} did not become ACTIVE")


async def fill(args: argparse.Namespace, load: Load, progress: kit.Progress) -> Filled:
    if args.target == "kafka":
        await create_topic(args.bootstrap_servers, args.name, args.partitions)
        return await fill_kafka(args.bootstrap_servers, args.name, load, progress)
    if args.target == "rabbitmq":  # aio-pika comes with the bench extra, not with kafka's
        from streamfn.bench.rabbitmq import fill_rabbitmq

        seconds = await fill_rabbitmq(args.amqp_url, args.name, load, progress)
        return Filled("rabbitmq", load.records, seconds)
    async with aws_client(args.target, args.endpoint_url, args.region) as client:
        if args.target == "sqs":
            url = await _sqs_url(client, args.name)
            return await fill_sqs(client, url, load, progress, args.inflight)
        await create_stream(client, args.name, args.partitions)
        return await fill_kinesis(client, args.name, load, progress, args.inflight)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=TARGETS, help="what to fill")
    parser.add_argument(
        "--name",
        default=None,
        help="topic / queue name or URL / stream (created when missing; default: a fresh one)",
    )
    parser.add_argument(
        "--bootstrap-servers",
        help="Kafka: host:port[,host:port] of your broker; required for kafka (unlike the kafka "
        "and kafka-load scenarios, fill starts no broker of its own: one that stopped with it "
        "would take the records along)",
    )
    parser.add_argument("--endpoint-url", help="SQS / Kinesis endpoint (default: AWS's)")
    parser.add_argument(
        "--amqp-url",
        default="amqp://guest:guest@127.0.0.1:5672/",
        help="RabbitMQ: the broker, with user, password and virtual host; the queue is "
        "declared durable when missing (default amqp://guest:guest@127.0.0.1:5672/)",
    )
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--records", type=int, default=100_000, help="records to write")
    parser.add_argument(
        "--size", type=int, default=100, help=f"bytes per record (>= {kit.STAMP_BYTES})"
    )
    parser.add_argument(
        "--keys", default="none", help="none, uniform:K or zipf:K[:S] (default none)"
    )
    parser.add_argument(
        "--rate", type=float, default=0.0, help="offered records/s (default: as fast as possible)"
    )
    parser.add_argument(
        "--partitions", type=int, default=4, help="partitions / shards of a created topic/stream"
    )
    parser.add_argument("--inflight", type=int, default=4, help="SQS/Kinesis calls at once")
    parser.add_argument("--first-id", type=int, default=0, help="sequence number of record 0")


def main(args: argparse.Namespace) -> int:
    if args.target == "kafka" and not args.bootstrap_servers:
        print("streamfn bench fill: kafka needs --bootstrap-servers", file=sys.stderr)
        return 2
    args.name = args.name or f"streamfn-bench-{uuid.uuid4().hex[:12]}"
    try:
        load = Load(args.records, args.size, kit.Keys(args.keys), args.rate, args.first_id)
    except ValueError as exc:
        print(f"streamfn bench fill: {exc}", file=sys.stderr)
        return 2
    progress = kit.Progress(f"fill {args.target}", args.records)
    try:
        filled = run_loop(fill(args, load, progress))
    finally:
        progress.close()
    report = {**filled.to_json(), "name": args.name, "size": args.size, "keys": args.keys}
    print(kit.dumps(report) if args.json else kit.render_table([report]))
    return 0
