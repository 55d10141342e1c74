"""Reading one resource's properties, resolved, with the conversions CloudFormation makes
(``"30"`` from a parameter is a number where the property is one), each value checked with a
message naming the resource and property; what was read is recorded, so the readers can list
the rest rather than drop it."""

from __future__ import annotations

from typing import Any

from .intrinsics import located
from .load import Template


class Props:
    """One resource's resolved properties, read with CloudFormation's conversions; records
    which were read so the rest can be listed, never dropped."""

    def __init__(self, template: Template, logical_id: str) -> None:
        self.logical_id = logical_id
        self.prefix = f"Resources.{logical_id}.Properties"
        raw = template.resources.properties(logical_id)
        self.values: dict[str, Any] = template.resolver.value(raw, self.prefix)
        self.read: set[str] = set()

    def path(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def get(self, name: str, default: Any = None) -> Any:
        self.read.add(name)
        return self.values.get(name, default)

    def string(self, name: str, default: str | None = None) -> str | None:
        value = self.get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise located(self.path(name), f"{value!r} is not a string")
        return str(value)

    def required(self, name: str) -> str:
        value = self.string(name)
        if value is None:
            raise located(self.path(name), "is required")
        return value

    def number(self, name: str, default: float | None = None) -> float | None:
        return number(self.get(name, default), self.path(name))

    def integer(self, name: str, default: int | None = None) -> int | None:
        return integer(self.get(name, default), self.path(name))

    def mapping(self, name: str) -> dict[str, Any]:
        value = self.get(name, {})
        if not isinstance(value, dict):
            raise located(self.path(name), f"{value!r} is not a mapping")
        return value

    def rest(self) -> list[str]:
        return sorted(set(self.values) - self.read)


def number(value: Any, path: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise located(path, f"{value!r} is not a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise located(path, f"{value!r} is not a number") from None


def integer(value: Any, path: str) -> int | None:
    found = number(value, path)
    if found is None:
        return None
    if not found.is_integer():
        raise located(path, f"{value!r} is not a whole number")
    return int(found)


def boolean(value: Any, path: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise located(path, f"{value!r} is not true or false")
