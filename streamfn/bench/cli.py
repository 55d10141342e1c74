"""``streamfn bench SCENARIO``: the scenario table and its argument parsing.

``streamfn.cli`` hands every ``streamfn bench ...`` command line here, by module name, so the
core never imports the bench tool. A scenario is a module with ``add_arguments(parser)`` and
``main(args) -> int``; its imports (client libraries, matplotlib) load only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

#: scenario -> (module, help)
SCENARIOS = {
    "engine": (
        "streamfn.bench.engine",
        "push in-memory records through the engine with a no-op batch handler",
    ),
    "kafka": (
        "streamfn.bench.kafka",
        "drain a Kafka topic with streamfn and with a raw aiokafka loop, side by side",
    ),
    "sqs": (
        "streamfn.bench.sqs",
        "drain an SQS queue with streamfn and with a raw aiobotocore loop, per poller count",
    ),
    "rabbitmq": ("streamfn.bench.rabbitmq", "drain a RabbitMQ queue: streamfn vs raw aio-pika"),
    "kinesis": (
        "streamfn.bench.kinesis",
        "drain a Kinesis stream with streamfn and with a raw GetRecords loop, same call rate",
    ),
    "http": (
        "streamfn.bench.http",
        "sync Invoke of a no-op function vs a bare ASGI app, then durable Event invocations",
    ),
    "environments": ("streamfn.bench.environments", "execution environment vs coroutine overhead"),
    "fill": (
        "streamfn.bench.fill",
        "write N stamped records (or a fixed rate) to a Kafka topic, SQS queue or Kinesis stream",
    ),
    "kafka-load": (
        "streamfn.bench.kafka_load",
        "load a topic and measure the worker draining it (streamfn's or yours): throughput, "
        "end-to-end p50/p95/p99, CPU, peak RSS; I/O handlers, poison records, a joining worker",
    ),
    "http-load": (
        "streamfn.bench.http_load",
        "drive the Invoke API (sync and Event) at a fixed rate: latency percentiles, errors, "
        "server CPU and RSS",
    ),
}

EXIT_USAGE = 2


def build_parser(scenario: str | None) -> argparse.ArgumentParser:
    """The parser of ``streamfn bench``; only ``scenario``'s module is imported (the others
    may need extras that are not installed)."""
    parser = argparse.ArgumentParser(
        prog="streamfn bench", description="measure throughput (see each scenario's --help)"
    )
    scenarios = parser.add_subparsers(dest="scenario", required=True)
    for name, (module_name, help_text) in SCENARIOS.items():
        sub = scenarios.add_parser(name, help=help_text)
        sub.set_defaults(bench_module=module_name)
        sub.add_argument("--json", action="store_true", help="print results as JSON")
        if name == scenario:
            try:
                importlib.import_module(module_name).add_arguments(sub)
            except ImportError as exc:
                sub.set_defaults(bench_missing=str(exc))
    return parser


def main(argv: Sequence[str]) -> int:
    """Run ``streamfn bench`` with ``argv`` (what follows ``bench`` on the command line)."""
    scenario = next((arg for arg in argv if not arg.startswith("-")), None)
    args = build_parser(scenario).parse_args(argv)
    missing = getattr(args, "bench_missing", None)
    if missing is not None:
        print(
            f"streamfn: error: bench {args.scenario} needs the 'bench' extra "
            f"(pip install 'streamfn[bench]'): {missing}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    logging.getLogger().setLevel(logging.WARNING)
    result: int = importlib.import_module(args.bench_module).main(args)
    return result
