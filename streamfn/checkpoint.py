"""Where a partition's progress is decided: the checkpoint is the last record of the longest
prefix of fetched records that is completely settled (succeeded, sent to on_failure, or
filtered out).

Records are tracked by fetch chunk with one byte per record; a settled batch marks its records
and the prefix is found with ``bytearray.find``, so the per-record cost stays in C. With
parallelization_factor > 1 batches settle out of order, and the prefix rule keeps the
checkpoint at the lowest contiguous record.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

from .record import Record

#: A chunk index range ``(start, stop)`` or an explicit list of chunk indexes.
Indexes = tuple[int, int] | list[int]


class Chunk:
    """Records fetched together, with a settled flag per record."""

    __slots__ = ("done", "prefix", "records")

    def __init__(self, records: Sequence[Record]) -> None:
        self.records = records
        self.done = bytearray(len(records))
        self.prefix = 0  # records[:prefix] are all settled

    def mark(self, indexes: Indexes) -> None:
        if isinstance(indexes, tuple):
            start, stop = indexes
            if stop - start == 1:  # batch size 1: no bytes object to build
                self.done[start] = 1
            else:
                self.done[start:stop] = b"\x01" * (stop - start)
        else:
            done = self.done
            for i in indexes:
                done[i] = 1


class Checkpoint:
    """The settled prefix of one partition."""

    __slots__ = ("_chunks", "position", "settled")

    def __init__(self) -> None:
        self._chunks: deque[Chunk] = deque()
        self.position: Record | None = None
        #: records in the settled prefix so far (the count at ``position``)
        self.settled = 0

    def add(self, records: Sequence[Record], settled: Indexes | None = None) -> Chunk:
        """Track a fetched chunk; ``settled`` marks records that need no invocation."""
        chunk = Chunk(records)
        if settled is not None:
            chunk.mark(settled)
        self._chunks.append(chunk)
        return chunk

    def settle(self, portions: Iterable[tuple[Chunk, Indexes]]) -> bool:
        """Mark records settled; True when the checkpoint moved."""
        for chunk, indexes in portions:
            chunk.mark(indexes)
        return self.advance()

    def advance(self) -> bool:
        chunks = self._chunks
        moved = False
        while chunks:
            head = chunks[0]
            end = head.done.find(0, head.prefix)
            if end == -1:
                end = len(head.records)
            if end > head.prefix:
                self.settled += end - head.prefix
                head.prefix = end
                self.position = head.records[end - 1]
                moved = True
            if end < len(head.records):
                break
            chunks.popleft()
        return moved
