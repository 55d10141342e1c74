"""The wire format the SQS and Kafka event queues share (streamfn.connectors._eventq): a message
that is not an event is refused with a reason that says what is wrong, which both queues store
with it in their dead letters."""

from __future__ import annotations

import pytest

from streamfn.asyncq import QueuedEvent
from streamfn.connectors._eventq import MalformedEvent, decode


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON ("),
        (b"[]", "a JSON list, not an object"),
        (b'{"requestId": 1}', "field 'requestId' is 1"),
        (b'{"requestId": "x"}', "no 'function' field"),
    ],
)
def test_a_message_that_is_not_an_event_is_refused_saying_what_is_wrong(
    body: bytes, reason: str
) -> None:
    with pytest.raises(MalformedEvent) as info:
        decode(body, QueuedEvent)
    assert str(info.value).startswith(reason)
