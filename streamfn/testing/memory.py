"""Testing utilities: an in-memory partitioned source and a destination that keeps what it gets.

They implement the same protocols as the real connectors, so engine semantics can be pinned
without a broker, and benchmarks can measure the engine alone."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import orjson

from ..config import MappingConfig
from ..destinations import iso_timestamp
from ..record import Record, json_text_size
from ..source import AssignmentListener

#: A memory event record without its variable parts (partition, key, data; the offset at most
#: 20 digits, the timestamp at most 24 characters), and the comma after it.
_RECORD_SIZE = (
    len(
        orjson.dumps(
            {
                "eventSource": "streamfn:memory",
                "partition": "",
                "offset": "",
                "key": "",
                "data": "",
                "timestamp": 0,
            }
        )
    )
    + 20
    + 23
    + 1
)
#: A memory queue event record without its body (the offset at most 20 digits), and a comma.
_MESSAGE_SIZE = len(orjson.dumps({"messageId": "msg-", "body": ""})) + 20 + 1


class MemorySource:
    """Partitions held in lists; offsets are list indexes; commits are remembered, and each run
    starts every partition at its last commit, as a restarted consumer does."""

    kind = "memory"
    default_batch_size = 100
    default_batching_window = 0.0

    def __init__(self, partitions: Iterable[str] = ("p0",), *, fetch_delay: float = 0.0) -> None:
        self.logs: dict[str, list[Record]] = {p: [] for p in partitions}
        self.positions: dict[str, int] = dict.fromkeys(self.logs, 0)
        self.committed: dict[str, int] = {}
        self.commits = 0
        self.fetch_delay = fetch_delay
        self._listener: AssignmentListener | None = None
        self._arrived = asyncio.Event()
        self._running = asyncio.Event()

    def describe(self) -> str:
        return f"memory://{','.join(self.logs)}"

    def append(
        self,
        partition: str,
        value: bytes,
        *,
        key: bytes | None = None,
        timestamp: float | None = None,
    ) -> Record:
        log = self.logs[partition]
        rec = Record(
            partition, len(log), value, key, time.time() if timestamp is None else timestamp
        )
        log.append(rec)
        self._arrived.set()
        return rec

    def extend(self, partition: str, values: Iterable[bytes]) -> None:
        log = self.logs[partition]
        now = time.time()
        base = len(log)
        log.extend([Record(partition, base + i, v, None, now) for i, v in enumerate(values)])
        self._arrived.set()

    async def run(self, config: MappingConfig, listener: AssignmentListener) -> None:
        self._listener = listener
        self.positions = {p: self.committed.get(p, 0) for p in self.logs}
        await listener.assigned(list(self.logs))
        self._running.set()
        await asyncio.Event().wait()

    async def started(self) -> None:
        await self._running.wait()

    async def revoke(self, partitions: Collection[str]) -> None:
        """Take partitions away, as a rebalance would; positions rewind to the last commit."""
        assert self._listener is not None
        await self._listener.revoked(partitions)
        for p in partitions:
            self.positions[p] = self.committed.get(p, 0)

    async def assign(self, partitions: Collection[str]) -> None:
        assert self._listener is not None
        await self._listener.assigned(partitions)

    async def fetch(self, partition: str, max_records: int, timeout: float) -> Sequence[Record]:
        log = self.logs[partition]
        start = self.positions[partition]
        if start >= len(log):
            self._arrived.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._arrived.wait()
            except TimeoutError:
                return ()
        if self.fetch_delay:
            await asyncio.sleep(self.fetch_delay)
        out = log[start : start + max_records]
        self.positions[partition] = start + len(out)
        return out

    async def commit(self, partition: str, record: Record) -> None:
        self.committed[partition] = record.offset + 1
        self.commits += 1

    def item_identifier(self, record: Record) -> Any:
        return str(record.offset)

    def identify(self, partition: str, item_identifier: Any) -> int:
        if not isinstance(item_identifier, str | int) or isinstance(item_identifier, bool):
            raise ValueError(f"invalid itemIdentifier {item_identifier!r}")
        return int(item_identifier)

    def event_size(self, record: Record) -> int:
        # Key and value in base64: at most 4/3 of their bytes (``size``) and padding; a missing
        # key is null, two bytes more than the "" counted, within that padding.
        return _RECORD_SIZE + len(record.partition) + (4 * record.size + 16) // 3

    def lambda_event(self, partition: str, records: Sequence[Record]) -> dict[str, Any]:
        return {
            "Records": [
                {
                    "eventSource": "streamfn:memory",
                    "partition": r.partition,
                    "offset": str(r.offset),
                    "key": base64.b64encode(r.key).decode() if r.key is not None else None,
                    "data": base64.b64encode(r.value).decode(),
                    "timestamp": r.timestamp,
                }
                for r in records
            ]
        }

    def batch_info(self, partition: str, records: Sequence[Record]) -> tuple[str, dict[str, Any]]:
        return (
            "MemoryBatchInfo",
            {
                "shardId": partition,
                "startSequenceNumber": str(records[0].offset),
                "endSequenceNumber": str(records[-1].offset),
                "approximateArrivalOfFirstRecord": iso_timestamp(records[0].timestamp),
                "approximateArrivalOfLastRecord": iso_timestamp(records[-1].timestamp),
                "batchSize": len(records),
                "streamArn": f"memory:{partition}",
            },
        )

    def filter_view(self, record: Record) -> dict[str, Any]:
        try:
            data: Any = record.json()
        except ValueError:
            data = record.value.decode(errors="replace")
        return {"data": data, "partition": record.partition}


class MemoryDestination:
    """Keeps every record it is sent; can be told to fail the next N sends."""

    def __init__(self, *, include_payload: bool = False, fail_times: int = 0) -> None:
        self.include_payload = include_payload
        self.records: list[Mapping[str, Any]] = []
        self.fail_times = fail_times
        self._changed = asyncio.Event()

    def describe(self) -> str:
        return "memory"

    async def send(self, record: Mapping[str, Any], *, key: bytes | None = None) -> None:
        if self.fail_times > 0:
            self.fail_times -= 1
            raise ConnectionError("destination unavailable (injected)")
        self.records.append(record)
        self._changed.set()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Mapping[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.records) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.records


class MemoryQueue:
    """An in-memory queue with SQS-like acknowledgement: settled successes are deleted, failures
    come back (at the end of the queue) with their receive count raised."""

    kind = "memory-queue"
    default_batch_size = 10
    default_batching_window = 0.0

    def __init__(self, pollers: int = 1) -> None:
        self.pollers = [f"poller-{i}" for i in range(pollers)]
        self.visible: list[Record] = []
        self.in_flight: dict[int, Record] = {}
        self.deleted: list[Record] = []
        self.receives: dict[int, int] = {}
        self._next = 0
        self._arrived = asyncio.Event()

    def describe(self) -> str:
        return f"memory-queue://{len(self.pollers)}"

    def send(self, body: bytes) -> Record:
        rec = Record("queue", self._next, body, None, time.time())
        self._next += 1
        self.visible.append(rec)
        self._arrived.set()
        return rec

    async def run(self, config: MappingConfig, listener: AssignmentListener) -> None:
        await listener.assigned(self.pollers)
        await asyncio.Event().wait()

    async def fetch(self, partition: str, max_records: int, timeout: float) -> Sequence[Record]:
        if not self.visible:
            self._arrived.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._arrived.wait()
            except TimeoutError:
                return ()
        out, self.visible = self.visible[:max_records], self.visible[max_records:]
        for rec in out:
            self.in_flight[rec.offset] = rec
            self.receives[rec.offset] = self.receives.get(rec.offset, 0) + 1
        return out

    async def settle(
        self, partition: str, succeeded: Sequence[Record], failed: Sequence[Record]
    ) -> None:
        for rec in succeeded:
            self.deleted.append(self.in_flight.pop(rec.offset))
        for rec in failed:
            self.visible.append(self.in_flight.pop(rec.offset))
        if failed:
            self._arrived.set()

    def item_identifier(self, record: Record) -> Any:
        return f"msg-{record.offset}"

    def identify(self, partition: str, item_identifier: Any) -> int:
        if not isinstance(item_identifier, str) or not item_identifier.startswith("msg-"):
            raise ValueError(f"invalid itemIdentifier {item_identifier!r}")
        return int(item_identifier[4:])

    def event_size(self, record: Record) -> int:
        return _MESSAGE_SIZE + json_text_size(record.value)

    def lambda_event(self, partition: str, records: Sequence[Record]) -> dict[str, Any]:
        return {
            "Records": [
                {"messageId": f"msg-{r.offset}", "body": r.value.decode(errors="replace")}
                for r in records
            ]
        }

    def filter_view(self, record: Record) -> dict[str, Any]:
        try:
            body: Any = record.json()
        except ValueError:
            body = record.value.decode(errors="replace")
        return {"body": body}
