"""Kafka (self-managed or MSK): the event source, the on-failure destination and the shared
event queue for asynchronous invocations, on aiokafka (extra ``kafka``)."""

from .._extras import require

require("kafka", "kafka", "aiokafka")

from .event_queue import KafkaEventQueue  # noqa: E402
from .source import KafkaDestination, KafkaSource  # noqa: E402

__all__ = ["KafkaDestination", "KafkaEventQueue", "KafkaSource"]
