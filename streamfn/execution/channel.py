"""The private channel between the worker and its own Python execution environments: one
socket pair per environment, each message a 4-byte length and a pickle.

Why not the Runtime API for these too: an HTTP round trip per invocation (parse, headers,
JSON of a native :class:`~streamfn.record.Batch`) costs several times the framing here, and
both ends are streamfn, so pickle carries a ``Batch`` and a ``BatchResult`` as they are.
Foreign runtimes (awslambdaric, a ``bootstrap``) speak the Runtime API
(:mod:`streamfn.execution.runtime_api`). Pickle is safe here: the peer is a process the
worker started, over a socket no one else holds.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from typing import IO, Any

from ..record import Batch, BatchResult, Record

_LENGTH = struct.Struct("!I")
PROTOCOL = pickle.HIGHEST_PROTOCOL

# Message kinds (the first item of every tuple sent).
READY = "ready"  # child -> worker: init done
INIT_ERROR = "init_error"  # child -> worker: (INIT_ERROR, error object)
INVOKE = "invoke"  # worker -> child: (INVOKE, request id, deadline, arn, client ctx, tail, event)
RESULT = "result"  # child -> worker: (RESULT, value, log)
ERROR = "error"  # child -> worker: (ERROR, error object, log)
OOM = "oom"  # child -> worker: (OOM, log): the handler went over the memory size


def frame(message: Any) -> bytes:
    body = pickle.dumps(message, PROTOCOL)
    return _LENGTH.pack(len(body)) + body


async def receive(reader: asyncio.StreamReader) -> Any:
    """The next message, or raises :class:`asyncio.IncompleteReadError` at end of stream."""
    (length,) = _LENGTH.unpack(await reader.readexactly(4))
    return pickle.loads(await reader.readexactly(length))


def receive_blocking(stream: IO[bytes]) -> Any:
    """The child's side: the next message, or None when the worker has gone."""
    head = stream.read(4)
    if len(head) < 4:
        return None
    (length,) = _LENGTH.unpack(head)
    body = stream.read(length)
    if len(body) < length:
        return None
    return pickle.loads(body)


class PackedBatch:
    """A native :class:`~streamfn.record.Batch` on the wire: the records' fields without
    ``meta``, which belongs to the source (it may hold client objects) and no handler reads."""

    __slots__ = ("partition", "records", "source")

    def __init__(self, batch: Batch) -> None:
        self.partition = batch.partition
        self.source = batch.source
        self.records = [
            (r.partition, r.offset, r.value, r.key, r.timestamp, tuple(r.headers), r.size)
            for r in batch
        ]

    def __getstate__(self) -> tuple[str, str, list[Any]]:
        return (self.partition, self.source, self.records)

    def __setstate__(self, state: tuple[str, str, list[Any]]) -> None:
        self.partition, self.source, self.records = state

    def unpack(self) -> Batch:
        records = [Record(p, o, v, k, t, h, None, s) for p, o, v, k, t, h, s in self.records]
        return Batch(records, self.partition, self.source)


def pack_event(event: Any) -> Any:
    return PackedBatch(event) if isinstance(event, Batch) else event


def unpack_event(event: Any) -> Any:
    return event.unpack() if isinstance(event, PackedBatch) else event


def restore_records(value: Any, event: Any) -> Any:
    """A :class:`~streamfn.record.BatchResult` from an environment lists copies of the batch's
    records; the outcome matches failures to the batch by identity, so swap in the originals."""
    if not isinstance(value, BatchResult) or not isinstance(event, Batch):
        return value
    by_offset = {r.offset: r for r in event}
    value.failures = [
        by_offset.get(f.offset, f) if isinstance(f, Record) else f for f in value.failures
    ]
    return value
