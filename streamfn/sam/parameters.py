"""Template parameters: their declared values, ``--parameter-overrides``, and the checks
CloudFormation makes on them (type, AllowedValues, AllowedPattern, lengths, bounds), so a bad
value stops the load with the parameter's name rather than reaching a handler.

Values stay strings, as ``Ref`` of a parameter returns them on AWS (a ``List<...>`` or
``CommaDelimitedList`` becomes a list of strings); properties that want numbers convert them
where they are read. ``AWS::SSM::Parameter::Value<...>`` types would be read from Parameter
Store: here the override (or default) is taken as the value itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError

_LIST_TYPES = ("CommaDelimitedList", "List<")


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``Key=Value`` items (as ``sam deploy --parameter-overrides`` takes them, also
    ``ParameterKey=K,ParameterValue=V``) as a dict."""
    overrides: dict[str, str] = {}
    for item in items:
        match = re.fullmatch(r"ParameterKey=([^,]+),ParameterValue=(.*)", item, re.DOTALL)
        key, sep, value = (match[1], "=", match[2]) if match else item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--parameter-overrides {item!r}: expected Key=Value")
        overrides[key] = value
    return overrides


def resolve_parameters(
    declared: object, overrides: Mapping[str, str], pseudo: Mapping[str, Any]
) -> dict[str, Any]:
    """Every parameter's value, checked; the pseudo parameters (``AWS::Region`` ...) added."""
    if declared is None:
        declared = {}
    if not isinstance(declared, dict):
        raise ConfigError(f"Parameters: must be a mapping, not {declared!r}")
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        known = ", ".join(sorted(declared)) or "none"
        raise ConfigError(
            f"--parameter-overrides {unknown[0]}: the template has no such parameter ({known})"
        )
    values: dict[str, Any] = dict(pseudo)
    for name, spec in declared.items():
        path = f"Parameters.{name}"
        if not isinstance(spec, dict) or not isinstance(spec.get("Type"), str):
            raise ConfigError(f"{path}.Type: a parameter needs a Type")
        if name in overrides:
            raw: Any = overrides[name]
            where = f"--parameter-overrides {name}"
        elif "Default" in spec:
            raw = spec["Default"]
            where = f"{path}.Default"
        else:
            raise ConfigError(
                f"{path}: has no Default; give it with --parameter-overrides {name}=VALUE"
            )
        values[name] = _checked(spec, raw, where)
    return values


def _checked(spec: Mapping[str, Any], raw: Any, where: str) -> Any:
    kind: str = spec["Type"]
    if isinstance(raw, list):
        raw = ",".join(str(v) for v in raw)
    text = ("true" if raw else "false") if isinstance(raw, bool) else str(raw)
    if kind.startswith(_LIST_TYPES):
        items = [item.strip() for item in text.split(",")] if text else []
        if kind == "List<Number>":
            for item in items:
                _number(item, where)
        for item in items:
            _allowed(spec, item, where)
        return items
    if kind == "Number":
        number = _number(text, where)
        if "MinValue" in spec and number < float(spec["MinValue"]):
            raise ConfigError(f"{where}={text!r}: below MinValue {spec['MinValue']}")
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            raise ConfigError(f"{where}={text!r}: above MaxValue {spec['MaxValue']}")
    elif kind == "String" or kind.startswith("AWS::"):
        if "MinLength" in spec and len(text) < int(spec["MinLength"]):
            raise ConfigError(f"{where}={text!r}: shorter than MinLength {spec['MinLength']}")
        if "MaxLength" in spec and len(text) > int(spec["MaxLength"]):
            raise ConfigError(f"{where}={text!r}: longer than MaxLength {spec['MaxLength']}")
    else:
        raise ConfigError(f"{where}: unknown parameter Type {kind!r}")
    _allowed(spec, text, where)
    return text


def _number(text: str, where: str) -> float:
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ConfigError(f"{where}={text!r}: not a number")
    return number


def _allowed(spec: Mapping[str, Any], text: str, where: str) -> None:
    allowed = spec.get("AllowedValues")
    if allowed is not None and text not in [str(v) for v in allowed]:
        raise ConfigError(f"{where}={text!r}: not one of AllowedValues {list(allowed)}")
    pattern = spec.get("AllowedPattern")
    if pattern is not None and re.fullmatch(str(pattern), text) is None:
        raise ConfigError(f"{where}={text!r}: does not match AllowedPattern {pattern!r}")
