"""Quix Streams: a StreamingDataFrame with a synchronous per-record ``update`` (Quix has no
async handlers and no batch handler). Offsets are committed by its checkpoint, every 5 s by
default: its at-least-once default. A handler exception stops the application (Quix's
default): the runner reports what was handled until then."""

from __future__ import annotations

import sys

from quixstreams import Application

from bench.peers.common import Runner


def main(runner: Runner) -> None:
    app = Application(
        broker_address=runner["servers"],
        consumer_group=runner["group"],
        auto_offset_reset="earliest",
        loglevel="WARNING",
        use_changelog_topics=False,
        consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
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
        runner.finish(mode="checkpoint every 5 s (default)", error=error)


if __name__ == "__main__":
    main(Runner(sys.argv))
