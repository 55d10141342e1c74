"""RabbitMQSource on a real broker: batches by size and window, acks after success only, a
failed batch retried whole and redelivered, filtering on ``data``, and several workers
sharing one queue without handling a message twice at once."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from streamfn import App, Batch, Context
from streamfn.connectors.rabbitmq import RabbitMQSource
from streamfn.testing import wait_until

from .conftest import URL, Broker


def _bodies(n: int, prefix: str = "m") -> list[bytes]:
    return [f"{prefix}{i}".encode() for i in range(n)]


async def test_batches_fill_to_batch_size_and_are_acked_after_success(rabbit: Broker) -> None:
    queue = await rabbit.queue()
    await rabbit.publish(queue, _bodies(25))
    source = RabbitMQSource(queue, URL, access=rabbit.access)
    sizes: list[int] = []
    seen: list[bytes] = []
    app = App()

    @app.consume(source, batch_size=10, maximum_batching_window=0.2)
    async def handler(batch: Batch, context: Context) -> None:
        sizes.append(len(batch))
        seen.extend(r.value for r in batch)

    async with app.running():
        await wait_until(lambda: source.acked == 25)
        assert await rabbit.depth(queue) == (0, 1)  # nothing ready, nothing left unacked
    assert sorted(seen) == sorted(_bodies(25))
    assert max(sizes) == 10 and sizes.count(10) >= 2  # full batches once prefetched
    assert source.requeued == 0


async def test_the_window_releases_a_batch_smaller_than_batch_size(rabbit: Broker) -> None:
    queue = await rabbit.queue()
    source = RabbitMQSource(queue, URL, access=rabbit.access)
    assert (source.default_batch_size, source.default_batching_window) == (100, 0.5)  # Lambda's
    sizes: list[int] = []
    app = App()

    @app.consume(source, maximum_batching_window=0.1)
    async def handler(batch: Batch, context: Context) -> None:
        sizes.append(len(batch))

    async with app.running():
        await wait_until(lambda: app.mappings[0].stats.assignments == 1)
        await rabbit.publish(queue, _bodies(3))
        await wait_until(lambda: source.acked == 3)
    assert sum(sizes) == 3 and max(sizes) <= 3


async def test_a_failed_batch_is_retried_whole_and_comes_back_redelivered(
    rabbit: Broker,
) -> None:
    queue = await rabbit.queue()
    await rabbit.publish(queue, _bodies(5))
    source = RabbitMQSource(queue, URL, access=rabbit.access)
    calls: list[list[tuple[bytes, bool]]] = []
    app = App()

    @app.consume(
        source, batch_size=5, event_format="lambda", retry_base_delay=0.05, retry_max_delay=0.1
    )
    async def handler(event: dict[str, Any], context: Any) -> None:
        [messages] = event["rmqMessagesByQueue"].values()
        calls.append([(m["data"], m["redelivered"]) for m in messages])
        if len(calls) == 1:
            raise RuntimeError("first attempt fails")

    async with app.running():
        await wait_until(lambda: source.acked == 5)
        assert await rabbit.depth(queue) == (0, 1)
    first, *retries = calls
    assert source.requeued == 5
    assert {redelivered for _, redelivered in first} == {False}
    retried = [m for call in retries for m in call]
    assert sorted(data for data, _ in retried) == sorted(data for data, _ in first)
    assert {redelivered for _, redelivered in retried} == {True}


async def test_filter_criteria_match_on_data_and_filtered_messages_are_acked(
    rabbit: Broker,
) -> None:
    queue = await rabbit.queue()
    bodies = [orjson.dumps({"kind": kind, "n": i}) for i, kind in enumerate("abab")]
    await rabbit.publish(queue, [*bodies, b"not json", b"\xff\xfe"])
    source = RabbitMQSource(queue, URL, access=rabbit.access)
    seen: list[bytes] = []
    app = App()

    @app.consume(
        source,
        maximum_batching_window=0.05,
        filter_criteria={"Filters": [{"Pattern": '{"data": {"kind": ["a"]}}'}]},
    )
    async def handler(batch: Batch, context: Context) -> None:
        seen.extend(r.value for r in batch)

    async with app.running():
        await wait_until(lambda: source.acked == 6)
        assert await rabbit.depth(queue) == (0, 1)
    assert seen == [bodies[0], bodies[2]]
    assert app.mappings[0].stats.partition("consumer-0").filtered == 4


async def test_two_workers_share_a_queue_and_no_message_is_handled_by_both(
    rabbit: Broker,
) -> None:
    queue = await rabbit.queue()
    in_flight: set[bytes] = set()
    overlaps: list[bytes] = []
    handled: dict[str, list[bytes]] = {"a": [], "b": []}
    apps, sources = [], []
    for worker in ("a", "b"):
        source = RabbitMQSource(queue, URL, access=rabbit.access, consumers=2)
        app = App(f"worker-{worker}")

        @app.consume(source, batch_size=10, maximum_batching_window=0.05, name="work")
        async def work(batch: Batch, context: Context, worker: str = worker) -> None:
            values = {r.value for r in batch}
            overlaps.extend(values & in_flight)
            in_flight.update(values)
            await asyncio.sleep(0)  # let the other worker's batches interleave with this one
            in_flight.difference_update(values)
            handled[worker].extend(values)

        apps.append(app)
        sources.append(source)
    async with apps[0].running(), apps[1].running():
        await wait_until(lambda: all(a.mappings[0].stats.assigned == 2 for a in apps))
        await rabbit.publish(queue, _bodies(300))
        await wait_until(lambda: sum(s.acked for s in sources) == 300)
    everything = handled["a"] + handled["b"]
    assert sorted(everything) == sorted(_bodies(300))  # each message once: none twice
    assert not overlaps
    assert handled["a"] and handled["b"]  # RabbitMQ spread the queue over both workers


async def test_a_worker_stops_at_once_during_a_long_retry_backoff(rabbit: Broker) -> None:
    """The backoff after a failed batch is a wait before the next fetch, not a held settle:
    a stop does not wait for it (nor for shutdown_timeout), and the messages stay queued."""
    queue = await rabbit.queue()
    await rabbit.publish(queue, _bodies(3))
    source = RabbitMQSource(queue, URL, access=rabbit.access)
    app = App()

    @app.consume(
        source,
        maximum_batching_window=0.05,
        retry_base_delay=600,
        retry_max_delay=600,
        shutdown_timeout=120,
    )
    async def handler(batch: Batch, context: Context) -> None:
        raise RuntimeError("always fails")

    async with asyncio.timeout(30):  # a deadline far below the backoff and shutdown_timeout
        async with app.running():
            await wait_until(lambda: source.requeued == 3)
    await rabbit.wait_depth(queue, 3)
    assert source.acked == 0
