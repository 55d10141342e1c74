"""Versions and aliases of a function, how a qualifier picks the one that runs, and the
FunctionName forms that name a function and its qualifier.

On Lambda a version is an immutable snapshot of ``$LATEST``; here it is a handler registered (or
published) under a number. An alias names a version and may send a share of its invocations to a
second one (``AdditionalVersionWeights``); the choice is made per invocation, so it is resolved
here rather than at registration.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from .config import check_alias_name
from .dispatch import Function
from .errors import ConfigError

LATEST = "$LATEST"

#: Lambda's FunctionName as its service model constrains it and its ValidationException quotes
#: it (a Java regular expression that Python reads alike): a name, a partial ARN
#: (``123456789012:function:name``) or a full ARN, each with an optional ``:qualifier``.
FUNCTION_NAME = re.compile(
    r"(arn:(aws[a-zA-Z-]*)?:lambda:)?((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?"
    r"(\d{12}:)?(function:)?([a-zA-Z0-9-_\.]+)(:(\$LATEST(\.PUBLISHED)?|[a-zA-Z0-9-_]+))?"
)


class FunctionName(NamedTuple):
    """What a FunctionName says: the region and account of an ARN, the function's name and
    the qualifier appended to it (each None when not given)."""

    region: str | None
    account: str | None
    name: str
    qualifier: str | None

    @classmethod
    def parse(cls, value: str) -> FunctionName | None:
        """``value`` read as Lambda reads it, or None when it does not fit the pattern. A
        value that fits only by taking part of an ARN as the name (``...:function``, no name)
        reads as a function of that name, as on AWS."""
        parsed = FUNCTION_NAME.fullmatch(value)
        if parsed is None:
            return None
        # the pattern's groups of the region and the account (each with its ":"), the name
        # and the qualifier
        region, account, name, qualifier = parsed.group(3, 9, 11, 13)
        return cls(region and region[:-1], account and account[:-1], name, qualifier)


@dataclass(frozen=True, slots=True)
class Alias:
    """An alias: its main version, and optionally one more version with the share it receives."""

    name: str
    version: str
    additional_version_weights: Mapping[str, float] = field(default_factory=dict)

    def pick(self, rng: random.Random) -> str:
        """The version one invocation runs: "a simple probabilistic model", as on Lambda."""
        for version, weight in self.additional_version_weights.items():
            if rng.random() < weight:
                return version
        return self.version


class Versions:
    """Everything registered under one function name: ``$LATEST``, numbered versions, aliases."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.latest: Function | None = None
        self.published: dict[str, Function] = {}
        self.aliases: dict[str, Alias] = {}

    def add(self, function: Function) -> None:
        version = function.config.version
        if version == LATEST:
            if self.latest is not None:
                raise ConfigError(f"function {self.name!r} is registered twice")
            self.latest = function
        elif version in self.published:
            raise ConfigError(f"version {version} of function {self.name!r} is registered twice")
        else:
            self.published[version] = function

    def next_version(self) -> str:
        return str(max(map(int, self.published), default=0) + 1)

    def add_alias(
        self, name: str, version: str, additional_version_weights: Mapping[str, float]
    ) -> Alias:
        check_alias_name(name)
        if name in self.aliases:
            raise ConfigError(f"alias {name!r} of function {self.name!r} is defined twice")
        self._check_version("version", version)
        weights = dict(additional_version_weights)
        if len(weights) > 1:
            raise ConfigError.out_of_range(
                "additional_version_weights", weights, "at most one version (two in total)"
            )
        for extra, weight in weights.items():
            self._check_version("additional_version_weights", extra)
            if LATEST in (version, extra) or extra == version:
                raise ConfigError(
                    "weighted aliases route between two different published versions, "
                    f"not {version!r} and {extra!r}"
                )
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise ConfigError.out_of_range("weight", weight, "a number from 0 to 1")
            if not 0.0 <= weight <= 1.0:
                raise ConfigError.out_of_range("weight", weight, "a number from 0 to 1")
        alias = Alias(name, version, weights)
        self.aliases[name] = alias
        return alias

    def _check_version(self, field_name: str, version: str) -> None:
        if version != LATEST and version not in self.published:
            known = ", ".join([LATEST, *sorted(self.published, key=int)])
            raise ConfigError.out_of_range(
                field_name, version, f"a version of {self.name!r} ({known})"
            )

    def has(self, qualifier: str | None) -> bool:
        """Whether ``qualifier`` names something that can run."""
        if qualifier is None or qualifier == LATEST:
            return self.latest is not None
        return qualifier in self.published or qualifier in self.aliases

    def resolve(self, qualifier: str | None, rng: random.Random) -> Function | None:
        """The function one invocation runs: an alias picks its version anew each time."""
        if qualifier is None or qualifier == LATEST:
            return self.latest
        alias = self.aliases.get(qualifier)
        if alias is None:
            return self.published.get(qualifier)
        version = alias.pick(rng)
        return self.latest if version == LATEST else self.published[version]
