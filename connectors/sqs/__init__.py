"""SQS: the event source (Lambda's SQS poller), the destination and the shared event queue
for asynchronous invocations, on aiobotocore (extra ``aws``).

One module each (``source``, ``destination``, ``event_queue``); the internal ``_client`` holds
what they share, and the internal ``visibility`` the heartbeat of the source and the event
queue. The public names are the ones exported here.
"""

from .._extras import require

require("sqs", "aws", "aiobotocore")

from .destination import SQSDestination  # noqa: E402
from .event_queue import SQSEventQueue  # noqa: E402
from .source import SQSSource  # noqa: E402

__all__ = ["SQSDestination", "SQSEventQueue", "SQSSource"]
