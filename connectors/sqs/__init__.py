"""SQS: the event source (Lambda's SQS poller), the destination and the shared event queue
for asynchronous invocations, on aiobotocore (extra ``aws``)."""

from .._extras import require

require("sqs", "aws", "aiobotocore")

from .event_queue import SQSEventQueue  # noqa: E402
from .source import SQSDestination, SQSSource  # noqa: E402

__all__ = ["SQSDestination", "SQSEventQueue", "SQSSource"]
