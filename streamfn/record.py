"""What a handler receives in the native format: records with lazy decoding, and how it answers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

import orjson


class Record:
    """One record of a partition, shard or queue.

    ``offset`` orders records inside a partition (Kafka offset, Kinesis/DynamoDB sequence number as
    an int, SQS receive order); ``meta`` keeps what a source needs to rebuild its AWS event.
    Decoding is lazy: nothing is parsed until the handler asks.

    ``size`` is what the record counts towards the payload cap: its key and value, or what its
    source passes (SQS adds the metadata Lambda counts). With ``event_format="lambda"`` the cap
    counts the source's :meth:`~streamfn.source.Source.event_size` instead, the record's share
    of the event the handler receives.
    """

    __slots__ = ("headers", "key", "meta", "offset", "partition", "size", "timestamp", "value")

    def __init__(
        self,
        partition: str,
        offset: int,
        value: bytes,
        key: bytes | None = None,
        timestamp: float = 0.0,
        headers: Sequence[tuple[str, bytes]] = (),
        meta: Any = None,
        size: int | None = None,
    ) -> None:
        self.partition = partition
        self.offset = offset
        self.value = value
        self.key = key
        self.timestamp = timestamp
        self.headers = headers
        self.meta = meta
        self.size = size if size is not None else len(value) + (len(key) if key else 0)

    def json(self) -> Any:
        """The value parsed as JSON (orjson)."""
        return orjson.loads(self.value)

    @property
    def text(self) -> str:
        return self.value.decode()

    def __repr__(self) -> str:
        return f"Record({self.partition!r}, offset={self.offset}, size={self.size})"


#: Every byte from 0x20 up: deleting them from a text leaves its control characters.
_NOT_CONTROL = bytes(range(0x20, 0x100))


def json_text_size(text: bytes) -> int:
    """An upper bound of the length of UTF-8 ``text`` inside a JSON string as orjson writes it,
    without encoding it: a quote or a backslash takes two bytes, a control character at most
    six (``\\u001f``), any other byte itself. A few scans in C, cheap enough for a source's
    :meth:`~streamfn.source.Source.event_size` on the hot path."""
    controls = len(text.translate(None, _NOT_CONTROL))
    return len(text) + text.count(b'"') + text.count(b"\\") + 5 * controls


class Batch(Sequence[Record]):
    """The records of one invocation, all from one partition, in partition order."""

    __slots__ = ("_records", "partition", "source")

    def __init__(self, records: list[Record], partition: str, source: str) -> None:
        self._records = records
        self.partition = partition
        self.source = source

    @overload
    def __getitem__(self, index: int) -> Record: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Record]: ...
    def __getitem__(self, index: int | slice) -> Record | Sequence[Record]:
        return self._records[index]

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self._records)

    def __repr__(self) -> str:
        return f"Batch({self.partition!r}, {len(self._records)} records)"


class BatchResult:
    """A partial batch response: the records (or raw item identifiers) that failed.

    Equivalent to returning ``{"batchItemFailures": [{"itemIdentifier": ...}]}``.
    """

    __slots__ = ("failures",)

    def __init__(self, failures: Iterable[Record | object] = ()) -> None:
        self.failures = list(failures)

    def to_response(self, identify: Any) -> dict[str, Any]:
        """The Lambda response dict; ``identify`` maps a Record to its item identifier."""
        return {
            "batchItemFailures": [
                {"itemIdentifier": identify(f) if isinstance(f, Record) else f}
                for f in self.failures
            ]
        }


def is_partial_response(value: object) -> bool:
    return isinstance(value, BatchResult) or (
        isinstance(value, Mapping) and "batchItemFailures" in value
    )
