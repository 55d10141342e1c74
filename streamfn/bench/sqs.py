"""``streamfn bench sqs``: drain an SQS queue with a raw aiobotocore receive /
delete_message_batch loop and with streamfn (SQSSource and a no-op batch handler), side by
side, once per number of concurrent pollers.

moto's SQS slows down as a queue grows (every call walks the whole queue), so the queue never
holds more than ``--depth`` messages: it starts with that many and a refiller sends ten more
each time ten are deleted, until ``--messages`` were sent. Both sides receive ten at a time
with every attribute, delete with DeleteMessageBatch, share the event loop with the same
refiller, and are timed from their first received message to their last deletion. Without
``--endpoint-url`` a moto server is started on a free loopback port.

The sides alternate in ``--rounds`` rounds per poller count (see :mod:`streamfn.bench.rounds`).
A warm-up drain of the raw side times ``--messages`` first: when it took under
``--min-seconds``, every run drains proportionally more messages (the refiller makes that free
of any pre-fill). CPU seconds are this process's, which both sides share with the refiller and
the client; moto runs in its own process and is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from aiobotocore.session import AioSession

from streamfn.app import App
from streamfn.bench import kit, rounds
from streamfn.connectors.sqs import SQSSource
from streamfn.context import Context
from streamfn.record import Batch
from streamfn.runtime import run_loop
from streamfn.testing.servers import moto_server

RECEIVE = {"MaxNumberOfMessages": 10, "WaitTimeSeconds": 1}
ALL_ATTRIBUTES = {"MessageSystemAttributeNames": ["All"], "MessageAttributeNames": ["All"]}
PROGRESS_POLL = 0.002  # seconds between two looks at the deletion count
MOTO_CREDENTIALS = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
MAX_MESSAGES = 200_000  # --min-seconds grows a run to at most this many messages
MESSAGES = rounds.Unit(
    "messages", "messages_per_s", "cpu_s_per_1000", 1000, "messages/s", "CPU s/1k messages"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint-url", help="an SQS endpoint to use instead of starting a moto server"
    )
    parser.add_argument("--region", default="us-east-1", help="AWS region (default us-east-1)")
    parser.add_argument(
        "--messages", type=int, default=5000, help="messages drained per run (default 5000)"
    )
    parser.add_argument(
        "--depth",
        type=int,
        default=20,
        help="most messages in the queue at once, in flight included; moto's calls slow "
        "down in proportion to it (default 20)",
    )
    parser.add_argument("--size", type=int, default=100, help="message body bytes (default 100)")
    parser.add_argument(
        "--pollers",
        type=int,
        nargs="+",
        default=[1],
        help="concurrent pollers (raw: receive loops); one row each (default 1)",
    )
    rounds.add_arguments(parser, extends=kit.grown_drains(MAX_MESSAGES))


@dataclass
class _Run(kit.MessageDrain):
    """One side's drain, with the most messages the queue may hold (``depth``) and how many
    were sent and deleted so far."""

    depth: int
    sent: int = 0
    deleted: int = 0


async def _fill(client: Any, url: str, run: _Run, body: str, until: int) -> None:
    """Send until ``until`` messages were sent, never holding more than ``run.depth``."""
    entries = [{"Id": str(i), "MessageBody": body} for i in range(10)]
    while run.sent < until:
        if run.sent - run.deleted + 10 > run.depth:
            await asyncio.sleep(PROGRESS_POLL)
            continue
        count = min(10, until - run.sent)
        await client.send_message_batch(QueueUrl=url, Entries=entries[:count])
        run.sent += count


async def _raw_poller(client: Any, url: str, run: _Run, drained: asyncio.Event) -> None:
    while True:
        response = await client.receive_message(QueueUrl=url, **RECEIVE, **ALL_ATTRIBUTES)
        messages = response.get("Messages")
        if not messages:
            continue
        run.start()
        await client.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ],
        )
        run.deleted += len(messages)
        if run.deleted >= run.total:
            run.finish()
            drained.set()


async def _raw(client: Any, url: str, run: _Run, body: str, pollers: int) -> None:
    drained = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(_fill(client, url, run, body, run.total))
        tasks = [tg.create_task(_raw_poller(client, url, run, drained)) for _ in range(pollers)]
        await drained.wait()
        for task in tasks:  # the others are waiting in a long poll
            task.cancel()


async def _streamfn(
    client: Any, url: str, run: _Run, body: str, pollers: int, options: dict[str, Any]
) -> None:
    source = SQSSource(url, min_pollers=pollers, max_pollers=pollers, **options)
    app = App("bench-sqs")

    @app.consume(source, batch_size=10)
    async def handler(batch: Batch, context: Context) -> None:
        run.start()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(_fill(client, url, run, body, run.total))
        async with app.running():
            while source.deleted < run.total:
                run.deleted = source.deleted
                await asyncio.sleep(PROGRESS_POLL)
            run.finish()


async def _side(
    side: str, args: argparse.Namespace, endpoint: str, pollers: int, messages: int
) -> dict[str, Any]:
    """Drain ``messages`` from a fresh queue with one side: its count, seconds, rate and CPU."""
    options: dict[str, Any] = {"endpoint_url": endpoint, "region_name": args.region}
    if args.endpoint_url is None:
        options.update(MOTO_CREDENTIALS)
    body = "x" * args.size
    run = _Run(messages, args.depth)
    async with AioSession().create_client("sqs", **options) as client:
        name = f"bench-{side}-{pollers}-{uuid.uuid4().hex[:8]}"
        url = (await client.create_queue(QueueName=name))["QueueUrl"]
        try:
            await _fill(client, url, run, body, min(args.depth, messages))
            if side == "raw":
                await _raw(client, url, run, body, pollers)
            else:
                await _streamfn(client, url, run, body, pollers, options)
        finally:
            await client.delete_queue(QueueUrl=url)
    return run.result()


def main(args: argparse.Namespace) -> int:
    if args.messages < 10 or args.depth < 10 or args.size < 1 or min(args.pollers) < 1:
        print(
            "streamfn bench sqs: --messages and --depth must be >= 10, --size and --pollers >= 1",
            file=sys.stderr,
        )
        return 2
    with contextlib.ExitStack() as stack:
        endpoint = args.endpoint_url or stack.enter_context(moto_server())
        rows = [_pollers_row(args, endpoint, pollers) for pollers in args.pollers]
    _report(args, endpoint, rows)
    return 0


def _pollers_row(args: argparse.Namespace, endpoint: str, pollers: int) -> dict[str, Any]:
    """Both sides with ``pollers`` pollers, in rounds: the medians under the keys a single run
    used to fill (``raw``, ``streamfn``: messages/s; ``ratio``), then the summary and runs."""
    messages, warmup = args.messages, None
    if args.min_seconds > 0:
        warmup = run_loop(_side("raw", args, endpoint, pollers, messages))
        messages = rounds.lengthened(messages, warmup["seconds"], args.min_seconds, MAX_MESSAGES)
    runs = rounds.run_rounds(
        ["raw", "streamfn"],
        args.rounds,
        lambda side, _: run_loop(_side(side, args, endpoint, pollers, messages)),
        MESSAGES,
        args.min_seconds,
    )
    summary = rounds.summarize(runs, MESSAGES, [("streamfn", "raw")])
    return {
        "pollers": pollers,
        "messages": messages,
        "raw": summary["raw"]["messages_per_s"]["median"],
        "streamfn": summary["streamfn"]["messages_per_s"]["median"],
        "ratio": summary["ratios"]["streamfn/raw"]["throughput"]["median"],
        "warmup": warmup,
        "summary": summary,
        "runs": runs,
    }


def _report(args: argparse.Namespace, endpoint: str, rows: list[dict[str, Any]]) -> None:
    if getattr(args, "json", False):
        summary = {"messages": args.messages, "depth": args.depth, "size": args.size}
        settings = {"rounds": args.rounds, "min_seconds": args.min_seconds}
        print(orjson.dumps({**summary, **settings, "endpoint": endpoint, "rows": rows}).decode())
        return
    for row in rows:
        print(
            f"sqs drain, {row['pollers']} pollers: {row['messages']} messages of {args.size} "
            f"bytes, queue depth <= {args.depth}, batches of 10, endpoint {endpoint}"
        )
        print(rounds.render(row["summary"], MESSAGES, args.rounds, args.min_seconds))
