"""Kinesis Data Streams and DynamoDB Streams: shard pollers, resharding, and the DynamoDB lease
store that lets several workers share a stream, on aiobotocore (extra ``aws``)."""

from .._extras import require

require("kinesis", "aws", "aiobotocore")

from .leases import DynamoDBLeaseStore  # noqa: E402
from .source import DynamoDBStreamSource, KinesisSource, ShardMetrics  # noqa: E402

__all__ = ["DynamoDBLeaseStore", "DynamoDBStreamSource", "KinesisSource", "ShardMetrics"]
