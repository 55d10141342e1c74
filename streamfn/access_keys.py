"""The access keys that may call an app's Invoke API and ``AWS_IAM`` function URLs, each with its
grants: which functions, qualifiers and invocation types it may invoke (Lambda's resource policy,
simply put).

Keys come from code (``App(access_keys=...)``) or from a JSON file (``streamfn run
--access-keys-file``, env ``STREAMFN_ACCESS_KEYS_FILE``), never from the command line itself, so
a secret is neither in a process list nor in a shell history. A secret is never shown: not in a
``repr``, not in an error message, not in a log line. The file::

    {"keys": [
        {"access_key_id": "AKIAORDERS", "secret_access_key": "...",
         "functions": ["orders", "report:live", "batch-*"],
         "qualifiers": ["$LATEST", "live"],
         "invocation_types": ["RequestResponse", "DryRun"]},
        {"access_key_id": "AKIAADMIN", "secret_access_key": "..."}
    ]}

A grant field that is absent grants everything of its kind; each one present narrows the key.
``functions`` entries are ``NAME`` (every qualifier of that function) or ``NAME:QUALIFIER``,
``qualifiers`` entries are qualifiers; ``*`` matches any run of characters in either. An
unqualified invocation is one of ``$LATEST``. Example::

    >>> key = AccessKey("AKIAORDERS", "secret", functions=["orders", "report:live"])
    >>> key.allows("orders", "7", "Event"), key.allows("report", None, "RequestResponse")
    (True, False)

Only this module parses keys; the HTTP adapter verifies signatures against them
(:mod:`streamfn.connectors.http.sigv4`) and asks :meth:`AccessKey.allows` for each invocation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .errors import ConfigError

LATEST = "$LATEST"
INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")
FIELDS = ("access_key_id", "secret_access_key", "functions", "qualifiers", "invocation_types")

# Characters of an access key id: it travels in "Credential=<id>/<date>/...", so no '/', ',', '='.
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}", re.ASCII)
_NAME = re.compile(r"[A-Za-z0-9_*-]{1,64}", re.ASCII)  # a function name, '*' wildcards allowed
_QUALIFIER = re.compile(r"[A-Za-z0-9_$*-]{1,128}", re.ASCII)  # a version or alias, likewise


@dataclass(frozen=True, slots=True)
class AccessKey:
    """One access key and what it may invoke; ``None`` for a grant field means everything.
    Invalid values raise :class:`~streamfn.errors.ConfigError` naming the field, never the
    secret."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    functions: Sequence[str] | None = None  # each stored as a tuple
    qualifiers: Sequence[str] | None = None
    invocation_types: Sequence[str] | None = None
    _functions: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _qualifiers: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.access_key_id, str) or not _KEY_ID.fullmatch(self.access_key_id):
            raise ConfigError(
                f"access_key_id={self.access_key_id!r} is invalid: must be 1-128 of A-Z a-z 0-9 "
                "_ . -"
            )
        secret = self.secret_access_key
        if not isinstance(secret, str) or not secret:
            raise ConfigError(f"the secret_access_key of {self.access_key_id!r} must be text")
        if secret != secret.strip():  # a newline pasted from a file would never verify
            raise ConfigError(
                f"the secret_access_key of {self.access_key_id!r} has leading or trailing "
                "whitespace"
            )
        functions = self._grant("functions", self.functions, _function_entry)
        qualifiers = self._grant("qualifiers", self.qualifiers, _qualifier_entry)
        self._grant("invocation_types", self.invocation_types, _invocation_type)
        set_field = object.__setattr__  # frozen: the compiled forms are set once, here
        if functions is not None:  # NAME alone is NAME at every qualifier
            functions = tuple(f if ":" in f else f"{f}:*" for f in functions)
        set_field(self, "_functions", None if functions is None else _compile(functions))
        set_field(self, "_qualifiers", None if qualifiers is None else _compile(qualifiers))

    def _grant(self, name: str, value: Any, check: Any) -> tuple[str, ...] | None:
        """The grant field as a tuple (stored back), each entry checked; None stays None."""
        if value is None:
            return None
        if isinstance(value, str) or not isinstance(value, Iterable):
            raise ConfigError(f"{name} of {self.access_key_id!r} must be a list of strings")
        entries = tuple(value)
        if not entries:
            raise ConfigError(
                f"{name} of {self.access_key_id!r} is empty: omit it to grant every one"
            )
        for entry in entries:
            if not isinstance(entry, str):
                raise ConfigError(f"{name} of {self.access_key_id!r} must be a list of strings")
            check(entry, f"{name} of {self.access_key_id!r}")
        object.__setattr__(self, name, entries)
        return entries

    def allows(self, function: str, qualifier: str | None, invocation_type: str) -> bool:
        """Whether this key may invoke ``function`` at ``qualifier`` (None: unqualified, which
        is ``$LATEST``) with ``invocation_type``."""
        qualifier = qualifier or LATEST
        if self.invocation_types is not None and invocation_type not in self.invocation_types:
            return False
        if self._qualifiers is not None and self._qualifiers.fullmatch(qualifier) is None:
            return False
        return self._functions is None or bool(self._functions.fullmatch(f"{function}:{qualifier}"))


def _function_entry(entry: str, where: str) -> None:
    name, colon, qualifier = entry.partition(":")
    if not _NAME.fullmatch(name) or (colon and not _QUALIFIER.fullmatch(qualifier)):
        raise ConfigError(
            f"{where}: {entry!r} is not NAME or NAME:QUALIFIER (a function name, a version or "
            "alias; '*' matches any characters)"
        )


def _qualifier_entry(entry: str, where: str) -> None:
    if not _QUALIFIER.fullmatch(entry):
        raise ConfigError(f"{where}: {entry!r} is not a version or alias ('*' allowed)")


def _invocation_type(entry: str, where: str) -> None:
    if entry not in INVOCATION_TYPES:
        raise ConfigError(f"{where}: {entry!r} is not one of {', '.join(INVOCATION_TYPES)}")


def _compile(patterns: Iterable[str]) -> re.Pattern[str]:
    """One regular expression matching what any of ``patterns`` matches; '*' matches any run
    of characters but ':'."""
    alternatives = (re.escape(p).replace(r"\*", "[^:]*") for p in patterns)
    return re.compile("|".join(f"(?:{a})" for a in alternatives))


def collect(keys: Mapping[str, str] | Iterable[AccessKey] | None) -> dict[str, AccessKey]:
    """``App(access_keys=...)``: ``{access key id: secret}`` (every grant) or AccessKey objects,
    by access key id. A key id given twice is refused."""
    if keys is None:
        return {}
    if isinstance(keys, Mapping):
        keys = [AccessKey(str(key_id), secret) for key_id, secret in keys.items()]
    return merge({}, keys, "access_keys")


def merge(
    known: Mapping[str, AccessKey], more: Iterable[AccessKey], where: str
) -> dict[str, AccessKey]:
    """``known`` plus ``more`` (from ``where``), by access key id; a key id given twice is
    refused rather than one of them silently winning."""
    merged = dict(known)
    for key in more:
        if not isinstance(key, AccessKey):
            raise ConfigError(
                f"{where} must be a mapping of access key id to secret, or AccessKey objects"
            )
        if key.access_key_id in merged:
            raise ConfigError(f"{where}: access key {key.access_key_id!r} is given twice")
        merged[key.access_key_id] = key
    return merged


def load(path: str | Path, name: str | None = None) -> tuple[AccessKey, ...]:
    """The keys of a JSON access keys file (format in this module's docstring). Anything wrong
    raises ConfigError in one line naming the file (as ``name``, if given) and the field."""
    name = name or f"access keys file {str(path)!r}"
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {name}: {exc.strerror}") from None
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{name} is not JSON: {exc}") from None
    try:
        return parse(document)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def parse(document: Any) -> tuple[AccessKey, ...]:
    """The keys of an access keys document already decoded from JSON: ``{"keys": [...]}``
    with at least one key; a field this module does not know is refused by name."""
    if not isinstance(document, dict) or set(document) != {"keys"}:
        raise ConfigError('must be a JSON object with one member, "keys"')
    entries = document["keys"]
    if not isinstance(entries, list) or not entries:
        raise ConfigError('"keys" must be a non-empty list of objects')
    keys = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigError(f"keys[{index}] must be an object")
        unknown = sorted(set(entry) - set(FIELDS))
        if unknown:
            raise ConfigError(
                f"keys[{index}] has unknown field {unknown[0]!r} (known: {', '.join(FIELDS)})"
            )
        for required in FIELDS[:2]:
            if not isinstance(entry.get(required), str):
                raise ConfigError(f"keys[{index}].{required} must be a string")
        try:
            keys.append(AccessKey(**entry))
        except ConfigError as exc:
            raise ConfigError(f"keys[{index}]: {exc}") from None
    return tuple(merge({}, keys, "keys").values())
