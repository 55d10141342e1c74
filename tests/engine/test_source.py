"""The source contract (streamfn.testing.contracts) for MemorySource, the in-memory stream the
engine tests run on; a restarted MemorySource stands for a new source over the same stream."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from streamfn.testing import MemorySource
from streamfn.testing.contracts import SourceContract


class MemoryStream:
    partitions = 2

    def __init__(self) -> None:
        self._source = MemorySource(["p0", "p1"])

    def source(self) -> MemorySource:
        return self._source

    async def append(self, partition: str, values: Sequence[bytes]) -> None:
        self._source.extend(partition, values)


class TestMemorySource(SourceContract):
    @pytest.fixture
    def source_harness(self) -> MemoryStream:
        return MemoryStream()
