"""SAM to plain CloudFormation with AWS's own ``aws-sam-translator``: Globals, Events,
AutoPublishAlias, FunctionUrlConfig, EventInvokeConfig and DeadLetterQueue expand exactly as
they do when AWS deploys the template, and streamfn only maps the ``AWS::Lambda::*`` resources
that come out (``plan.py``).

The translator runs offline: it is given a stand-in for a boto3 session that only names the
region (it asks the session nothing else) and AWS managed policy names resolve from the map it
bundles. As
``sam build``/``sam local`` do, a local ``CodeUri`` (or ``InlineCode``) is swapped for an S3
placeholder before the transform, which accepts only S3 code for deployment, and recorded
here; the placeholder key is the function's logical id, which the expanded
``AWS::Lambda::Function`` keeps, so :class:`FunctionCode` finds the code again.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

SAM_TRANSFORM = "AWS::Serverless-2016-10-31"
PLACEHOLDER_BUCKET = "streamfn-local-code"


@dataclass(frozen=True, slots=True)
class FunctionCode:
    """Where a function's code is: ``uri`` a local directory (possibly still an intrinsic),
    or ``inline`` source text."""

    uri: Any = None
    inline: str | None = None


def transforms(template: dict[str, Any]) -> list[str]:
    declared = template.get("Transform")
    if declared is None:
        return []
    names = declared if isinstance(declared, list) else [declared]
    for name in names:
        if not isinstance(name, str):
            raise ConfigError(f"Transform: {name!r} is a macro with parameters, not supported")
    return list(names)


def expand(
    template: dict[str, Any], parameters: dict[str, Any], region: str
) -> tuple[dict[str, Any], dict[str, FunctionCode]]:
    """The template with its SAM resources expanded, and each function's code by logical id.
    A template without the SAM transform is returned as it is."""
    names = transforms(template)
    other = [n for n in names if n != SAM_TRANSFORM]
    if other:
        raise ConfigError(
            f"Transform: {other[0]} is not supported: streamfn expands only {SAM_TRANSFORM}"
        )
    if not names:
        return template, {}
    template = copy.deepcopy(template)
    codes = _swap_code(template)
    try:
        from samtranslator.model.exceptions import (  # type: ignore[import-untyped]
            ExceptionWithMessage,
        )
        from samtranslator.parser.parser import Parser  # type: ignore[import-untyped]
        from samtranslator.translator.translator import (  # type: ignore[import-untyped]
            Translator,
        )
    except ImportError as exc:
        raise ConfigError(
            f"Transform: {SAM_TRANSFORM} needs the 'sam' extra (pip install 'streamfn[sam]'): {exc}"
        ) from exc
    translator = Translator(None, Parser(), boto_session=_Region(region))
    try:
        expanded: dict[str, Any] = translator.translate(
            template, parameter_values=dict(parameters), get_managed_policy_map=dict
        )
    except ExceptionWithMessage as exc:
        causes = getattr(exc, "causes", None) or [exc]
        more = f" (and {len(causes) - 1} more)" if len(causes) > 1 else ""
        message = " ".join(causes[0].message.split())
        raise ConfigError(f"{SAM_TRANSFORM}: {message}{more}") from exc
    finally:
        translator.metrics.publish()  # to its no-op publisher; unpublished ones warn at exit
    return expanded, codes


class _Region:
    """What the translator asks of its boto3 session: the region, and nothing else (it makes
    no AWS call), so no AWS client library is needed to expand a template."""

    def __init__(self, region_name: str) -> None:
        self.region_name = region_name


def _swap_code(template: dict[str, Any]) -> dict[str, FunctionCode]:
    """Record each SAM function's code and point it at the placeholder instead."""
    resources = template.get("Resources") or {}
    globals_ = (template.get("Globals") or {}).get("Function") or {}
    default_uri = globals_.pop("CodeUri", None) if isinstance(globals_, dict) else None
    codes: dict[str, FunctionCode] = {}
    for logical_id, resource in resources.items():
        if not isinstance(resource, dict) or resource.get("Type") != "AWS::Serverless::Function":
            continue
        properties = resource.setdefault("Properties", {})
        if not isinstance(properties, dict):
            raise ConfigError(f"Resources.{logical_id}.Properties: must be a mapping")
        if properties.get("PackageType") == "Image":
            continue
        if "InlineCode" in properties:
            inline = properties.pop("InlineCode")
            if not isinstance(inline, str):
                raise ConfigError(f"Resources.{logical_id}.Properties.InlineCode: must be text")
            codes[logical_id] = FunctionCode(inline=inline)
        else:
            codes[logical_id] = FunctionCode(uri=properties.get("CodeUri", default_uri))
        properties["CodeUri"] = {"Bucket": PLACEHOLDER_BUCKET, "Key": logical_id}
    return codes
