"""The readers of ``AWS::Lambda::Function``, ``Version``, ``Alias``, ``Url`` and
``EventInvokeConfig``: each property is run, ignored (with why) or unsupported (with why)."""

from __future__ import annotations

import re
from pathlib import Path

from .expand import PLACEHOLDER_BUCKET, FunctionCode
from .intrinsics import located
from .plan import AliasPlan, FunctionPlan, InvokeConfigPlan, Plan, UrlPlan, VersionPlan
from .props import Props, number

# -- functions ------------------------------------------------------------------------------

_FUNCTION_IGNORED = {
    "Role": "IAM: handlers run with the worker's own AWS credentials",
    "Description": "documentation only",
    "Tags": "AWS bookkeeping",
    "Architectures": "runs on the worker's own architecture",
    "TracingConfig": "traces are streamfn's OpenTelemetry spans (the otel extra)",
    "LoggingConfig": "logs go to the worker's stdout (--log-format)",
    "KmsKeyArn": "encrypts the environment at rest on AWS; nothing is stored here",
    "CodeSigningConfigArn": "code signing is checked by AWS at deployment",
    "RuntimeManagementConfig": "the runtime is the worker's Python, or the function's "
    "own bootstrap",
    "SnapStart": "speeds up cold starts on AWS; a worker starts once",
    "EphemeralStorage": "/tmp is the worker's own",
    "RecursiveLoop": "loop detection runs inside AWS",
}
_FUNCTION_UNSUPPORTED = {
    "Layers": "layers are not loaded: install the layer's packages in the worker's image",
    "VpcConfig": "the worker reaches what its own network reaches; a VPC is not attached",
    "FileSystemConfigs": "EFS mounts are not attached: mount the file system on the worker",
    "DeadLetterConfig": "an SQS/SNS dead-letter queue is not written: failed asynchronous "
    "events stay in streamfn's dead-letter store (streamfn dlq list); use an "
    "EventInvokeConfig OnFailure destination to send them to a queue",
    "ImageConfig": "container image functions are not run",
}
#: Environment variables Lambda reserves: a template may not set them.
_RESERVED_ENV = re.compile(
    r"_HANDLER|_X_AMZN_TRACE_ID|AWS_REGION|AWS_EXECUTION_ENV|AWS_LAMBDA_.*|AWS_ACCESS_KEY"
    r"|AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN|LAMBDA_TASK_ROOT"
    r"|LAMBDA_RUNTIME_DIR|AWS_XRAY_.*"
)


def function(plan: Plan, logical_id: str) -> None:
    template = plan.template
    props = Props(template, logical_id)
    name = template.resources.name(logical_id)
    package = props.string("PackageType", "Zip")
    runtime = props.string("Runtime") or ""
    handler = props.string("Handler") or ""
    if package == "Image":
        plan.refuse(logical_id, "PackageType", "container image functions are not run")
        plan.images.add(name)
        return
    if not runtime or not handler:
        missing = "Runtime" if not runtime else "Handler"
        raise located(props.path(missing), f"function {name!r} needs a {missing}")
    code, code_dir = _code(plan, logical_id, props)
    environment = _environment(props)
    timeout = props.number("Timeout", 3)
    memory = props.integer("MemorySize", 128)
    reserved = props.integer("ReservedConcurrentExecutions")
    props.string("FunctionName")
    assert timeout is not None and memory is not None
    for key in props.rest():
        if key in _FUNCTION_IGNORED:
            plan.ignore(logical_id, key, _FUNCTION_IGNORED[key])
        elif key in _FUNCTION_UNSUPPORTED:
            plan.refuse(logical_id, key, _FUNCTION_UNSUPPORTED[key])
        else:
            plan.refuse(logical_id, key, "streamfn does not know this function property")
    if name in plan.functions:
        raise located(props.path("FunctionName"), f"function name {name!r} is used twice")
    plan.functions[name] = FunctionPlan(
        logical_id,
        name,
        runtime,
        handler,
        code,
        code_dir,
        environment,
        timeout,
        memory,
        reserved,
    )


def _code(plan: Plan, logical_id: str, props: Props) -> tuple[FunctionCode, Path | None]:
    """Where a function's code is: SAM's CodeUri (recorded before the transform), or a plain
    AWS::Lambda::Function's ``Code`` as a local path (``aws cloudformation package``'s input)
    or ``ZipFile`` source."""
    template = plan.template
    code = props.get("Code")
    path = props.path("Code")
    if (
        isinstance(code, dict)
        and code.get("S3Bucket") == PLACEHOLDER_BUCKET
        and code.get("S3Key") in template.codes
    ):
        found = template.codes[code["S3Key"]]
        path = f"Resources.{logical_id}.Properties.CodeUri"
        if found.inline is not None:
            return found, None
        uri = template.resolver.value(found.uri, path)
        code = uri
    elif isinstance(code, dict) and "ZipFile" in code:
        return FunctionCode(inline=str(code["ZipFile"])), None
    if code is None:
        code = "."
    if not isinstance(code, str) or code.startswith("s3://") or isinstance(code, dict):
        raise located(
            path,
            f"{code!r}: streamfn loads code from a local directory (CodeUri: src/); code "
            "in S3 or a container image is not fetched",
        )
    directory = (template.base_dir / code).resolve()
    if directory.is_file() and directory.suffix == ".zip":
        raise located(path, f"{code!r} is a zip file: point CodeUri at the unpacked directory")
    if not directory.is_dir():
        raise located(path, f"{code!r}: no such directory ({directory})")
    return FunctionCode(uri=code), directory


def _environment(props: Props) -> dict[str, str]:
    environment = props.mapping("Environment")
    variables = environment.get("Variables", {})
    if not isinstance(variables, dict) or set(environment) - {"Variables"}:
        raise located(props.path("Environment"), "must be {Variables: {NAME: value}}")
    result: dict[str, str] = {}
    for key, value in variables.items():
        where = props.path(f"Environment.Variables.{key}")
        if _RESERVED_ENV.fullmatch(str(key)):
            raise located(where, "is reserved by Lambda; a function may not set it")
        if isinstance(value, dict | list) or value is None:
            raise located(where, f"{value!r} is not a string")
        result[str(key)] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return result


# -- versions, aliases, URLs, async config ---------------------------------------------------


def version(plan: Plan, logical_id: str) -> None:
    props = Props(plan.template, logical_id)
    function, number = plan.template.resources.version(logical_id)
    props.get("FunctionName")
    for key in props.rest():
        if key in ("Description", "CodeSha256", "RuntimePolicy"):
            plan.ignore(logical_id, key, "AWS bookkeeping")
        elif key == "ProvisionedConcurrencyConfig":
            plan.ignore(logical_id, key, "pre-initialised environments: a worker starts once")
        else:
            plan.refuse(logical_id, key, "streamfn does not know this version property")
    plan.versions.append(VersionPlan(logical_id, function, number))


def alias(plan: Plan, logical_id: str) -> None:
    props = Props(plan.template, logical_id)
    function, name = plan.template.resources.alias(logical_id)
    props.get("FunctionName")
    props.get("Name")
    version = props.required("FunctionVersion")
    routing = props.mapping("RoutingConfig")
    weights: dict[str, float] = {}
    entries = routing.get("AdditionalVersionWeights", [])
    if set(routing) - {"AdditionalVersionWeights"} or not isinstance(entries, list):
        raise located(props.path("RoutingConfig"), "must be {AdditionalVersionWeights: [...]}")
    for i, entry in enumerate(entries):
        where = props.path(f"RoutingConfig.AdditionalVersionWeights[{i}]")
        if not isinstance(entry, dict) or set(entry) != {"FunctionVersion", "FunctionWeight"}:
            raise located(where, "must be {FunctionVersion, FunctionWeight}")
        weight = number(entry["FunctionWeight"], f"{where}.FunctionWeight")
        assert weight is not None
        weights[str(entry["FunctionVersion"])] = weight
    for key in props.rest():
        if key == "Description":
            plan.ignore(logical_id, key, "documentation only")
        elif key == "ProvisionedConcurrencyConfig":
            plan.ignore(logical_id, key, "pre-initialised environments: a worker starts once")
        else:
            plan.refuse(logical_id, key, "streamfn does not know this alias property")
    plan.aliases.append(AliasPlan(logical_id, function, name, version, weights))


def url(plan: Plan, logical_id: str) -> None:
    props = Props(plan.template, logical_id)
    target = plan.template.resources.function_name(
        props.get("TargetFunctionArn"), props.path("TargetFunctionArn")
    )
    qualifier = props.string("Qualifier") or target.qualifier
    auth = props.string("AuthType", "NONE") or "NONE"
    cors = props.get("Cors")
    if cors is not None and not isinstance(cors, dict):
        raise located(props.path("Cors"), f"{cors!r} is not a mapping")
    mode = props.string("InvokeMode", "BUFFERED")
    if mode != "BUFFERED":
        plan.refuse(logical_id, "InvokeMode", f"{mode}: responses are buffered, not streamed")
    for key in props.rest():
        plan.refuse(logical_id, key, "streamfn does not know this function URL property")
    plan.urls.append(UrlPlan(logical_id, target.name, qualifier, auth, cors))


def invoke_config(plan: Plan, logical_id: str) -> None:
    props = Props(plan.template, logical_id)
    target = plan.template.resources.function_name(
        props.get("FunctionName"), props.path("FunctionName")
    )
    qualifier = props.required("Qualifier")
    retries = props.integer("MaximumRetryAttempts")
    age = props.integer("MaximumEventAgeInSeconds")
    destinations = props.mapping("DestinationConfig")
    found: dict[str, str | None] = {"OnSuccess": None, "OnFailure": None}
    for condition, entry in destinations.items():
        where = props.path(f"DestinationConfig.{condition}")
        if condition not in found or not isinstance(entry, dict):
            raise located(where, "expected OnSuccess or OnFailure: {Destination: ARN}")
        arn = entry.get("Destination")
        if not isinstance(arn, str):
            raise located(f"{where}.Destination", f"{arn!r} is not an ARN")
        service = arn.split(":")[2] if arn.count(":") >= 5 else ""
        if service not in ("sqs", "lambda"):
            plan.refuse(
                logical_id,
                f"DestinationConfig.{condition}",
                f"{arn}: streamfn sends asynchronous results to SQS queues and functions, "
                f"not {service or 'this'} destinations",
            )
            continue
        if service == "lambda" and arn.count(":") > 6:
            plan.refuse(
                logical_id,
                f"DestinationConfig.{condition}",
                f"{arn}: a function destination invokes the function's $LATEST here, not "
                "a version or alias",
            )
            continue
        found[condition] = arn
    for key in props.rest():
        plan.refuse(logical_id, key, "streamfn does not know this EventInvokeConfig property")
    plan.invoke_configs.append(
        InvokeConfigPlan(
            logical_id,
            target.name,
            qualifier,
            retries,
            age,
            found["OnSuccess"],
            found["OnFailure"],
        )
    )
