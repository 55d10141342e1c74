"""CloudFormation's intrinsic functions and conditions, resolved once at load time.

A template is resolved the way CloudFormation resolves it before it creates anything: every
``Ref``, ``Fn::GetAtt``, ``Fn::Sub``, ``Fn::Join``, ``Fn::If``, ``Fn::Select``, ``Fn::Split``,
``Fn::FindInMap``, ``Fn::Base64``, ``Fn::Equals``/``And``/``Or``/``Not`` and ``Condition``
becomes a plain value, so the mapping code reads plain values only. What a resource's ``Ref``
and attributes are is asked of :class:`ResourceValues` (``resources.py``), which knows each
resource type. Anything else is refused by name with the template path it was found at:
``Fn::ImportValue`` and ``Fn::GetAZs`` need a deployed account, and an unknown function is most
often a typo that would otherwise pass through as a dict.

``AWS::NoValue`` removes the property (or list item) it is the value of, as on AWS.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import Any, Protocol

from ..errors import ConfigError


class _NoValue:
    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE: Any = _NoValue()

_SUB = re.compile(r"\$\{([^}]*)\}")
_NOT_HERE = {
    "Fn::ImportValue": "it reads another stack's outputs, which exist only in a deployed account",
    "Fn::GetAZs": "availability zones exist only in a deployed account",
    "Fn::Cidr": "network ranges configure a VPC, which streamfn does not create",
    "Fn::Transform": "macros run inside CloudFormation; expand the template first",
    "Fn::ForEach": "needs the AWS::LanguageExtensions transform, which streamfn does not run",
}


def located(path: str, message: str) -> ConfigError:
    """The error of a template value: its path in the template, then what is wrong."""
    return ConfigError(f"{path}: {message}")


class ResourceValues(Protocol):
    """What ``Ref`` and ``Fn::GetAtt`` of the template's resources return."""

    def has(self, logical_id: str) -> bool: ...

    def ref(self, logical_id: str, path: str) -> Any: ...

    def get_att(self, logical_id: str, attribute: str, path: str) -> Any: ...


class Resolver:
    """Resolves the intrinsic functions in template values, given the parameters' values (the
    pseudo parameters among them), the Conditions and Mappings sections and the resources."""

    def __init__(
        self,
        parameters: Mapping[str, Any],
        conditions: Mapping[str, Any],
        mappings: Mapping[str, Any],
        resources: ResourceValues,
    ) -> None:
        self.parameters = parameters
        self.conditions = conditions
        self.mappings = mappings
        self.resources = resources
        self._evaluated: dict[str, bool] = {}
        self._evaluating: list[str] = []

    def condition(self, name: object, path: str) -> bool:
        """The value of the named condition (each evaluated once; a cycle is refused)."""
        if not isinstance(name, str) or name not in self.conditions:
            known = ", ".join(sorted(self.conditions)) or "none defined"
            raise located(path, f"condition {name!r} is not in Conditions ({known})")
        if name in self._evaluated:
            return self._evaluated[name]
        if name in self._evaluating:
            raise located(path, f"condition {name!r} depends on itself")
        self._evaluating.append(name)
        try:
            value = self.value(self.conditions[name], f"Conditions.{name}")
        finally:
            self._evaluating.pop()
        if not isinstance(value, bool):
            raise located(f"Conditions.{name}", f"{value!r} is not a condition (true or false)")
        self._evaluated[name] = value
        return value

    def value(self, node: Any, path: str) -> Any:
        """``node`` with every intrinsic function resolved; NO_VALUE for ``AWS::NoValue``."""
        if isinstance(node, dict):
            if len(node) == 1:
                ((key, argument),) = node.items()
                if key == "Ref" or (isinstance(key, str) and key.startswith("Fn::")):
                    return self._function(key, argument, f"{path}.{key}")
                if key == "Condition" and path.startswith("Conditions."):
                    return self.condition(argument, f"{path}.Condition")
            resolved = {}
            for key, item in node.items():
                item = self.value(item, f"{path}.{key}")
                if item is not NO_VALUE:
                    resolved[key] = item
            return resolved
        if isinstance(node, list):
            items = (self.value(item, f"{path}[{i}]") for i, item in enumerate(node))
            return [item for item in items if item is not NO_VALUE]
        return node

    def _function(self, name: str, argument: Any, path: str) -> Any:
        handler = _FUNCTIONS.get(name)
        if handler is None:
            if name in _NOT_HERE:
                raise located(path, f"{name} is not supported: {_NOT_HERE[name]}")
            known = ", ".join(sorted(_FUNCTIONS))
            raise located(path, f"unknown intrinsic function {name} (known: {known})")
        return handler(self, argument, path)

    def string(self, node: Any, path: str) -> str:
        value = self.value(node, path)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float | str):
            return str(value)
        raise located(path, f"{value!r} is not a string")

    def items(self, node: Any, path: str) -> list[Any]:
        value = self.value(node, path)
        if not isinstance(value, list):
            raise located(path, f"{value!r} is not a list")
        return value

    # -- the functions ---------------------------------------------------------------------

    def _ref(self, argument: Any, path: str) -> Any:
        if not isinstance(argument, str):
            raise located(path, f"Ref takes a name, not {argument!r}")
        if argument == "AWS::NoValue":
            return NO_VALUE
        if argument in self.parameters:
            return self.parameters[argument]
        if self.resources.has(argument):
            return self.resources.ref(argument, path)
        raise located(path, f"Ref {argument!r} names no parameter or resource of the template")

    def _get_att(self, argument: Any, path: str) -> Any:
        if isinstance(argument, str):
            argument = argument.split(".", 1)
        if not (isinstance(argument, list) and len(argument) == 2):
            raise located(path, f"Fn::GetAtt takes [resource, attribute], not {argument!r}")
        logical_id = argument[0]
        attribute = self.string(argument[1], f"{path}[1]")
        if not isinstance(logical_id, str) or not self.resources.has(logical_id):
            raise located(path, f"Fn::GetAtt: {logical_id!r} is no resource of the template")
        return self.resources.get_att(logical_id, attribute, path)

    def _sub(self, argument: Any, path: str) -> str:
        variables: dict[str, Any] = {}
        if isinstance(argument, list) and len(argument) == 2:
            text, given = argument
            if not isinstance(given, dict):
                raise located(path, f"Fn::Sub's variables must be a mapping, not {given!r}")
            variables = {k: self.string(v, f"{path}[1].{k}") for k, v in given.items()}
        else:
            text = argument
        if not isinstance(text, str):
            raise located(path, f"Fn::Sub takes a string or [string, variables], not {text!r}")

        def replace(match: re.Match[str]) -> str:
            name = match[1]
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and name.split(".", 1)[0] not in self.parameters:
                logical_id, attribute = name.split(".", 1)
                return self.string({"Fn::GetAtt": [logical_id, attribute]}, path)
            return self.string({"Ref": name}, path)

        return _SUB.sub(replace, text)

    def _join(self, argument: Any, path: str) -> str:
        if not (isinstance(argument, list) and len(argument) == 2):
            raise located(path, f"Fn::Join takes [delimiter, [values]], not {argument!r}")
        delimiter = self.string(argument[0], f"{path}[0]")
        values = self.items(argument[1], f"{path}[1]")
        return delimiter.join(self.string(v, f"{path}[1][{i}]") for i, v in enumerate(values))

    def _if(self, argument: Any, path: str) -> Any:
        if not (isinstance(argument, list) and len(argument) == 3):
            raise located(path, f"Fn::If takes [condition, if-true, if-false], not {argument!r}")
        chosen = 1 if self.condition(argument[0], f"{path}[0]") else 2
        return self.value(argument[chosen], f"{path}[{chosen}]")

    def _select(self, argument: Any, path: str) -> Any:
        if not (isinstance(argument, list) and len(argument) == 2):
            raise located(path, f"Fn::Select takes [index, [values]], not {argument!r}")
        index = self.string(argument[0], f"{path}[0]")
        values = self.items(argument[1], f"{path}[1]")
        if not index.isdigit() or int(index) >= len(values):
            raise located(path, f"index {index} is not within the {len(values)} value(s)")
        return values[int(index)]

    def _split(self, argument: Any, path: str) -> list[str]:
        if not (isinstance(argument, list) and len(argument) == 2):
            raise located(path, f"Fn::Split takes [delimiter, string], not {argument!r}")
        delimiter = self.string(argument[0], f"{path}[0]")
        if not delimiter:
            raise located(path, "Fn::Split's delimiter is empty")
        return self.string(argument[1], f"{path}[1]").split(delimiter)

    def _find_in_map(self, argument: Any, path: str) -> Any:
        if not (isinstance(argument, list) and len(argument) == 3):
            raise located(path, f"Fn::FindInMap takes [map, key, key], not {argument!r}")
        keys = [self.string(k, f"{path}[{i}]") for i, k in enumerate(argument)]
        found: Any = self.mappings
        for depth, key in enumerate(keys):
            if not isinstance(found, dict) or key not in found:
                where = "Mappings" if depth == 0 else f"Mappings.{'.'.join(keys[:depth])}"
                raise located(path, f"{key!r} is not in {where}")
            found = found[key]
        return found

    def _base64(self, argument: Any, path: str) -> str:
        return base64.b64encode(self.string(argument, path).encode()).decode()

    def _to_json_string(self, argument: Any, path: str) -> str:
        return json.dumps(self.value(argument, path), separators=(",", ":"))

    def _length(self, argument: Any, path: str) -> int:
        return len(self.items(argument, path))

    def _equals(self, argument: Any, path: str) -> bool:
        if not (isinstance(argument, list) and len(argument) == 2):
            raise located(path, f"Fn::Equals takes [value, value], not {argument!r}")
        left, right = (self.value(v, f"{path}[{i}]") for i, v in enumerate(argument))
        return bool(_comparable(left) == _comparable(right))

    def _booleans(self, argument: Any, path: str, low: int) -> list[bool]:
        if not (isinstance(argument, list) and low <= len(argument) <= 10):
            raise located(path, f"takes {low} to 10 conditions, not {argument!r}")
        values = [self.value(c, f"{path}[{i}]") for i, c in enumerate(argument)]
        for i, value in enumerate(values):
            if not isinstance(value, bool):
                raise located(f"{path}[{i}]", f"{value!r} is not a condition")
        return values

    def _not(self, argument: Any, path: str) -> bool:
        values: list[bool] = self._booleans(argument, path, 1)
        return not values[0]

    def _and(self, argument: Any, path: str) -> bool:
        return all(self._booleans(argument, path, 2))

    def _or(self, argument: Any, path: str) -> bool:
        return any(self._booleans(argument, path, 2))

    def _condition(self, argument: Any, path: str) -> bool:
        value: bool = self.condition(argument, path)
        return value


def _comparable(value: Any) -> Any:
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


_FUNCTIONS: dict[str, Any] = {
    "Ref": Resolver._ref,
    "Fn::GetAtt": Resolver._get_att,
    "Fn::Sub": Resolver._sub,
    "Fn::Join": Resolver._join,
    "Fn::If": Resolver._if,
    "Fn::Select": Resolver._select,
    "Fn::Split": Resolver._split,
    "Fn::FindInMap": Resolver._find_in_map,
    "Fn::Base64": Resolver._base64,
    "Fn::ToJsonString": Resolver._to_json_string,
    "Fn::Length": Resolver._length,
    "Fn::Equals": Resolver._equals,
    "Fn::Not": Resolver._not,
    "Fn::And": Resolver._and,
    "Fn::Or": Resolver._or,
    "Fn::Condition": Resolver._condition,
}
