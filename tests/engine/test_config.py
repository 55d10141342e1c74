"""Validation of mapping and function settings, and the AWS-shaped dict form."""

from __future__ import annotations

from typing import Any

import pytest

from streamfn import App, ConfigError, Destination, MappingConfig, Source
from streamfn.testing import MemorySource


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("batch_size", 0, "batch_size=0 is invalid: must be an integer from 1 to 10000"),
        ("batch_size", 10_001, "batch_size=10001"),
        ("maximum_batching_window", 301, "maximum_batching_window=301 is invalid"),
        ("parallelization_factor", 11, "parallelization_factor=11"),
        ("maximum_retry_attempts", -2, "maximum_retry_attempts=-2"),
        ("maximum_record_age", 59, "maximum_record_age=59"),
        ("tumbling_window", 901, "tumbling_window=901"),
        ("maximum_concurrency", 1, "maximum_concurrency=1"),
        ("function_response_types", ("Nope",), "function_response_types=['Nope']"),
        ("event_format", "xml", "event_format='xml'"),
    ],
)
def test_invalid_mapping_setting_names_field_value_and_range(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        MappingConfig(**{field: value})  # type: ignore[arg-type]


def test_at_timestamp_needs_a_timestamp() -> None:
    with pytest.raises(ConfigError, match="starting_position_timestamp"):
        MappingConfig(starting_position="AT_TIMESTAMP")


def test_invalid_function_settings_are_refused() -> None:
    app = App()
    with pytest.raises(ConfigError, match="timeout=901"):
        app.function(name="f", timeout=901)(lambda e, c: None)
    with pytest.raises(ConfigError, match="memory_size=64"):
        app.function(name="f", memory_size=64)(lambda e, c: None)


def test_duplicate_function_name_is_refused() -> None:
    app = App()

    @app.function()
    def f(event: object, context: object) -> None: ...

    with pytest.raises(ConfigError, match="registered twice"):
        app.function(name="f")(lambda e, c: None)


def test_mapping_from_aws_dict() -> None:
    config = MappingConfig.from_aws(
        {
            "BatchSize": 500,
            "MaximumBatchingWindowInSeconds": 5,
            "ParallelizationFactor": 2,
            "BisectBatchOnFunctionError": True,
            "MaximumRetryAttempts": 3,
            "MaximumRecordAgeInSeconds": 3600,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "ScalingConfig": {"MaximumConcurrency": 5},
            "StartingPosition": "LATEST",
        }
    )
    assert config.batch_size == 500
    assert config.maximum_batching_window == 5
    assert config.parallelization_factor == 2
    assert config.bisect_batch_on_function_error
    assert config.maximum_retry_attempts == 3
    assert config.maximum_record_age == 3600
    assert config.report_batch_item_failures
    assert config.maximum_concurrency == 5
    assert config.starting_position == "LATEST"


def test_mapping_from_aws_dict_rejects_unknown_fields() -> None:
    with pytest.raises(ConfigError, match="BatchSise"):
        MappingConfig.from_aws({"BatchSise": 10})


def test_consume_keywords_override_aws_dict() -> None:
    app = App()
    app.consume(
        MemorySource(), aws={"BatchSize": 10, "ParallelizationFactor": 3}, batch_size=20, name="f"
    )(lambda e, c: None)
    config = app.mappings[0].config
    assert config.batch_size == 20
    assert config.parallelization_factor == 3


def test_consume_keyword_equal_to_the_default_still_overrides_aws_dict() -> None:
    app = App()
    app.consume(
        MemorySource(), aws={"MaximumRetryAttempts": 3, "Enabled": False}, enabled=True, name="f"
    )(lambda e, c: None)
    config = app.mappings[0].config
    assert config.enabled
    assert config.maximum_retry_attempts == 3


def test_consume_routes_function_settings_to_the_function() -> None:
    app = App()
    app.consume(MemorySource(), timeout=30, memory_size=256, maximum_retry_attempts=4, name="f")(
        lambda e, c: None
    )
    function = app.functions["f"]
    assert (function.config.timeout, function.config.memory_size) == (30, 256)
    assert function.config.maximum_retry_attempts == 2  # that keyword is the mapping's
    assert app.mappings[0].config.maximum_retry_attempts == 4
    assert app.mappings[0].config.function_timeout == 30


@pytest.mark.parametrize(
    ("decorator", "typo", "suggestion"),
    [
        ("consume", "batch_sise", "batch_size"),
        ("consume", "timout", "timeout"),
        ("function", "memory", "memory_size"),
        ("function", "batch_size", None),
    ],
)
def test_unknown_setting_is_refused_with_the_closest_name(
    decorator: str, typo: str, suggestion: str | None
) -> None:
    app = App()
    register = app.consume if decorator == "consume" else app.function
    args = (MemorySource(),) if decorator == "consume" else ()
    with pytest.raises(ConfigError, match=f"@app.{decorator}: unknown setting '{typo}'") as info:
        register(*args, **{typo: 1})
    hint = f"did you mean {suggestion!r}?"
    assert (hint in str(info.value)) == (suggestion is not None), str(info.value)


def test_function_response_types_take_one_name_and_keep_a_tuple() -> None:
    one = MappingConfig(function_response_types="ReportBatchItemFailures")
    listed = MappingConfig(function_response_types=["ReportBatchItemFailures"])
    assert one.function_response_types == listed.function_response_types
    assert one.function_response_types == ("ReportBatchItemFailures",)
    assert MappingConfig.from_aws({"FunctionResponseTypes": None}).function_response_types == ()


def test_source_defaults_fill_unset_settings() -> None:
    app = App()
    app.consume(MemorySource(), name="f")(lambda e, c: None)
    config = app.mappings[0].config
    assert config.batch_size == MemorySource.default_batch_size
    assert config.maximum_batching_window == MemorySource.default_batching_window


def test_kafka_infinite_retries_with_destination_are_capped_at_ten() -> None:
    from streamfn.testing import MemoryDestination

    class KafkaLike(MemorySource):
        kind = "kafka"

    app = App()
    app.consume(KafkaLike(), on_failure=MemoryDestination(), name="f")(lambda e, c: None)
    assert app.mappings[0].outcome.max_retries == 10


def test_invalid_filter_criteria_is_refused_at_registration() -> None:
    app = App()
    with pytest.raises(ConfigError):
        app.consume(
            MemorySource(), filter_criteria={"Filters": [{"Pattern": "{not json"}]}, name="f"
        )(lambda e, c: None)


class KinesisLike(MemorySource):
    kind = "kinesis"


class SQSLike(MemorySource):
    kind = "sqs"


SQS_ARN = "arn:aws:sqs:eu-west-1:123456789012:orders-dlq"


def on_failure_of(source: Source, aws: dict[str, object], **settings: Any) -> Destination | None:
    app = App()
    app.consume(source, aws=aws, name="f", **settings)(lambda e, c: None)
    return app.mappings[0].on_failure


def test_destination_config_sqs_queue_becomes_the_mappings_on_failure() -> None:
    from streamfn.connectors.sqs import SQSDestination

    destination = on_failure_of(
        KinesisLike(), {"DestinationConfig": {"OnFailure": {"Destination": SQS_ARN}}}
    )
    assert isinstance(destination, SQSDestination)
    assert (destination.ref.name, destination.ref.region) == ("orders-dlq", "eu-west-1")


def test_explicit_on_failure_wins_over_destination_config() -> None:
    from streamfn.testing import MemoryDestination

    explicit = MemoryDestination()
    aws: dict[str, object] = {"DestinationConfig": {"OnFailure": {"Destination": SQS_ARN}}}
    assert on_failure_of(KinesisLike(), aws, on_failure=explicit) is explicit


@pytest.mark.parametrize(
    "config",
    [{}, {"OnFailure": {}}, {"OnFailure": {"Destination": ""}}, {"OnSuccess": {}, "OnFailure": {}}],
)
def test_destination_config_without_a_destination_sets_none(config: dict[str, object]) -> None:
    assert on_failure_of(KinesisLike(), {"DestinationConfig": config}) is None


def test_destination_config_kafka_topic_is_a_topic_of_the_sources_cluster() -> None:
    from streamfn.connectors.kafka import KafkaDestination, KafkaSource

    source = KafkaSource("orders", bootstrap_servers="b1:9092,b2:9092", group_id="g")
    aws: dict[str, object] = {"DestinationConfig": {"OnFailure": {"Destination": "kafka://dlt"}}}
    destination = on_failure_of(source, aws)
    assert isinstance(destination, KafkaDestination)
    assert (destination.topic, destination.bootstrap_servers) == ("dlt", "b1:9092,b2:9092")
    loop: dict[str, object] = {
        "DestinationConfig": {"OnFailure": {"Destination": "kafka://orders"}}
    }
    with pytest.raises(ConfigError, match="is read by this mapping") as info:
        on_failure_of(source, loop)
    assert str(info.value).startswith("DestinationConfig.OnFailure.Destination='kafka://orders'")


@pytest.mark.parametrize(
    ("source", "config", "message"),
    [
        (KinesisLike(), {"OnFailure": {"Destination": "arn:aws:sns:us-east-1:1:t"}}, "no SNS"),
        (KinesisLike(), {"OnFailure": {"Destination": "arn:aws:s3:::bucket"}}, "no S3"),
        (
            KinesisLike(),
            {"OnFailure": {"Destination": "arn:aws:lambda:us-east-1:1:function:f"}},
            "accepts only an SQS queue, an SNS topic or an S3 bucket",
        ),
        (KinesisLike(), {"OnFailure": {"Destination": "kafka://dlt"}}, "accepts only"),
        (SQSLike(), {"OnFailure": {"Destination": SQS_ARN}}, "redrive policy"),
        (MemorySource(), {"OnFailure": {"Destination": SQS_ARN}}, "kind 'memory'"),
        (KinesisLike(), {"OnSuccess": {"Destination": SQS_ARN}}, "DestinationConfig.OnSuccess"),
        (KinesisLike(), {"OnFailure": SQS_ARN}, "DestinationConfig.OnFailure="),
        (KinesisLike(), {"OnFailure": {"Destination": SQS_ARN, "Type": "x"}}, "OnFailure="),
        (KinesisLike(), {"Destination": SQS_ARN}, "DestinationConfig="),
    ],
)
def test_destination_config_lambda_or_streamfn_cannot_honour_is_refused_by_name(
    source: MemorySource, config: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match="DestinationConfig") as info:
        on_failure_of(source, {"DestinationConfig": config})
    assert message in str(info.value)


@pytest.mark.parametrize(
    "field",
    [
        "Topics",
        "Queues",
        "SelfManagedEventSource",
        "SourceAccessConfigurations",
        "AmazonManagedKafkaEventSourceConfig",
        "SelfManagedKafkaEventSourceConfig",
        "ProvisionedPollerConfig",
        "DestinationConfig",
        "FunctionName",
        "EventSourceArn",
    ],
)
def test_mapping_from_aws_dict_refuses_fields_it_cannot_honour_by_name(field: str) -> None:
    with pytest.raises(ConfigError, match=f"event source mapping field {field}: "):
        MappingConfig.from_aws({"BatchSize": 10, field: ["x"]})


def test_mapping_from_aws_dict_accepts_bookkeeping_that_changes_nothing() -> None:
    config = MappingConfig.from_aws(
        {
            "BatchSize": 10,
            "Tags": {"team": "orders"},
            "KMSKeyArn": "arn:aws:kms:us-east-1:123456789012:key/abc",
            "MetricsConfig": {"Metrics": ["EventCount"]},
        }
    )
    assert config.batch_size == 10
    with pytest.raises(ConfigError, match="MetricsConfig"):
        MappingConfig.from_aws({"MetricsConfig": {"Metrics": ["Everything"]}})
    with pytest.raises(ConfigError, match="Tags"):
        MappingConfig.from_aws({"Tags": {"team": 1}})


@pytest.mark.parametrize(
    "function_name",
    [
        "f",
        "f:$LATEST",
        "000000000000:function:f",
        "arn:aws:lambda:us-east-1:000000000000:function:f",
    ],
)
def test_function_name_that_names_the_mapped_function_is_accepted(function_name: str) -> None:
    app = App()
    app.consume(MemorySource(), aws={"FunctionName": function_name}, name="f")(lambda e, c: None)
    assert app.mappings[0].function.name == "f"


@pytest.mark.parametrize(
    "function_name",
    [
        "g",
        "f:live",
        "f:1",
        "arn:aws:lambda:eu-west-1:000000000000:function:f",
        "111111111111:function:f",
        "f!",
    ],
)
def test_function_name_of_another_function_is_refused(function_name: str) -> None:
    app = App()
    with pytest.raises(ConfigError, match="FunctionName="):
        app.consume(MemorySource(), aws={"FunctionName": function_name}, name="f")(
            lambda e, c: None
        )


def test_event_source_arn_must_be_of_the_sources_service() -> None:
    accepted = App()
    accepted.consume(
        KinesisLike(), aws={"EventSourceArn": "arn:aws:kinesis:us-east-1:1:stream/s"}, name="f"
    )(lambda e, c: None)
    for source, arn in [
        (KinesisLike(), "arn:aws:sqs:us-east-1:1:q"),
        (MemorySource(), "arn:aws:kinesis:us-east-1:1:stream/s"),
    ]:
        with pytest.raises(ConfigError, match="EventSourceArn="):
            App().consume(source, aws={"EventSourceArn": arn}, name="f")(lambda e, c: None)
