"""Loading templates: short-form tags, parameters and overrides, Conditions, the intrinsic
functions a wiring needs; and one line naming the resource and property for each way a
template can be wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamfn.errors import ConfigError
from streamfn.sam import LoadOptions, build_app, plan_template
from streamfn.sam.plan import Plan

from .support import write_app

INTRINSICS = """\
    Parameters:
      Env: {Type: String, Default: dev, AllowedValues: [dev, prod]}
      Sizes: {Type: CommaDelimitedList, Default: "64,128,256"}
      Timeout: {Type: Number, Default: 4, MinValue: 1, MaxValue: 900}
    Mappings:
      Memory: {dev: {Size: 128}, prod: {Size: 1024}}
    Conditions:
      IsProd: !Equals [!Ref Env, prod]
      NotProd: !Not [!Condition IsProd]
      Both: !And [!Condition NotProd, !Equals ["a", "a"]]
    Resources:
      Queue:
        Type: AWS::SQS::Queue
        Properties: {QueueName: !Join ["-", [orders, !Ref Env]]}
      ProdOnly:
        Type: AWS::SQS::Queue
        Condition: IsProd
      Fn:
        Type: AWS::Lambda::Function
        Properties:
          FunctionName: !Sub "${AWS::StackName}-fn"
          Runtime: python3.12
          Handler: app.handler
          Code: src
          Timeout: !Ref Timeout
          MemorySize: !FindInMap [Memory, !Ref Env, Size]
          Environment:
            Variables:
              QUEUE_ARN: !GetAtt Queue.Arn
              QUEUE_URL: !Ref Queue
              SIZE: !Select [1, !Ref Sizes]
              PARTS: !Select [0, !Split ["/", "a/b"]]
              MODE: !If [IsProd, fast, !If [Both, careful, never]]
              LITERAL: !Sub "${!NotAVariable}-${Env}"
              MAPPED: !Sub ["${X}+${AWS::Region}", {X: !Ref Env}]
              DROPPED: !If [IsProd, x, !Ref AWS::NoValue]
"""
CODE = {"src/app.py": "def handler(event, context):\n    return event\n"}


def plan_of(
    tmp_path: Path, template: str, code: dict[str, str] | None = None, **options: object
) -> Plan:
    return plan_template(
        write_app(tmp_path, template, CODE if code is None else code), LoadOptions(**options)
    )  # type: ignore[arg-type]


def test_intrinsics_parameters_and_conditions_resolve_as_cloudformation_does(
    tmp_path: Path,
) -> None:
    plan = plan_of(tmp_path, INTRINSICS, stack_name="shop", region="eu-west-1")
    (function,) = plan.functions.values()
    assert function.name == "shop-fn"
    assert (function.timeout, function.memory_size) == (4.0, 128)
    assert function.environment == {
        "QUEUE_ARN": "arn:aws:sqs:eu-west-1:123456789012:orders-dev",
        "QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/123456789012/orders-dev",
        "SIZE": "128",
        "PARTS": "a",
        "MODE": "careful",
        "LITERAL": "${NotAVariable}-dev",
        "MAPPED": "dev+eu-west-1",
    }
    assert set(plan.resources) == {"Queue"}  # ProdOnly's condition is false


def test_parameter_overrides_change_conditions_and_values(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, INTRINSICS, parameter_overrides={"Env": "prod", "Timeout": "30"})
    (function,) = plan.functions.values()
    assert function.memory_size == 1024 and function.timeout == 30.0
    assert function.environment["MODE"] == "fast" and function.environment["DROPPED"] == "x"
    assert set(plan.resources) == {"Queue", "ProdOnly"}


BROKEN_FUNCTION = """\
    Resources:
      Fn:
        Type: AWS::Lambda::Function
        Properties:
          Runtime: python3.12
          Handler: app.handler
          Code: src
          {line}
"""


@pytest.mark.parametrize(
    ("template", "overrides", "message"),
    [
        ("Resources: [a", {}, "template.yaml:1: not a valid YAML or JSON template"),
        ("Resources:\n  A: {Type: X}\n  A: {Type: Y}\n", {}, "line 3: key 'A' appears twice"),
        (INTRINSICS, {"Env": "test"}, "--parameter-overrides Env='test': not one of AllowedValues"),
        (INTRINSICS, {"Timeout": "abc"}, "--parameter-overrides Timeout='abc': not a number"),
        (INTRINSICS, {"Timeout": "0"}, "--parameter-overrides Timeout='0': below MinValue 1"),
        (
            INTRINSICS,
            {"Nope": "1"},
            "--parameter-overrides Nope: the template has no such parameter",
        ),
        (
            BROKEN_FUNCTION.format(line="Timeout: !Frobnicate 3"),
            {},
            "Resources.Fn.Properties.Timeout.Fn::Frobnicate: unknown intrinsic function",
        ),
        (
            BROKEN_FUNCTION.format(line="Timeout: !ImportValue shared-timeout"),
            {},
            "Resources.Fn.Properties.Timeout.Fn::ImportValue: Fn::ImportValue is not supported",
        ),
        (
            BROKEN_FUNCTION.format(line="Timeout: !Ref Missing"),
            {},
            "Resources.Fn.Properties.Timeout.Ref: Ref 'Missing' names no parameter or resource",
        ),
        (
            BROKEN_FUNCTION.format(line="Timeout: soon"),
            {},
            "Resources.Fn.Properties.Timeout: 'soon' is not a number",
        ),
        (
            BROKEN_FUNCTION.format(line="Environment: {Variables: {AWS_REGION: x}}"),
            {},
            "Resources.Fn.Properties.Environment.Variables.AWS_REGION: is reserved by Lambda",
        ),
        (
            BROKEN_FUNCTION.format(line="MemorySize: !GetAtt Fn.Nothing"),
            {},
            "Resources.Fn.Properties.MemorySize.Fn::GetAtt: Fn (AWS::Lambda::Function) has no "
            "attribute 'Nothing'",
        ),
        (
            "Transform: AWS::Serverless-2016-10-31\nResources:\n  Fn:\n"
            "    Type: AWS::Serverless::Function\n    Properties: {Handler: app.handler}\n",
            {},
            "AWS::Serverless-2016-10-31: Resource with id [Fn] is invalid.",
        ),
    ],
)
def test_a_broken_template_is_one_line_naming_where(
    tmp_path: Path, template: str, overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        plan_of(tmp_path, template, parameter_overrides=overrides)
    text = str(raised.value)
    assert "\n" not in text
    assert text.startswith(str(tmp_path / "template.yaml"))
    assert message in text


def test_a_missing_handler_names_the_function_and_its_handler(tmp_path: Path) -> None:
    template = BROKEN_FUNCTION.format(line="Description: x").replace("app.handler", "app.nope")
    with pytest.raises(
        ConfigError,
        match=r"Resources\.Fn\.Properties\.Handler: module 'app' "
        r"has no function 'nope'",
    ):
        build_app(plan_of(tmp_path, template), state_dir=tmp_path / "s")
    missing = template.replace("app.nope", "missing.handler")
    with pytest.raises(
        ConfigError,
        match=r"Resources\.Fn\.Properties\.Handler: no module "
        r"'missing'",
    ):
        build_app(plan_of(tmp_path, missing), state_dir=tmp_path / "s")


MIXED = """\
    Transform: AWS::Serverless-2016-10-31
    Globals:
      Function: {CodeUri: src/}
    Resources:
      Node:
        Type: AWS::Serverless::Function
        Properties: {Runtime: nodejs20.x, Handler: index.handler}
      Py:
        Type: AWS::Serverless::Function
        Properties:
          Runtime: python3.12
          Handler: app.handler
          Layers: [arn:aws:lambda:us-east-1:123456789012:layer:deps:1]
          Events:
            Upload:
              Type: S3
              Properties: {Bucket: !Ref Uploads, Events: s3:ObjectCreated:*}
      Uploads:
        Type: AWS::S3::Bucket
"""


def test_unsupported_parts_are_listed_and_refused_unless_skipped(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, MIXED)
    notes = [str(n) for n in plan.unsupported]
    assert any(
        n.startswith("Node.Runtime: function 'Node' uses runtime 'nodejs20.x'") for n in notes
    )
    assert any(n.startswith("Py.Layers: layers are not loaded") for n in notes)
    assert any(n.startswith("Uploads.NotificationConfiguration: S3 push events") for n in notes)
    with pytest.raises(
        ConfigError, match=r"Resources\.Py\.Layers: .*\(and 2 more\).*--skip-unsupported"
    ):
        build_app(plan, state_dir=tmp_path / "s")
    built = build_app(plan, skip_unsupported=True, state_dir=tmp_path / "s")
    assert sorted(built.app.functions) == ["Py"]
    assert built.skipped == ["Node"]


def test_conflicting_environment_values_are_refused_naming_both_functions(tmp_path: Path) -> None:
    template = """\
        Transform: AWS::Serverless-2016-10-31
        Globals:
          Function: {CodeUri: src/, Runtime: python3.12, Handler: app.handler}
        Resources:
          A:
            Type: AWS::Serverless::Function
            Properties: {Environment: {Variables: {TABLE: orders}}}
          B:
            Type: AWS::Serverless::Function
            Properties: {Environment: {Variables: {TABLE: invoices}}}
    """
    with pytest.raises(
        ConfigError,
        match=r"Resources\.B\.Properties\.Environment\.Variables\."
        r"TABLE: functions 'A' and 'B' set TABLE to different values",
    ):
        build_app(plan_of(tmp_path, template), state_dir=tmp_path / "s")


def test_same_module_name_in_two_code_directories_is_refused(tmp_path: Path) -> None:
    template = """\
        Transform: AWS::Serverless-2016-10-31
        Globals:
          Function: {Runtime: python3.12, Handler: app.handler}
        Resources:
          A:
            Type: AWS::Serverless::Function
            Properties: {CodeUri: a/}
          B:
            Type: AWS::Serverless::Function
            Properties: {CodeUri: b/}
    """
    code = {"a/app.py": CODE["src/app.py"], "b/app.py": CODE["src/app.py"]}
    with pytest.raises(ConfigError, match="functions 'A' and 'B' both have a module 'app'"):
        build_app(plan_of(tmp_path, template, code), state_dir=tmp_path / "s")


def test_the_worker_environment_overrides_a_template_variable_and_validate_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamfn.sam.report import describe

    monkeypatch.setenv("QUEUE_URL", "http://127.0.0.1:5000/123456789012/orders-dev")
    plan = plan_of(tmp_path, INTRINSICS)
    assert (
        "QUEUE_URL='http://127.0.0.1:5000/123456789012/orders-dev' (worker environment "
        "overrides 'https://sqs.us-east-1.amazonaws.com/123456789012/orders-dev')"
    ) in describe(plan)
    built = build_app(plan, state_dir=tmp_path / "s")
    assert built.environment_overrides == {
        "QUEUE_URL": "http://127.0.0.1:5000/123456789012/orders-dev"
    }
    import os

    assert os.environ["QUEUE_URL"] == "http://127.0.0.1:5000/123456789012/orders-dev"
    assert os.environ["MODE"] == "careful"  # set from the template before the import


async def test_inline_code_runs_as_module_index(tmp_path: Path) -> None:
    template = """\
        Transform: AWS::Serverless-2016-10-31
        Resources:
          Echo:
            Type: AWS::Serverless::Function
            Properties:
              Runtime: python3.12
              Handler: index.handler
              InlineCode: |
                def handler(event, context):
                    return {"echo": event, "name": context.function_name}
    """
    built = build_app(plan_of(tmp_path, template, {}), state_dir=tmp_path / "s")
    async with built.app.running():
        result = await built.app.invoke("Echo", {"a": 1})
    assert result.value == {"echo": {"a": 1}, "name": "Echo"}
