"""Where records wait for an invocation: a lane releases a batch when batch_size is reached,
the batching window elapses (counted from the first buffered record) or the next record would
take the payload past its cap. A lane counts a record as its ``measure`` says: the record's
``size``, or with Lambda-format events the source's estimate of its share of the event the
handler receives, so that the cap holds for what is invoked."""

from __future__ import annotations

import asyncio
from asyncio import get_running_loop
from collections import deque
from collections.abc import Callable
from operator import attrgetter

from .checkpoint import Chunk, Indexes
from .record import Record

#: A record as the payload cap counts it by default: its ``size``.
record_size: Callable[[Record], int] = attrgetter("size")

Portion = tuple[Chunk, Indexes]


class Signal:
    """:class:`asyncio.Event`'s ``set``, ``clear``, ``is_set`` and ``wait``, for less: a
    partition's tasks wake one another three times per invocation at batch size 1 (there is
    room to fetch, a batch settled, a commit landed), and Event's loop check, ``wait``
    coroutine and waiter removal cost about 1,500 instructions of each wake-up's 11,500.
    ``wait`` returns a future of the waiter's own, as Event does, so cancelling one waiter
    wakes no other; a cancelled waiter's future stays listed, done, until the next ``set``
    drops it."""

    __slots__ = ("_flag", "_waiters")

    def __init__(self) -> None:
        self._flag = False
        self._waiters: list[asyncio.Future[None]] = []

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        if self._flag:
            return
        self._flag = True
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def clear(self) -> None:
        self._flag = False

    def wait(self) -> asyncio.Future[None]:
        """A future done once the flag is set (already done when it is)."""
        waiter: asyncio.Future[None] = get_running_loop().create_future()
        if self._flag:
            waiter.set_result(None)
        else:
            self._waiters.append(waiter)
        return waiter


def _split(indexes: Indexes, n: int) -> tuple[Indexes, Indexes]:
    if isinstance(indexes, tuple):
        start, stop = indexes
        return (start, start + n), (start + n, stop)
    return indexes[:n], indexes[n:]


class Lane:
    """The buffer of one concurrent batch stream inside a partition (one per parallelization
    slot). A piece is the records of one fetched chunk routed to this lane, in partition order,
    with their indexes in the chunk."""

    __slots__ = (
        "_limit",
        "_measure",
        "_pieces",
        "_ready",
        "_size",
        "_window",
        "buffered",
        "busy",
    )

    def __init__(
        self,
        batch_size: int,
        window: float,
        payload_limit: int,
        measure: Callable[[Record], int] = record_size,
    ) -> None:
        self._size = batch_size
        self._window = window
        self._limit = payload_limit
        self._measure = measure
        self._pieces: deque[tuple[Chunk, list[Record], Indexes]] = deque()
        self._ready = Signal()
        self.buffered = 0
        self.busy = False

    def put(self, chunk: Chunk, records: list[Record], indexes: Indexes) -> None:
        self._pieces.append((chunk, records, indexes))
        self.buffered += len(records)
        self._ready.set()

    async def next_batch(self) -> tuple[list[Record], list[Portion]]:
        """The next batch and the chunk portions it covers. A lone record over the payload cap
        comes back alone, for the caller to reject."""
        pieces = self._pieces
        while not pieces:
            self._ready.clear()
            await self._ready.wait()
        chunk, records, indexes = pieces[0]
        if len(records) == self._size and sum(map(self._measure, records)) <= self._limit:
            # The first piece is a whole batch (at batch size 1, every piece is): the loop
            # below would take it as it is, so hand over its list without building another.
            pieces.popleft()
            self.buffered -= len(records)
            return records, [(chunk, indexes)]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._window
        out: list[Record] = []
        portions: list[Portion] = []
        budget = self._limit
        measure = self._measure
        while True:
            full = False
            while pieces and len(out) < self._size:
                chunk, records, indexes = pieces[0]
                take = records[: self._size - len(out)]
                size = sum(map(measure, take))
                if size > budget:  # cut at the record that would cross the cap
                    n = 0
                    for rec in take:
                        share = measure(rec)
                        if share > budget:
                            break
                        budget -= share
                        n += 1
                    if n == 0 and not out:
                        n = 1  # oversized on its own; rejected by the caller
                    take = take[:n]
                    full = True
                else:
                    budget -= size
                if take:
                    out.extend(take)
                    if len(take) == len(records):
                        pieces.popleft()
                        portions.append((chunk, indexes))
                    else:
                        taken, rest = _split(indexes, len(take))
                        pieces[0] = (chunk, records[len(take) :], rest)
                        portions.append((chunk, taken))
                if full:
                    break
            if full or len(out) >= self._size:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._ready.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._ready.wait()
            except TimeoutError:
                break
        self.buffered -= len(out)
        return out, portions
