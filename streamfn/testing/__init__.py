"""Test support for applications built on streamfn, and for streamfn's own suite.

- In-memory doubles that implement the real protocols, so engine semantics can be pinned
  without a broker: :class:`MemorySource` (partitioned, a stream), :class:`MemoryQueue` (a
  queue, SQS-like), :class:`MemoryDestination` (keeps what it receives).
- :func:`wait_until`: wait on a condition with a deadline.
- Local brokers on free loopback ports (:mod:`streamfn.testing.servers`) and pytest fixtures
  built on them: enable them in a suite with
  ``pytest_plugins = ["streamfn.testing.pytest_plugin"]`` in its ``conftest.py``.
- Contract test classes (:mod:`streamfn.testing.contracts`): the scenarios every event queue
  and every partitioned source must pass, to subclass for your own implementation. They need
  pytest and pytest-asyncio, so this package does not import them: import that module.

Example::

    from streamfn import App
    from streamfn.testing import MemorySource, wait_until

    async def test_every_record_arrives() -> None:
        source = MemorySource(["p0"])
        seen = []
        app = App("test")

        @app.consume(source)
        async def handler(batch, context):
            seen.extend(batch)

        source.append("p0", b"hello")
        async with app.running():
            await wait_until(lambda: len(seen) == 1)
"""

from .memory import MemoryDestination, MemoryQueue, MemorySource
from .wait import wait_until

__all__ = ["MemoryDestination", "MemoryQueue", "MemorySource", "wait_until"]
