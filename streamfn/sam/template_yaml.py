"""Reading a template file: YAML with CloudFormation's short-form tags (``!Ref``, ``!GetAtt``,
``!Sub`` ...) or JSON, into the plain dict CloudFormation itself works on.

Short forms become their long form (``!GetAtt A.B`` is ``{"Fn::GetAtt": ["A", "B"]}``), so
everything after this module handles one shape. A tag CloudFormation does not define still
becomes ``Fn::<Name>`` and is refused by name where it is resolved, with its location. YAML's
timestamps stay strings (CloudFormation reads ``2024-01-01`` as text) and a key repeated in one
mapping is refused, as CloudFormation refuses it, rather than the last one silently winning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

_LONG_FORM = {"Ref": "Ref", "Condition": "Condition"}


class _Loader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1 timestamps, with the short-form tags and duplicate-key
    checks."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _short_form(loader: _Loader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = _LONG_FORM.get(suffix, f"Fn::{suffix}")
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt" and isinstance(value, str):
            logical, _, attribute = value.partition(".")
            value = [logical, attribute]
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


def _mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            mark = key_node.start_mark
            raise ConfigError(f"line {mark.line + 1}: key {key!r} appears twice in one mapping")
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_Loader.add_multi_constructor("!", _short_form)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def read_template(path: Path) -> dict[str, Any]:
    """The template at ``path`` as a dict; a ConfigError of one line naming the file (and the
    line, for a YAML error) when it cannot be read or is not a mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the template: {exc.strerror}") from exc
    try:
        data = yaml.load(text, Loader=_Loader)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: not a valid YAML or JSON template: {problem}") from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a template is a mapping with Resources, not {type(data).__name__}"
        )
    if not isinstance(data.get("Resources"), dict) or not data["Resources"]:
        raise ConfigError(f"{path}: Resources: a template needs at least one resource")
    return data
