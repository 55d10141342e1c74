"""Kinesis Data Streams and DynamoDB Streams: shard pollers, resharding, and the DynamoDB lease
store that lets several workers share a stream, on aiobotocore (extra ``aws``).

The public names are the ones exported here: the sources live in :mod:`.kinesis` and
:mod:`.dynamodb_streams`, the lease store in :mod:`.leases`. The modules with a leading
underscore are internal: ``_stream`` (what both sources share: leases, shard sync, checkpoints)
and ``_shards`` (reading one shard: pacing, backoff, iterator renewal, its metrics).
"""

from .._extras import require

require("kinesis", "aws", "aiobotocore")

from ._shards import ShardMetrics  # noqa: E402
from .dynamodb_streams import DynamoDBStreamSource  # noqa: E402
from .kinesis import KinesisSource  # noqa: E402
from .leases import DynamoDBLeaseStore  # noqa: E402

__all__ = ["DynamoDBLeaseStore", "DynamoDBStreamSource", "KinesisSource", "ShardMetrics"]
