"""The command-line side of templates: the options ``streamfn run TEMPLATE`` and ``streamfn
validate TEMPLATE`` share, and what each does with them. Kept here so ``streamfn.cli`` needs
nothing of the ``sam`` extra until a template is given."""

from __future__ import annotations

import argparse
import logging
import os
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .defaults import DEFAULT_ACCOUNT_ID

if TYPE_CHECKING:  # the rest needs the sam extra: imported when a template is given
    from .build import Built
    from .load import LoadOptions
    from .plan import Plan


log = logging.getLogger("streamfn.sam")

TEMPLATE_SUFFIXES = (".yaml", ".yml", ".json", ".template")
#: The attributes of the template options, so an app target can refuse them by name.
OPTION_NAMES = (
    "parameter_overrides", "region", "account_id", "stack_name", "resource_name",
    "kafka_bootstrap_servers", "mq_broker", "skip_unsupported", "create_resources",
)  # fmt: skip


def is_template(target: str) -> bool:
    return target.lower().endswith(TEMPLATE_SUFFIXES)


def add_options(parser: argparse.ArgumentParser, *, run: bool) -> None:
    group = parser.add_argument_group("template options (a TARGET ending in .yaml/.yml/.json)")
    group.add_argument(
        "--parameter-overrides",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="template parameter values (also ParameterKey=K,ParameterValue=V)",
    )
    group.add_argument(
        "--region",
        default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        help="AWS::Region and the region of the template's ARNs (default: AWS_REGION, "
        "AWS_DEFAULT_REGION, else us-east-1)",
    )
    group.add_argument(
        "--account-id",
        default=os.environ.get("STREAMFN_ACCOUNT_ID", DEFAULT_ACCOUNT_ID),
        help=f"AWS::AccountId and the account of the template's ARNs (env STREAMFN_ACCOUNT_ID, "
        f"default {DEFAULT_ACCOUNT_ID})",
    )
    group.add_argument(
        "--stack-name",
        default="streamfn",
        help="AWS::StackName, the app's name and the default Kafka consumer group prefix",
    )
    group.add_argument(
        "--resource-name",
        action="append",
        default=[],
        metavar="LOGICAL_ID=NAME",
        help="the physical name of a template resource (a deployed stack's queue, stream or "
        "table); repeatable",
    )
    group.add_argument(
        "--kafka-bootstrap-servers",
        action="append",
        default=[],
        metavar="[CLUSTER=]HOST:PORT,...",
        help="brokers of an MSK cluster (by ARN or logical id), or of every Kafka mapping "
        "without a CLUSTER; repeatable",
    )
    group.add_argument(
        "--mq-broker",
        action="append",
        default=[],
        metavar="[BROKER=]URL",
        help="where an Amazon MQ broker (by ARN or logical id; without BROKER: every MQ "
        "mapping's) is: amqp:// or amqps:// for RabbitMQ, stomp:// for ActiveMQ; repeatable",
    )
    if run:
        group.add_argument(
            "--skip-unsupported",
            action="store_true",
            help="run a template's supported parts, leaving out what streamfn validate "
            "lists as unsupported",
        )
        group.add_argument(
            "--create-resources",
            action="store_true",
            help="create the template's SQS queues, Kinesis streams and DynamoDB tables "
            "that are missing where the AWS clients point (AWS_ENDPOINT_URL*), e.g. on an "
            "emulator; existing ones are left as they are",
        )


def options(args: argparse.Namespace) -> LoadOptions:
    from .load import LoadOptions
    from .parameters import parse_overrides

    return LoadOptions(
        parameter_overrides=parse_overrides(args.parameter_overrides),
        region=args.region,
        account_id=args.account_id,
        stack_name=args.stack_name,
        resource_names=_pairs(args.resource_name, "--resource-name", required=True),
        kafka_bootstrap=_pairs(args.kafka_bootstrap_servers, "--kafka-bootstrap-servers"),
        mq_brokers=_brokers(args.mq_broker),
    )


def _pairs(items: list[str], option: str, *, required: bool = False) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.rpartition("=") if not required else item.partition("=")
        if (required and not sep) or not value or (required and not key):
            raise ConfigError(f"{option} {item!r}: expected KEY=VALUE")
        pairs[key] = value
    return pairs


def _brokers(items: list[str]) -> dict[str, str]:
    """``--mq-broker [BROKER=]URL`` values: BROKER (an ARN or logical id, "" for every MQ
    mapping) -> URL, each URL's scheme checked."""
    from .read_mq import broker_engine

    brokers: dict[str, str] = {}
    for item in items:
        key, sep, url = item.partition("=")
        if not sep or "://" in key:
            key, url = "", item
        broker_engine(url)
        brokers[key] = url
    return brokers


def plan(args: argparse.Namespace) -> Plan:
    try:
        from .build import plan_template
        from .report import check_handlers
    except ImportError as exc:
        raise ConfigError(
            f"{args.target}: templates need the 'sam' extra (pip install 'streamfn[sam]'): {exc}"
        ) from exc
    found = plan_template(args.target, options(args))
    try:
        check_handlers(found)
    except ConfigError as exc:
        raise ConfigError(f"{found.template.path}: {exc}") from exc
    return found


def validate(args: argparse.Namespace) -> int:
    """Print the plan: 0 when all of it runs, 1 when it has unsupported parts."""
    from .report import describe

    found = plan(args)
    print(describe(found))
    return 1 if found.unsupported else 0


def build(args: argparse.Namespace, state_dir: Any) -> Built:
    from .build import build_app, check_supported
    from .prepare import prepare

    found = plan(args)
    check_supported(found, skip_unsupported=args.skip_unsupported)
    # Before build_app imports the handlers: their module-level code may use the queues.
    created, secrets = prepare(found, create=args.create_resources)
    built = build_app(
        found, skip_unsupported=args.skip_unsupported, state_dir=state_dir, secrets=secrets
    )
    log.info(
        "template loaded",
        extra={
            "template": str(found.template.path),
            "resourcesCreated": created,
            "schedules": [f"{s.logical_id}: {s.expression}" for s in found.schedules],
            "skipped": [str(note) for note in found.unsupported],
            "environmentOverrides": sorted(built.environment_overrides),
        },
    )
    return built
