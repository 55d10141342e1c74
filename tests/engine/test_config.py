"""Validation of mapping and function settings, and the AWS-shaped dict form."""

from __future__ import annotations

import pytest

from streamfn import App, ConfigError, MappingConfig
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
            "EventSourceArn": "arn:aws:kinesis:us-east-1:1:stream/s",
            "FunctionName": "f",
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
