"""Kinesis Data Streams as Lambda's Kinesis event source: the stream's own calls (ListShards,
GetRecords with MillisBehindLatest, the AT_TIMESTAMP starting position) and the ``aws:kinesis``
event Lambda hands the function. Leases, shard sync and reading live in :mod:`._stream`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import orjson
from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError, ClientError

from streamfn.leases import LeaseStore, ShardInfo
from streamfn.record import Record, json_text_size

from ._shards import Position
from ._stream import _b64, _StreamSource

#: A Kinesis event record without its variable parts (partition key, sequence number twice, data,
#: shard id, identity, region, stream ARN; the arrival time at most 24 characters), and a comma.
_RECORD_SIZE = (
    len(
        orjson.dumps(
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": "",
                    "sequenceNumber": "",
                    "data": "",
                    "approximateArrivalTimestamp": 0,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": ":",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "",
                "awsRegion": "",
                "eventSourceARN": "",
            }
        )
    )
    + 23
    + 1
)


class KinesisSource(_StreamSource):
    """A Kinesis data stream (by name or ARN) as Lambda's Kinesis event source.

    ``starting_position`` (TRIM_HORIZON when unset, LATEST or AT_TIMESTAMP) applies to shards
    without a checkpoint. ``lease_store`` defaults to an SQLite file in ``state_dir``, enough for
    one worker; pass a DynamoDBLeaseStore to share the stream between workers (one table per
    stream and application). A shard is polled at most ``max_calls_per_second`` times a second
    (AWS allows 5 per shard across all consumers) and every ``idle_interval`` seconds once
    caught up (Lambda: once a second).
    """

    kind = "kinesis"
    _service = "kinesis"
    _batch_info = "KinesisBatchInfo"
    _max_records_per_call = 10_000
    _positions = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")
    _idle_interval = 1.0
    #: ListShards page size.
    list_page_size = 1000

    def __init__(
        self,
        stream: str,
        *,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        session: AioSession | None = None,
        lease_store: LeaseStore | None = None,
        state_dir: str | os.PathLike[str] = "state",
        worker_id: str | None = None,
        lease_duration: float = 10.0,
        shard_sync_interval: float = 60.0,
        max_calls_per_second: float = 5.0,
        idle_interval: float | None = None,
        records_per_call: int | None = None,
        invoke_identity_arn: str | None = None,
    ) -> None:
        super().__init__(
            stream,
            region_name=region_name,
            endpoint_url=endpoint_url,
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
            aws_session_token=aws_session_token,
            session=session,
            lease_store=lease_store,
            state_dir=state_dir,
            worker_id=worker_id,
            lease_duration=lease_duration,
            shard_sync_interval=shard_sync_interval,
            max_calls_per_second=max_calls_per_second,
            idle_interval=idle_interval,
            records_per_call=records_per_call,
        )
        self.invoke_identity_arn = invoke_identity_arn

    def describe(self) -> str:
        return f"kinesis://{self.stream}"

    def _stream_ref(self) -> dict[str, str]:
        if self.stream_arn:
            return {"StreamARN": self.stream_arn}
        return {"StreamName": self.stream}

    async def _resolve(self) -> str:
        try:
            summary = await self._client.describe_stream_summary(**self._stream_ref())
        except (ClientError, BotoCoreError) as exc:
            raise self._source_error("Kinesis stream", exc) from exc
        arn: str = summary["StreamDescriptionSummary"]["StreamARN"]
        if self.invoke_identity_arn is None:
            self.invoke_identity_arn = f"arn:aws:iam::{arn.split(':')[4]}:role/streamfn"
        return arn

    async def _list_shards(self) -> list[ShardInfo]:
        shards: list[ShardInfo] = []
        kwargs: dict[str, Any] = {"StreamARN": self.stream_arn, "MaxResults": self.list_page_size}
        while True:
            page = await self._client.list_shards(**kwargs)
            for shard in page["Shards"]:
                parents = (shard.get("ParentShardId"), shard.get("AdjacentParentShardId"))
                shards.append(
                    ShardInfo(
                        shard["ShardId"],
                        tuple(p for p in parents if p),
                        "EndingSequenceNumber" in shard["SequenceNumberRange"],
                    )
                )
            token = page.get("NextToken")
            if not token:
                return shards
            kwargs["NextToken"] = token  # with the ARN: AWS refuses only a StreamName here

    async def _shard_iterator(self, shard: str, position: Position) -> str:
        kind, value = position
        kwargs: dict[str, Any] = {
            "StreamARN": self.stream_arn,
            "ShardId": shard,
            "ShardIteratorType": kind,
        }
        if kind == "AFTER_SEQUENCE_NUMBER":
            kwargs["StartingSequenceNumber"] = value
        elif kind == "AT_TIMESTAMP":
            kwargs["Timestamp"] = value
        response = await self._client.get_shard_iterator(**kwargs)
        iterator: str = response["ShardIterator"]
        return iterator

    async def _get_records(self, iterator: str) -> tuple[list[Any], str | None, int | None]:
        response = await self._client.get_records(
            ShardIterator=iterator, Limit=self.records_per_call, StreamARN=self.stream_arn
        )
        return (
            response["Records"],
            response.get("NextShardIterator"),
            response.get("MillisBehindLatest"),
        )

    def _records(self, shard: str, raw: list[Any]) -> list[Record]:
        return [
            Record(
                shard,
                int(r["SequenceNumber"]),
                r["Data"],
                r["PartitionKey"].encode(),
                r["ApproximateArrivalTimestamp"].timestamp(),
                (),
                r,
            )
            for r in raw
        ]

    def event_size(self, record: Record) -> int:
        # The region is a part of the ARN: twice the ARN's length covers both.
        fixed = _RECORD_SIZE + 2 * len(self.stream_arn) + len(self.invoke_identity_arn or "")
        sequence = len(record.meta["SequenceNumber"])
        key = json_text_size(record.key) if record.key is not None else 0
        data = (len(record.value) + 2) // 3 * 4  # base64
        return fixed + len(record.partition) + 2 * sequence + key + data

    def lambda_event(self, partition: str, records: Sequence[Record]) -> dict[str, Any]:
        arn = self.stream_arn
        region = arn.split(":")[3]
        identity = self.invoke_identity_arn
        return {
            "Records": [
                {
                    "kinesis": {
                        "kinesisSchemaVersion": "1.0",
                        "partitionKey": r.meta["PartitionKey"],
                        "sequenceNumber": r.meta["SequenceNumber"],
                        "data": _b64(r.value),
                        "approximateArrivalTimestamp": round(r.timestamp, 3),
                    },
                    "eventSource": "aws:kinesis",
                    "eventVersion": "1.0",
                    "eventID": f"{partition}:{r.meta['SequenceNumber']}",
                    "eventName": "aws:kinesis:record",
                    "invokeIdentityArn": identity,
                    "awsRegion": region,
                    "eventSourceARN": arn,
                }
                for r in records
            ]
        }

    def filter_view(self, record: Record) -> dict[str, Any]:
        try:
            data: Any = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            data = record.value.decode(errors="replace")
        return {"data": data, "partitionKey": record.meta["PartitionKey"]}
