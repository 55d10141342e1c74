"""``streamfn validate``'s listing of a plan: what will run, with every setting it runs with,
what is ignored and why, and what is unsupported and why."""

from __future__ import annotations

import ast
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .handlers import bootstrap, environment, in_worker, unsupported
from .plan import FunctionPlan, MappingPlan, Plan


def describe(plan: Plan) -> str:
    template = plan.template
    options = template.options
    lines = [
        f"{template.path}: "
        + (f"SAM, expanded by aws-sam-translator {_translator()}; " if template.sam else "")
        + f"stack {options.stack_name}, region {options.region}, account {options.account_id}"
    ]
    _, overridden = environment(plan.functions, os.environ)
    lines.append("Functions:")
    for function in plan.functions.values():
        lines.extend(_function(plan, function, overridden))
    if plan.mappings:
        lines.append("Event source mappings:")
        lines.extend(_mapping(m) for m in plan.mappings)
    if plan.schedules:
        lines.append("Schedules (Event invocations):")
        for s in plan.schedules:
            target = _target(s.function, s.qualifier)
            payload = "Scheduled Event" if s.payload is None else f"input {s.payload!r}"
            state = "" if s.enabled else " DISABLED: not run"
            lines.append(f"  {s.logical_id}: {s.expression} -> {target} ({payload}){state}")
    if plan.resources:
        lines.append("Resources (reached where the AWS clients point: AWS, or AWS_ENDPOINT_URL*):")
        for logical_id, kind in plan.resources.items():
            name = template.resources.name(logical_id)
            lines.append(f"  {logical_id}: {kind} {name}")
    if plan.ignored:
        lines.append("Ignored (they change nothing on a worker):")
        lines.extend(f"  {note}" for note in plan.ignored)
    if plan.unsupported:
        lines.append("Unsupported (streamfn run refuses them unless --skip-unsupported):")
        lines.extend(f"  {note}" for note in plan.unsupported)
    return "\n".join(lines)


def _translator() -> str:
    try:
        return version("aws-sam-translator")
    except PackageNotFoundError:
        return "?"


def _target(function: str, qualifier: str | None) -> str:
    return f"{function}:{qualifier}" if qualifier else function


def _function(plan: Plan, function: FunctionPlan, overridden: dict[str, str]) -> list[str]:
    code = "inline code" if function.code.inline is not None else f"CodeUri {function.code.uri}"
    reserved = function.reserved_concurrency
    lines = [
        f"  {function.name}"
        + (f" ({function.logical_id})" if function.logical_id != function.name else "")
        + f": {function.runtime} {function.handler} "
        f"from {code}; timeout {function.timeout:g} s, memory {function.memory_size} MB"
        + (f", reserved concurrency {reserved}" if reserved is not None else "")
    ]
    path = bootstrap(function)
    if path is not None and unsupported(function) is None:
        lines.append(
            f"    custom runtime: runs {path} over the Lambda Runtime API, in a process of its "
            f"own, in {function.code_dir} (LAMBDA_TASK_ROOT)"
        )
    if function.environment:
        shown = ", ".join(
            f"{k}={overridden[k]!r} (worker environment overrides {v!r})"
            if k in overridden
            else f"{k}={v!r}"
            for k, v in function.environment.items()
        )
        lines.append(f"    environment: {shown}")
    versions = [v.number for v in plan.versions if v.function == function.name]
    if versions:
        lines.append(f"    versions: {', '.join(versions)}")
    for alias in plan.aliases:
        if alias.function == function.name:
            weights = "".join(f", {w:.0%} to {v}" for v, w in alias.weights.items())
            lines.append(f"    alias {alias.name} -> version {alias.version}{weights}")
    for url in plan.urls:
        if url.function == function.name:
            cors = f", CORS {url.cors}" if url.cors else ""
            lines.append(
                f"    function URL /urls/{function.name}/ -> {url.qualifier or '$LATEST'}, "
                f"auth {url.auth_type}{cors}"
            )
    for config in plan.invoke_configs:
        if config.function == function.name:
            parts = [
                f"{label} {value}"
                for label, value in (
                    ("retries", config.maximum_retry_attempts),
                    ("maximum event age", config.maximum_event_age),
                    ("on success", config.on_success),
                    ("on failure", config.on_failure),
                )
                if value is not None
            ]
            lines.append(f"    async ({config.qualifier}): {', '.join(parts) or 'defaults'}")
    return lines


def _mapping(mapping: MappingPlan) -> str:
    where = mapping.source.get("queue") or mapping.source.get("stream")
    if mapping.kind == "kafka":
        where = f"{','.join(mapping.source['topic'])} at {mapping.source['bootstrap_servers']}"
        where += f" (group {mapping.source['group_id']})"
    elif mapping.kind in ("rabbitmq", "activemq"):
        where = _mq_where(mapping.source)
    settings = " ".join(
        f"{k}={_short(v)}" for k, v in mapping.settings.items() if k != "EventSourceArn"
    )
    target = _target(mapping.function, mapping.qualifier)
    return f"  {mapping.logical_id}: {mapping.kind} {where} -> {target}  {settings}".rstrip()


def _mq_where(source: dict[str, Any]) -> str:
    """``queue at URL (virtual host, secret)``: what an MQ mapping reads and as whom."""
    if "url" in source:
        hosts = [e["URI"] for e in source["access"] if e["Type"] == "VIRTUAL_HOST"]
        broker = f"{source['url']} (virtual host {hosts[0] if hosts else '/'}, "
    else:
        broker = f"stomp://{source['host']}:{source['port']} ("
    return f"{source['queue']} at {broker}BASIC_AUTH secret {source['secret']})"


def _short(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def check_handlers(plan: Plan) -> None:
    """Refuse a Python handler whose module or function is not there, without running the
    module: its source is parsed, not imported (``run`` imports it)."""
    for function in plan.functions.values():
        if not in_worker(function):
            continue
        where = f"Resources.{function.logical_id}.Properties.Handler"
        module, sep, name = function.handler.rpartition(".")
        if not sep or not module or not name:
            raise ConfigError(f"{where}: {function.handler!r} is not module.function")
        if function.code.inline is not None:
            source, file = function.code.inline, "inline code"
        else:
            assert function.code_dir is not None
            found = _module_file(function.code_dir, module.replace(".", "/"))
            if found is None:
                raise ConfigError(f"{where}: no module {module!r} in {function.code_dir}")
            source, file = found.read_text(encoding="utf-8"), str(found)
        try:
            tree = ast.parse(source, file)
        except SyntaxError as exc:
            raise ConfigError(f"{where}: {file}:{exc.lineno}: {exc.msg}") from exc
        if not _defines(tree, name):
            raise ConfigError(f"{where}: {file} defines no {name!r}")


def _module_file(directory: Path, module: str) -> Path | None:
    for candidate in (directory / f"{module}.py", directory / module / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _defines(tree: ast.Module, name: str) -> bool:
    """Whether a module defines ``name`` at top level, or may (a star import, __getattr__)."""
    return _in_body(tree.body, name)


def _in_body(body: list[ast.stmt], name: str) -> bool:
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name in (name, "__getattr__"):
                return True
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(target)):
                    return True
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*" or (alias.asname or alias.name.split(".")[0]) == name:
                    return True
        elif isinstance(node, ast.If | ast.Try | ast.With):  # definitions under a condition
            handlers = [h.body for h in node.handlers] if isinstance(node, ast.Try) else []
            parts = [node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])]
            if any(_in_body(part, name) for part in [*parts, *handlers]):
                return True
    return False
