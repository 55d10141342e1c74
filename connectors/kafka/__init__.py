"""Kafka (self-managed or MSK): the event source, the on-failure destination and the shared
event queue for asynchronous invocations, on aiokafka (extra ``kafka``), and how they
authenticate (``security``; MSK IAM needs the extra ``kafka-iam``).

One module each (``source``, ``destination``, ``event_queue``, ``security``); the internal
``_client`` holds what they share. The public names are the ones exported here.
"""

from .._extras import require

require("kafka", "kafka", "aiokafka")

from .destination import KafkaDestination  # noqa: E402
from .event_queue import KafkaEventQueue  # noqa: E402
from .security import KafkaSecurity, MskIamTokenProvider, Secret  # noqa: E402
from .source import KafkaSource  # noqa: E402

__all__ = [
    "KafkaDestination",
    "KafkaEventQueue",
    "KafkaSecurity",
    "KafkaSource",
    "MskIamTokenProvider",
    "Secret",
]
