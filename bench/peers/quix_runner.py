"""Quix Streams: a StreamingDataFrame with a synchronous per-record ``update`` (Quix has no
async handlers and no batch handler). Offsets are committed by its checkpoint, every 5 s by
default (``processing_guarantee="at-least-once"``, its default): a record's offset is stored
only after its row was processed or its error suppressed.

``on_error`` (default ``stop``): ``stop`` is Quix's default, a handler exception stops the
application (nothing after it is committed; the runner reports what was handled until then);
``skip`` passes Quix's documented ``on_processing_error`` callback one that counts the failing
record as dead-lettered and returns ``True`` (suppress), so Quix moves past it, record by
record: what a hand-written dead-letter step would do."""

from __future__ import annotations

import logging
import sys
from typing import Any

from quixstreams import Application

from bench.peers.common import Runner
from streamfn.bench import kit


def main(runner: Runner) -> None:
    skip = runner.config.get("on_error", "stop") == "skip"

    def on_processing_error(exc: Exception, row: Any, logger: logging.Logger) -> bool:
        if isinstance(exc, kit.PoisonRecord) and row is not None:
            runner.tracker.dead_lettered([row.value])
            return True
        return False

    app = Application(
        broker_address=runner["servers"],
        consumer_group=runner["group"],
        auto_offset_reset="earliest",
        loglevel="WARNING",
        use_changelog_topics=False,
        consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
        on_processing_error=on_processing_error if skip else None,
    )
    topic = app.topic(runner["topic"], value_deserializer="bytes")
    sdf = app.dataframe(topic)
    sdf.update(lambda value: runner.handle_sync([value]))
    runner.reporter.ready()
    error = None
    try:
        app.run(sdf)
    except Exception as exc:  # the app stops on a handler error; report what it did
        error = repr(exc)[:200]
    finally:
        mode = "on_processing_error skips" if skip else "stop on error (default)"
        runner.finish(mode=f"checkpoint every 5 s; {mode}", error=error)


if __name__ == "__main__":
    main(Runner(sys.argv))
