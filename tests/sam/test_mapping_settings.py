"""Every event source mapping property of a template reaches the mapping's settings, for a
plain CloudFormation ``AWS::Lambda::EventSourceMapping`` as for SAM's events; the sources are
built (not connected) here, so no broker is needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamfn.errors import ConfigError
from streamfn.sam import LoadOptions, build_app, plan_template

from .support import write_app

TEMPLATE = """\
    Parameters:
      Batch: {Type: Number, Default: 50}
    Resources:
      Stream:
        Type: AWS::Kinesis::Stream
        Properties: {ShardCount: 2}
      Queue:
        Type: AWS::SQS::Queue
      Dlq:
        Type: AWS::SQS::Queue
      Fn:
        Type: AWS::Lambda::Function
        Properties: {Runtime: python3.12, Code: src, Handler: app.handler, Timeout: 20}
      FromStream:
        Type: AWS::Lambda::EventSourceMapping
        Properties:
          FunctionName: !GetAtt Fn.Arn
          EventSourceArn: !GetAtt Stream.Arn
          BatchSize: !Ref Batch
          MaximumBatchingWindowInSeconds: 2
          StartingPosition: AT_TIMESTAMP
          StartingPositionTimestamp: 1767225600
          BisectBatchOnFunctionError: "true"
          MaximumRetryAttempts: 4
          MaximumRecordAgeInSeconds: 3600
          ParallelizationFactor: 3
          FunctionResponseTypes: [ReportBatchItemFailures]
          TumblingWindowInSeconds: 60
          Enabled: false
          FilterCriteria:
            Filters: [{Pattern: '{"data": {"kind": ["order"]}}'}]
          DestinationConfig:
            OnFailure: {Destination: !GetAtt Dlq.Arn}
          Tags: {team: shop}
      FromQueue:
        Type: AWS::Lambda::EventSourceMapping
        Properties:
          FunctionName: !Ref Fn
          EventSourceArn: !GetAtt Queue.Arn
          BatchSize: 20
          MaximumBatchingWindowInSeconds: 5
          ScalingConfig: {MaximumConcurrency: 4}
"""
CODE = {"src/app.py": "def handler(event, context):\n    return None\n"}


def test_every_mapping_property_reaches_the_mapping(tmp_path: Path) -> None:
    plan = plan_template(write_app(tmp_path, TEMPLATE, CODE), LoadOptions())
    assert plan.unsupported == []
    built = build_app(plan, state_dir=tmp_path / "state")
    stream, queue = sorted(built.app.mappings, key=lambda m: m.source.kind)
    config = stream.config
    assert stream.source.kind == "kinesis" and queue.source.kind == "sqs"
    assert (config.batch_size, config.maximum_batching_window) == (50, 2)
    assert config.starting_position == "AT_TIMESTAMP"
    assert config.starting_position_timestamp == 1767225600
    assert config.bisect_batch_on_function_error is True
    assert (config.maximum_retry_attempts, config.maximum_record_age) == (4, 3600)
    assert config.parallelization_factor == 3
    assert config.report_batch_item_failures
    assert config.tumbling_window == 60
    assert config.enabled is False
    assert config.filter_criteria == {"Filters": [{"Pattern": '{"data": {"kind": ["order"]}}'}]}
    assert config.event_format == "lambda"
    assert stream.on_failure is not None and stream.on_failure.describe() == "sqs://Dlq"
    assert (queue.config.batch_size, queue.config.maximum_batching_window) == (20, 5)
    assert queue.config.maximum_concurrency == 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("ParallelizationFactor: 3", "ParallelizationFactor: 11"), "parallelization_factor=11"),
        (
            ("ScalingConfig: {MaximumConcurrency: 4}", "ScalingConfig: {MaxConcurrency: 4}"),
            "ScalingConfig={'MaxConcurrency': 4} is invalid",
        ),
        (
            ("MaximumRetryAttempts: 4", "MaximumRetryAttempts: four"),
            "Resources.FromStream.Properties.MaximumRetryAttempts: 'four' is not a number",
        ),
        (
            ("TumblingWindowInSeconds: 60", "Frobnicate: 60"),
            "Resources.FromStream.Frobnicate: streamfn does not know this mapping property",
        ),
    ],
)
def test_a_bad_mapping_property_names_the_mapping(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    template = TEMPLATE.replace(*change)
    with pytest.raises(ConfigError, match=r"FromStream|FromQueue") as raised:
        plan = plan_template(write_app(tmp_path, template, CODE), LoadOptions())
        build_app(plan, state_dir=tmp_path / "state")
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)
