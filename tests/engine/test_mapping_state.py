"""A source that fails for good disables its own mapping only, as Lambda disables a mapping whose
access was refused or whose stream was deleted: the reason is kept (health, metrics, one log
line), the other mappings keep processing and the app stops cleanly. A source that cannot be
reached is reconnected with a backoff instead."""

from __future__ import annotations

import asyncio

from streamfn import App, Batch, Context, SourceError, SourceUnreachable
from streamfn.config import MappingConfig
from streamfn.source import AssignmentListener
from streamfn.testing import MemorySource, wait_until

from .conftest import Line
from .test_esm_metrics import scrape


class DyingSource(MemorySource):
    """Assigns its partitions, lets them fetch, then fails for good."""

    def __init__(self) -> None:
        super().__init__(("d0",))
        self.fail = asyncio.Event()

    async def run(self, config: MappingConfig, listener: AssignmentListener) -> None:
        await listener.assigned(list(self.logs))
        await self.fail.wait()
        raise SourceError("stream deleted")


class FlakySource(MemorySource):
    """Unreachable on its first ``failures`` runs, then a working memory source."""

    def __init__(self, failures: int) -> None:
        super().__init__(("f0",))
        self.failures = failures
        self.runs = 0

    async def run(self, config: MappingConfig, listener: AssignmentListener) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            raise SourceUnreachable("cannot connect to the broker")
        await super().run(config, listener)


async def test_a_fatal_source_error_disables_only_its_mapping(lines: list[Line]) -> None:
    dying, healthy = DyingSource(), MemorySource(("h0",))
    app = App("state")
    seen: list[bytes] = []

    @app.consume(dying, name="doomed")
    async def doomed(batch: Batch, context: Context) -> None:
        await asyncio.Event().wait()  # holds its record in flight until the source dies

    @app.consume(healthy, name="fine")
    async def fine(batch: Batch, context: Context) -> None:
        seen.extend(record.value for record in batch)

    async with asyncio.timeout(15), app.running():
        dying.append("d0", b"held")
        doomed_mapping = app.mappings[0]
        held = doomed_mapping.stats.partition("d0")
        await wait_until(lambda: held.in_flight == 1)
        dying.fail.set()
        await wait_until(lambda: doomed_mapping.state == "Disabled")
        healthy.extend("h0", [b"a", b"b"])  # the other mapping goes on
        await wait_until(lambda: seen == [b"a", b"b"])

        assert doomed_mapping.stats.fatal == "SourceError: stream deleted"
        assert doomed_mapping.state_reason == "PROBLEM: SourceError: stream deleted"
        assert doomed_mapping.runners == {}
        assert held.in_flight == 0  # abandoned: read again from the checkpoint
        live, ready = app.health.live(), app.health.ready(running=True)
        disabled = [
            {
                "function": "doomed",
                "mapping": dying.describe(),
                "state": "Disabled",
                "reason": "PROBLEM: SourceError: stream deleted",
            }
        ]
        assert (live.ok, live.body) == (True, {"status": "ok", "disabled": disabled})
        assert (ready.ok, ready.body) == (True, {"status": "ready", "disabled": disabled})
        values = scrape(app)
        assert (
            values[f'streamfn_esm_enabled{{function="doomed",mapping="{dying.describe()}"}}'] == 0
        )
        assert (
            values[f'streamfn_esm_enabled{{function="fine",mapping="{healthy.describe()}"}}'] == 1
        )
    [line] = [line for line in lines if line["message"].startswith("source failed")]
    assert line["level"] == "ERROR"
    assert (line["errorType"], line["errorMessage"]) == ("SourceError", "stream deleted")
    assert line["state"] == "Disabled"
    assert "until the worker restarts" in line["next"]


async def test_an_unreachable_source_is_reconnected(lines: list[Line]) -> None:
    source = FlakySource(failures=1)
    app = App("reconnect")
    seen: list[bytes] = []

    @app.consume(source)
    async def handler(batch: Batch, context: Context) -> None:
        seen.extend(record.value for record in batch)

    async with asyncio.timeout(15), app.running():
        mapping = app.mappings[0]
        await wait_until(lambda: mapping.stats.unreachable is not None)
        ready = app.health.ready(running=True)
        assert not ready.ok
        assert ready.body["reasons"] == [
            {
                "function": "handler",
                "mapping": source.describe(),
                "reason": "source unreachable",
                "error": "cannot connect to the broker",
            }
        ]
        assert app.health.live().ok  # waiting for a broker is not a reason to restart
        assert mapping.state_reason == "PROBLEM: Connection error: cannot connect to the broker"
        source.extend("f0", [b"x"])
        await wait_until(lambda: seen == [b"x"])  # after the 1 s backoff
        assert source.runs == 2
        assert mapping.stats.unreachable is None and mapping.state == "Enabled"
        assert app.health.ready(running=True).ok
    [line] = [line for line in lines if line["message"].startswith("source unreachable")]
    assert line["level"] == "ERROR"
    assert line["next"].startswith("reconnect in ")


async def test_stop_while_reconnecting_returns_at_once() -> None:
    source = FlakySource(failures=1_000)
    app = App("give-up")

    @app.consume(source)
    async def handler(batch: Batch, context: Context) -> None:
        pass

    async with asyncio.timeout(5):
        async with app.running():
            await wait_until(lambda: source.runs >= 1)
        assert app.mappings[0].stats.unreachable is not None
