"""Which delivery tags of a channel one ``basic.ack`` / ``basic.nack`` frame can settle.

RabbitMQ numbers a channel's deliveries 1, 2, 3, ... and a frame with ``multiple`` settles
every unsettled tag up to its own. A batch of thousands acknowledged tag by tag costs
thousands of frames (most of a raw consumer's advantage), so a batch that is exactly the
oldest unsettled tags is settled with one frame. Anything else (a batch filtered out while an
older one is still in the handler, messages of a failed batch held for their retry delay) is
settled tag by tag, so ``multiple`` never reaches a message still in flight.
"""

from __future__ import annotations

from collections.abc import Sequence


class TagLedger:
    """The settled tags of one channel: all up to ``floor``, and some above it."""

    __slots__ = ("above", "floor")

    def __init__(self) -> None:
        self.floor = 0  # every tag <= floor is settled
        self.above: set[int] = set()  # settled tags > floor

    def settle(self, tags: Sequence[int]) -> list[tuple[int, bool]]:
        """The ``(tag, multiple)`` frames that settle ``tags`` (ascending, unsettled), and
        records them as settled."""
        if not tags:
            return []
        floor = self.floor
        last = tags[-1]
        if tags[0] == floor + 1 and len(tags) == last - floor:
            frames = [(last, True)] if len(tags) > 1 else [(last, False)]
            self.floor = last
        else:
            frames = [(tag, False) for tag in tags]
            self.above.update(tags)
        above = self.above
        if above:
            floor = self.floor
            while floor + 1 in above:
                floor += 1
                above.discard(floor)
            self.floor = floor
        return frames
