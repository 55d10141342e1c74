"""Where a connector's credentials come from: a :class:`Secret` (a password or passphrase kept
out of code and logs), and the Secrets Manager secrets an event source mapping's
``SourceAccessConfigurations`` name (:func:`access_types`, :func:`secret_fields`), which the
application fetches and hands over as JSON.

Internal: shared by the connector packages, which re-export :class:`Secret`
(``streamfn.connectors.kafka.Secret`` and ``streamfn.connectors.rabbitmq.Secret`` are this
class).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamfn.errors import ConfigError


@dataclass(frozen=True, slots=True, repr=False)
class Secret:
    """A password or passphrase kept out of code and logs: given (``Secret("...")``, or a
    plain ``str`` wherever a Secret is taken), or read from an environment variable
    (:meth:`env`) or a file (:meth:`file`, e.g. a mounted Kubernetes or Docker secret; one
    trailing newline is dropped). The variable or file must exist when the Secret is built;
    its value is read when a client needs it (a Kafka connector once, a RabbitMQ source at
    each connect, so that a rotated file is picked up on the next reconnection). ``repr``
    names the source, never the value."""

    value: str | None = None
    env_var: str | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        given = [x for x in (self.value, self.env_var, self.path) if x is not None]
        if len(given) != 1 or not all(isinstance(x, str) for x in given):
            raise ConfigError("a Secret is one of a value, an environment variable or a file")
        if self.env_var is not None and self.env_var not in os.environ:
            raise ConfigError(f"Secret.env({self.env_var!r}): the variable is not set")
        if self.path is not None and not os.access(self.path, os.R_OK):
            raise ConfigError(f"Secret.file({self.path!r}): no readable file there")

    @classmethod
    def env(cls, name: str) -> Secret:
        return cls(env_var=name)

    @classmethod
    def file(cls, path: str | os.PathLike[str]) -> Secret:
        return cls(path=os.fspath(path))

    @classmethod
    def of(cls, secret: str | Secret) -> Secret:
        return secret if isinstance(secret, Secret) else cls(secret)

    def reveal(self) -> str:
        """The secret itself, for the client library only."""
        if self.env_var is not None:
            return os.environ[self.env_var]
        if self.path is not None:
            with open(self.path, encoding="utf-8") as f:
                return f.read().removesuffix("\n")
        assert self.value is not None
        return self.value

    def __repr__(self) -> str:
        if self.env_var is not None:
            return f"Secret.env({self.env_var!r})"
        if self.path is not None:
            return f"Secret.file({self.path!r})"
        return "Secret('***')"


def access_types(configurations: object, accepted: frozenset[str], *, once: bool) -> dict[str, str]:
    """``[{"Type", "URI"}, ...]`` as Type -> URI, refusing a Type not in ``accepted`` (what
    the source takes) and, with ``once``, a Type given twice. VPC_SUBNET / VPC_SECURITY_GROUP
    entries are checked but left out: they say where AWS's pollers run, nothing to do on a
    worker of one's own (and AWS takes several of each)."""
    if not isinstance(configurations, Sequence) or isinstance(configurations, str | bytes):
        raise ConfigError.out_of_range(
            "SourceAccessConfigurations", configurations, 'a list of {"Type", "URI"}'
        )
    by_type: dict[str, str] = {}
    for entry in configurations:
        kind = entry.get("Type") if isinstance(entry, Mapping) else None
        uri = entry.get("URI") if isinstance(entry, Mapping) else None
        if (
            not isinstance(entry, Mapping)
            or set(entry) != {"Type", "URI"}
            or kind not in accepted
            or not isinstance(uri, str)
            or (once and kind in by_type)
        ):
            types = ", ".join(sorted(accepted))
            raise ConfigError.out_of_range(
                "SourceAccessConfigurations entry",
                entry,
                f'one {{"Type", "URI"}} per Type, one of {types}'
                if once
                else f'{{"Type", "URI"}} with Type one of {types}',
            )
        if not kind.startswith("VPC_"):
            by_type[kind] = uri
    return by_type


def secret_fields(
    by_type: Mapping[str, str], secrets: Mapping[str, Mapping[str, Any]], kind: str, *names: str
) -> list[str]:
    """The fields ``names`` of the secret that the ``kind`` entry of ``by_type`` (as
    :func:`access_types` returns it) names, looked up in ``secrets`` (ARN -> the secret's
    JSON, as the application fetched it); each must be a non-empty string."""
    uri = by_type[kind]
    found = secrets.get(uri)
    if not isinstance(found, Mapping):
        raise ConfigError(f"SourceAccessConfigurations {kind}: no secret given for {uri}")
    values = []
    for name in names:
        value = found.get(name)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"secret {uri} ({kind}) has no {name!r}")
        values.append(value)
    return values
