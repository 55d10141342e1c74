"""DynamoDB Streams as Lambda's DynamoDB event source: the stream found from its table when
given a table name, shards listed with DescribeStream, and each change carried as DynamoDB JSON
(binary attributes base64-encoded) into the ``aws:dynamodb`` event Lambda hands the function.
Leases, shard sync and reading live in :mod:`._stream`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from streamfn.errors import SourceError
from streamfn.leases import ShardInfo
from streamfn.record import Record

from ._shards import Position
from ._stream import _b64, _StreamSource


def _ddb_json(value: Any) -> Any:
    """orjson's fallback for DynamoDB JSON: binary attributes travel base64-encoded."""
    if isinstance(value, bytes | bytearray):
        return _b64(bytes(value))
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


#: A DynamoDB Streams event record without its variable parts (event id, name and version,
#: region, the change itself, stream ARN), and the comma after it.
_RECORD_SIZE = (
    len(
        orjson.dumps(
            {
                "eventID": "",
                "eventName": "",
                "eventVersion": "",
                "eventSource": "aws:dynamodb",
                "awsRegion": "",
                "dynamodb": None,
                "eventSourceARN": "",
            }
        )
    )
    - len(b"null")
    + 1
)
_USER_IDENTITY_SIZE = len(b',"userIdentity":')


class DynamoDBStreamSource(_StreamSource):
    """A DynamoDB table's stream (its stream ARN, or the table name to use the table's latest
    stream) as Lambda's DynamoDB Streams event source. ``starting_position`` is TRIM_HORIZON
    (when unset) or LATEST; other settings as for :class:`KinesisSource`. Lambda polls
    DynamoDB Streams 4 times a second, hence the shorter default ``idle_interval``.
    """

    kind = "dynamodb"
    _service = "dynamodbstreams"
    _batch_info = "DDBStreamBatchInfo"
    _max_records_per_call = 1000
    _positions = ("TRIM_HORIZON", "LATEST")
    _idle_interval = 0.25

    def describe(self) -> str:
        return f"dynamodb://{self.stream}"

    async def _resolve(self) -> str:
        arn = self.stream_arn or await self._latest_stream_arn()
        try:
            await self._client.describe_stream(StreamArn=arn, Limit=1)
        except (ClientError, BotoCoreError) as exc:
            raise self._source_error("DynamoDB stream", exc) from exc
        return arn

    async def _latest_stream_arn(self) -> str:
        async with self._session.create_client("dynamodb", **self._client_args) as dynamodb:
            try:
                table = (await dynamodb.describe_table(TableName=self.stream))["Table"]
            except (ClientError, BotoCoreError) as exc:
                raise self._source_error("DynamoDB table", exc) from exc
        arn = table.get("LatestStreamArn")
        if not arn or not table.get("StreamSpecification", {}).get("StreamEnabled"):
            raise SourceError(f"DynamoDB table {self.stream!r} has no stream enabled")
        return str(arn)

    async def _list_shards(self) -> list[ShardInfo]:
        shards: list[ShardInfo] = []
        kwargs: dict[str, Any] = {"StreamArn": self.stream_arn}
        while True:
            description = (await self._client.describe_stream(**kwargs))["StreamDescription"]
            for shard in description.get("Shards", ()):
                parent = shard.get("ParentShardId")
                shards.append(
                    ShardInfo(
                        shard["ShardId"],
                        (parent,) if parent else (),
                        "EndingSequenceNumber" in shard["SequenceNumberRange"],
                    )
                )
            last = description.get("LastEvaluatedShardId")
            if not last:
                return shards
            kwargs["ExclusiveStartShardId"] = last

    async def _shard_iterator(self, shard: str, position: Position) -> str:
        kind, value = position
        kwargs: dict[str, Any] = {
            "StreamArn": self.stream_arn,
            "ShardId": shard,
            "ShardIteratorType": kind,
        }
        if kind == "AFTER_SEQUENCE_NUMBER":
            kwargs["SequenceNumber"] = value
        response = await self._client.get_shard_iterator(**kwargs)
        iterator: str = response["ShardIterator"]
        return iterator

    async def _get_records(self, iterator: str) -> tuple[list[Any], str | None, int | None]:
        response = await self._client.get_records(
            ShardIterator=iterator, Limit=self.records_per_call
        )
        return response["Records"], response.get("NextShardIterator"), None

    def _records(self, shard: str, raw: list[Any]) -> list[Record]:
        records = []
        for r in raw:
            change = r["dynamodb"]
            created = change.get("ApproximateCreationDateTime")
            timestamp = created.timestamp() if created is not None else time.time()
            change["ApproximateCreationDateTime"] = int(timestamp)
            records.append(
                Record(
                    shard,
                    int(change["SequenceNumber"]),
                    orjson.dumps(change, default=_ddb_json),
                    orjson.dumps(change.get("Keys"), default=_ddb_json),
                    timestamp,
                    (),
                    r,
                )
            )
        return records

    def _event_record(self, record: Record) -> dict[str, Any]:
        raw = record.meta
        event = {
            "eventID": raw["eventID"],
            "eventName": raw["eventName"],
            "eventVersion": raw.get("eventVersion", "1.1"),
            "eventSource": "aws:dynamodb",
            "awsRegion": raw.get("awsRegion") or self.stream_arn.split(":")[3],
            "dynamodb": orjson.loads(record.value),
            "eventSourceARN": self.stream_arn,
        }
        if "userIdentity" in raw:
            event["userIdentity"] = raw["userIdentity"]
        return event

    def event_size(self, record: Record) -> int:
        """The change (``dynamodb``) is the record's value, as the event writes it again."""
        raw = record.meta
        arn = self.stream_arn
        size = _RECORD_SIZE + len(record.value) + len(arn) + len(raw["eventID"])
        size += len(raw["eventName"]) + len(raw.get("eventVersion", "1.1"))
        size += len(raw.get("awsRegion") or arn)  # else a part of the ARN
        if "userIdentity" in raw:  # rare: deletes by TTL
            size += _USER_IDENTITY_SIZE + len(orjson.dumps(raw["userIdentity"]))
        return size

    def lambda_event(self, partition: str, records: Sequence[Record]) -> dict[str, Any]:
        return {"Records": [self._event_record(r) for r in records]}

    def filter_view(self, record: Record) -> dict[str, Any]:
        view = self._event_record(record)
        del view["eventSourceARN"]
        return view
