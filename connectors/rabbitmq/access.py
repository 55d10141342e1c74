"""How a RabbitMQ consumer proves who it is and where it connects, as Lambda's Amazon MQ for
RabbitMQ event source offers it: a user name and password (AWS's ``BASIC_AUTH``, a Secrets
Manager secret), a virtual host (``VIRTUAL_HOST``), and TLS when the URL is ``amqps://``.

One frozen :class:`RabbitMQAccess`, checked when it is built (a readable CA file, a password
present) so a typo fails at start-up rather than at the first connect. The password is a
:class:`Secret`: given, or read from an environment variable or a file, never shown by
``repr`` or in a log line.

Example::

    access = RabbitMQAccess("orders-svc", Secret.env("RABBITMQ_PASSWORD"), virtual_host="shop")
    source = RabbitMQSource("orders", "amqps://mq.internal:5671", access=access)
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamfn.errors import ConfigError

from .._secret import Secret as Secret  # re-exported: RabbitMQAccess takes a Secret
from .._secret import access_types, secret_fields

#: AWS's SourceAccessConfigurations types for an Amazon MQ for RabbitMQ mapping.
BASIC_AUTH = "BASIC_AUTH"
VIRTUAL_HOST = "VIRTUAL_HOST"
_ACCESS_TYPES = frozenset({BASIC_AUTH, VIRTUAL_HOST, "VPC_SUBNET", "VPC_SECURITY_GROUP"})
_PEM = "-----BEGIN "


@dataclass(frozen=True, slots=True, repr=False, init=False)
class RabbitMQAccess:
    """Who connects (``username``, ``password``) to which ``virtual_host``, and whom to trust
    over TLS. ``RabbitMQAccess()`` is RabbitMQ's out-of-the-box ``guest``/``guest`` on ``/``
    (which RabbitMQ accepts from loopback only).

    TLS is on when the source's URL is ``amqps://``; ``ca`` (a PEM file's path, or PEM text)
    is the root CA the broker's certificate must chain to, the system's trust store without
    it (what Amazon MQ needs). ``check_hostname=False`` accepts a certificate issued for
    another name; ``ssl_context`` replaces all of that with a context built by hand.
    """

    username: str
    password: Secret
    virtual_host: str
    ca: str | None
    check_hostname: bool
    ssl_context: ssl.SSLContext | None = field(compare=False)

    def __init__(
        self,
        username: str = "guest",
        password: str | Secret = "guest",
        *,
        virtual_host: str = "/",
        ca: str | os.PathLike[str] | None = None,
        check_hostname: bool = True,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not isinstance(username, str) or not username:
            raise ConfigError.out_of_range("username", username, "a non-empty user name")
        if not isinstance(virtual_host, str) or not virtual_host:
            raise ConfigError.out_of_range(
                "virtual_host", virtual_host, 'a non-empty virtual host name, e.g. "/"'
            )
        ca_text = os.fspath(ca) if ca is not None else None
        if ca_text is not None and not ca_text.startswith(_PEM) and not os.access(ca_text, os.R_OK):
            raise ConfigError(f"ca={ca_text!r} is invalid: neither PEM text nor a readable file")
        object.__setattr__(self, "username", username)
        object.__setattr__(self, "password", Secret.of(password))
        object.__setattr__(self, "virtual_host", virtual_host)
        object.__setattr__(self, "ca", ca_text)
        object.__setattr__(self, "check_hostname", bool(check_hostname))
        object.__setattr__(self, "ssl_context", ssl_context)

    def context(self) -> ssl.SSLContext:
        """The TLS context of an ``amqps://`` connection."""
        if self.ssl_context is not None:
            return self.ssl_context
        ca = self.ca
        if ca is None:
            context = ssl.create_default_context()
        elif ca.startswith(_PEM):
            context = ssl.create_default_context(cadata=ca)
        else:
            context = ssl.create_default_context(cafile=ca)
        context.check_hostname = self.check_hostname
        return context

    def __repr__(self) -> str:
        shown = [f"username={self.username!r}", f"password={self.password!r}"]
        shown.append(f"virtual_host={self.virtual_host!r}")
        if self.ca is not None:
            shown.append("ca=<PEM>" if self.ca.startswith(_PEM) else f"ca={self.ca!r}")
        if not self.check_hostname:
            shown.append("check_hostname=False")
        return f"RabbitMQAccess({', '.join(shown)})"

    # -- AWS's SourceAccessConfigurations --------------------------------------------------

    @classmethod
    def from_aws(
        cls,
        configurations: Sequence[Mapping[str, Any]],
        secrets: Mapping[str, Mapping[str, Any]],
        *,
        ca: str | os.PathLike[str] | None = None,
    ) -> RabbitMQAccess:
        """The access an Amazon MQ mapping's ``SourceAccessConfigurations`` describe:
        ``BASIC_AUTH`` (required, as on AWS) names a Secrets Manager secret, looked up in
        ``secrets`` (ARN -> the secret's JSON as the application fetched it,
        ``{"username", "password"}``); ``VIRTUAL_HOST``'s ``URI`` is the virtual host's name
        (``/`` without it). VPC_SUBNET / VPC_SECURITY_GROUP say where Lambda's pollers run
        and change nothing here.

        Example::

            access = RabbitMQAccess.from_aws(
                [{"Type": "BASIC_AUTH", "URI": arn}, {"Type": "VIRTUAL_HOST", "URI": "shop"}],
                {arn: json.loads(secret_string)},
            )
        """
        by_type = access_types(configurations, _ACCESS_TYPES, once=True)
        if BASIC_AUTH not in by_type:
            raise ConfigError(
                "SourceAccessConfigurations: BASIC_AUTH is required for a RabbitMQ source"
            )
        username, password = secret_fields(by_type, secrets, BASIC_AUTH, "username", "password")
        return cls(username, password, virtual_host=by_type.get(VIRTUAL_HOST, "/"), ca=ca)

    def check_aws(self, configurations: Sequence[Mapping[str, Any]]) -> None:
        """Refuse ``SourceAccessConfigurations`` that name another virtual host than this one,
        or no BASIC_AUTH (for ``App.consume(source, aws=...)``: the secret stays with the
        source, so only the virtual host can be compared)."""
        by_type = access_types(configurations, _ACCESS_TYPES, once=True)
        if BASIC_AUTH not in by_type:
            raise ConfigError(
                "SourceAccessConfigurations: BASIC_AUTH is required for a RabbitMQ source"
            )
        named = by_type.get(VIRTUAL_HOST, "/")
        if named != self.virtual_host:
            raise ConfigError(
                f"SourceAccessConfigurations name VIRTUAL_HOST {named!r}, but the source "
                f"connects to virtual host {self.virtual_host!r}"
            )
