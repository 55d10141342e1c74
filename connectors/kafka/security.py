"""How a Kafka client proves who it is and whom it talks to, as Lambda's MSK and self-managed
Kafka event sources offer it: SASL/SCRAM-SHA-256/512 and SASL/PLAIN over TLS, mutual TLS (a
client certificate), a private root CA for the brokers' certificates, and MSK IAM (SASL
OAUTHBEARER with a SigV4-presigned token).

One frozen :class:`KafkaSecurity` says it for :class:`~streamfn.connectors.kafka.KafkaSource`,
:class:`~streamfn.connectors.kafka.KafkaDestination` and
:class:`~streamfn.connectors.kafka.KafkaEventQueue` alike, checked when it is built (files
readable, secrets present) so that a typo fails at start-up rather than at the first connect.
Passwords are :class:`Secret` s: given, or read from an environment variable or a file, and
never shown by ``repr`` or in a log line.

Example::

    security = KafkaSecurity.scram("orders-svc", Secret.env("KAFKA_PASSWORD"), ca="ca.pem")
    source = KafkaSource("orders", bootstrap_servers=BROKERS, group_id="g", security=security)
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import re
import ssl
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.abc import AbstractTokenProvider
from aiokafka.errors import AuthenticationFailedError

from streamfn.errors import ConfigError

from .._secret import Secret as Secret  # re-exported: KafkaSecurity takes Secrets
from .._secret import access_types, secret_fields

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
#: ``KafkaSecurity.scram``'s short names, as AWS's SASL_SCRAM_256_AUTH / SASL_SCRAM_512_AUTH.
SCRAM = {"SHA-256": "SCRAM-SHA-256", "SHA-512": "SCRAM-SHA-512"}
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")
_PEM = "-----BEGIN "
#: Seconds before its expiry an MSK IAM token is replaced: a connection opened with it must
#: still authenticate after the signing round trip.
TOKEN_REFRESH_MARGIN = 60.0


@dataclass(frozen=True, slots=True, repr=False)
class KafkaSecurity:
    """A Kafka client's transport and authentication; build it with a constructor
    (:meth:`tls`, :meth:`scram`, :meth:`plain`, :meth:`mtls`, :meth:`msk_iam`) rather than
    the fields. ``KafkaSecurity()`` is PLAINTEXT: no TLS, no authentication.

    ``ca`` (a PEM file's path, or PEM text) is the root CA the brokers' certificates must chain
    to (AWS's SERVER_ROOT_CA_CERTIFICATE); without it the system's trust store is used, which
    is what MSK needs. ``cert``/``key`` (paths or PEM text) are a client certificate for
    mutual TLS (CLIENT_CERTIFICATE_TLS_AUTH). ``ssl_context`` replaces all of that with a
    context built by hand.
    """

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None
    password: Secret | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    key_password: Secret | None = None
    region: str | None = None
    aws_profile: str | None = None
    role_arn: str | None = None
    check_hostname: bool = True
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        protocol, mechanism = self.security_protocol, self.sasl_mechanism
        if protocol not in SECURITY_PROTOCOLS:
            raise ConfigError.out_of_range(
                "security_protocol", protocol, " or ".join(SECURITY_PROTOCOLS)
            )
        tls = protocol in ("SSL", "SASL_SSL")
        if protocol.startswith("SASL_"):
            if mechanism not in SASL_MECHANISMS:
                raise ConfigError.out_of_range(
                    "sasl_mechanism", mechanism, " or ".join(SASL_MECHANISMS)
                )
        elif mechanism is not None:
            raise ConfigError(
                f"sasl_mechanism={mechanism!r} needs security_protocol SASL_PLAINTEXT or SASL_SSL"
            )
        if mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            if not isinstance(self.username, str) or not self.username:
                raise ConfigError.out_of_range("username", self.username, f"a {mechanism} user")
            if not isinstance(self.password, Secret):
                raise ConfigError(f"password is required for {mechanism} (a str or a Secret)")
        elif self.username is not None or self.password is not None:
            raise ConfigError(
                f"username/password are for SASL PLAIN or SCRAM, not {mechanism or protocol}"
            )
        if mechanism == "OAUTHBEARER":
            if not isinstance(self.region, str) or not _REGION.fullmatch(self.region):
                raise ConfigError.out_of_range("region", self.region, "an AWS region")
        elif (self.region, self.aws_profile, self.role_arn) != (None, None, None):
            raise ConfigError("region/aws_profile/role_arn are for MSK IAM (OAUTHBEARER)")
        if (self.cert is None) != (self.key is None):
            raise ConfigError("cert and key go together: a client certificate needs its key")
        if self.key_password is not None and self.key is None:
            raise ConfigError("key_password is for an encrypted client key: give cert and key")
        if not tls and (self.ca, self.cert, self.ssl_context) != (None, None, None):
            raise ConfigError(
                f"ca/cert/ssl_context need TLS: security_protocol={protocol!r} has none "
                "(SSL or SASL_SSL)"
            )
        if self.ssl_context is not None and (self.ca, self.cert) != (None, None):
            raise ConfigError("ssl_context replaces ca/cert/key: give one or the other")
        for name in ("ca", "cert", "key"):
            _check_pem(name, getattr(self, name))
        if tls and self.ssl_context is None:
            self.context()  # loads the CA and the key pair now: a bad file fails here

    # -- the ways to build one ---------------------------------------------------------

    @classmethod
    def tls(cls, ca: str | os.PathLike[str] | None = None, **options: Any) -> KafkaSecurity:
        """TLS encryption with the brokers' certificates checked against ``ca`` (or the
        system's trust store), no client authentication."""
        return cls("SSL", ca=_text(ca), **options)

    @classmethod
    def scram(
        cls,
        username: str,
        password: str | Secret,
        mechanism: str = "SHA-512",
        *,
        ca: str | os.PathLike[str] | None = None,
        tls: bool = True,
        **options: Any,
    ) -> KafkaSecurity:
        """SASL/SCRAM (AWS's SASL_SCRAM_256_AUTH / SASL_SCRAM_512_AUTH) over TLS, as Lambda
        does it; ``tls=False`` (SASL_PLAINTEXT) is for local brokers only: Lambda refuses it."""
        if mechanism not in SCRAM:
            raise ConfigError.out_of_range("mechanism", mechanism, " or ".join(SCRAM))
        return cls(
            "SASL_SSL" if tls else "SASL_PLAINTEXT",
            SCRAM[mechanism],
            username,
            Secret.of(password),
            ca=_text(ca),
            **options,
        )

    @classmethod
    def plain(
        cls,
        username: str,
        password: str | Secret,
        *,
        ca: str | os.PathLike[str] | None = None,
        tls: bool = True,
        **options: Any,
    ) -> KafkaSecurity:
        """SASL/PLAIN (AWS's BASIC_AUTH) over TLS: the password crosses the wire as it is, so
        ``tls=False`` is for local brokers only."""
        return cls(
            "SASL_SSL" if tls else "SASL_PLAINTEXT",
            "PLAIN",
            username,
            Secret.of(password),
            ca=_text(ca),
            **options,
        )

    @classmethod
    def mtls(
        cls,
        cert: str | os.PathLike[str],
        key: str | os.PathLike[str],
        ca: str | os.PathLike[str] | None = None,
        *,
        key_password: str | Secret | None = None,
        **options: Any,
    ) -> KafkaSecurity:
        """Mutual TLS (AWS's CLIENT_CERTIFICATE_TLS_AUTH): the client certificate ``cert``
        (with its chain) and its private ``key``, encrypted with ``key_password`` if any."""
        return cls(
            "SSL",
            ca=_text(ca),
            cert=_text(cert),
            key=_text(key),
            key_password=None if key_password is None else Secret.of(key_password),
            **options,
        )

    @classmethod
    def msk_iam(
        cls,
        region: str,
        *,
        profile: str | None = None,
        role_arn: str | None = None,
        ca: str | os.PathLike[str] | None = None,
    ) -> KafkaSecurity:
        """Amazon MSK's IAM access control: SASL OAUTHBEARER over TLS with tokens signed by
        ``aws-msk-iam-sasl-signer-python`` (extra ``kafka-iam``) from the AWS credential chain,
        a named ``profile``, or the role ``role_arn`` assumed."""
        if profile is not None and role_arn is not None:
            raise ConfigError("msk_iam takes a profile or a role_arn, not both")
        _signer()  # the extra, now rather than at the first connect
        return cls(
            "SASL_SSL",
            "OAUTHBEARER",
            ca=_text(ca),
            region=region,
            aws_profile=profile,
            role_arn=role_arn,
        )

    # -- what the client gets ----------------------------------------------------------

    @property
    def tls_enabled(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def context(self) -> ssl.SSLContext:
        """A new client SSLContext: ``ca`` (or the system's trust store), the client
        certificate if any; hostname checking unless ``check_hostname=False``."""
        if self.ssl_context is not None:
            return self.ssl_context
        ca = self.ca
        try:
            if ca is not None and ca.lstrip().startswith(_PEM):
                context = ssl.create_default_context(cadata=ca)
            else:
                context = ssl.create_default_context(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"ca={_shown(ca)!r} cannot be loaded: {exc}") from exc
        context.check_hostname = self.check_hostname
        if self.cert is not None and self.key is not None:
            password = self.key_password.reveal() if self.key_password is not None else None
            try:
                with _as_file(self.cert) as cert, _as_file(self.key) as key:
                    context.load_cert_chain(cert, key, password=password)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"cert={_shown(self.cert)!r} / key={_shown(self.key)!r} cannot be loaded "
                    f"as a certificate and its private key: {exc}"
                ) from exc
        return context

    def client_options(self) -> dict[str, Any]:
        """The aiokafka client keywords for this security: ``security_protocol``,
        ``ssl_context``, ``sasl_mechanism``, and the user and password or token provider.
        Secrets are read here, once per connector."""
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.tls_enabled:
            options["ssl_context"] = self.context()
        mechanism = self.sasl_mechanism
        if mechanism is None:
            return options
        options["sasl_mechanism"] = mechanism
        if mechanism == "OAUTHBEARER":
            assert self.region is not None
            options["sasl_oauth_token_provider"] = MskIamTokenProvider(
                self.region, profile=self.aws_profile, role_arn=self.role_arn
            )
        else:
            assert self.password is not None
            options["sasl_plain_username"] = self.username
            options["sasl_plain_password"] = self.password.reveal()
        return options

    def describe(self) -> str:
        """One line for logs and errors: the protocol, mechanism and user; no secret."""
        parts = [self.security_protocol]
        if self.sasl_mechanism == "OAUTHBEARER":
            parts.append(f"MSK IAM in {self.region}")
        elif self.sasl_mechanism is not None:
            parts.append(f"{self.sasl_mechanism} as {self.username!r}")
        if self.cert is not None:
            parts.append(f"client certificate {_shown(self.cert)}")
        return " ".join(parts)

    def __repr__(self) -> str:
        shown = [f"security_protocol={self.security_protocol!r}"]
        for name in ("sasl_mechanism", "username", "password", "ca", "cert", "key"):
            value = getattr(self, name)
            if value is not None:
                shown.append(f"{name}={_shown(value) if isinstance(value, str) else value!r}")
        for name in ("key_password", "region", "aws_profile", "role_arn"):
            value = getattr(self, name)
            if value is not None:
                shown.append(f"{name}={value!r}")
        return f"KafkaSecurity({', '.join(shown)})"

    # -- AWS's SourceAccessConfigurations --------------------------------------------------

    @classmethod
    def from_aws(
        cls,
        configurations: Sequence[Mapping[str, Any]],
        secrets: Mapping[str, Mapping[str, Any]],
        *,
        msk_region: str | None = None,
    ) -> KafkaSecurity:
        """The security an event source mapping's ``SourceAccessConfigurations`` describe,
        with each Secrets Manager ``URI`` looked up in ``secrets`` (ARN -> the secret's JSON,
        as the application fetched it: ``{"username", "password"}`` for SASL,
        ``{"certificate", "privateKey", "privateKeyPassword"?}`` for
        CLIENT_CERTIFICATE_TLS_AUTH, ``{"certificate"}`` for SERVER_ROOT_CA_CERTIFICATE).
        VPC_SUBNET / VPC_SECURITY_GROUP say where Lambda's pollers run and change nothing
        here. For MSK (``msk_region`` given) no authentication entry means IAM, as on AWS.
        """
        by_type = access_types(configurations, _ACCESS_TYPES, once=False)

        def secret(kind: str, *names: str) -> list[str]:
            return secret_fields(by_type, secrets, kind, *names)

        ca = secret("SERVER_ROOT_CA_CERTIFICATE", "certificate")[0] if _CA in by_type else None
        auth = [t for t in by_type if t in _AUTH_TYPES]
        if len(auth) > 1:
            raise ConfigError(f"SourceAccessConfigurations: one authentication, not {auth}")
        if not auth:
            if msk_region is not None:
                return cls.msk_iam(msk_region, ca=ca)
            return cls.tls(ca) if ca is not None else cls()
        [kind] = auth
        if kind == "CLIENT_CERTIFICATE_TLS_AUTH":
            cert, key = secret(kind, "certificate", "privateKey")
            key_password = secrets[by_type[kind]].get("privateKeyPassword") or None
            return cls.mtls(cert, key, ca, key_password=key_password)
        username, password = secret(kind, "username", "password")
        if kind == "BASIC_AUTH":
            return cls.plain(username, password, ca=ca)
        return cls.scram(username, password, _AUTH_TYPES[kind], ca=ca)

    def check_aws(self, configurations: Sequence[Mapping[str, Any]]) -> None:
        """Refuse ``SourceAccessConfigurations`` that describe another authentication than
        this one (for ``App.consume(source, aws=...)``: the secrets stay with the source)."""
        by_type = access_types(configurations, _ACCESS_TYPES, once=False)
        auth = [t for t in by_type if t in _AUTH_TYPES]
        expected = {
            "PLAIN": "BASIC_AUTH",
            "SCRAM-SHA-256": "SASL_SCRAM_256_AUTH",
            "SCRAM-SHA-512": "SASL_SCRAM_512_AUTH",
        }.get(self.sasl_mechanism or "")
        if expected is None and self.cert is not None:
            expected = "CLIENT_CERTIFICATE_TLS_AUTH"
        if auth != ([expected] if expected else []):
            raise ConfigError(
                f"SourceAccessConfigurations name {auth or 'no authentication'}, but the "
                f"source connects with {self.describe()}"
            )
        if _CA in by_type and not self.tls_enabled:
            raise ConfigError(
                "SourceAccessConfigurations name SERVER_ROOT_CA_CERTIFICATE, but the source "
                f"connects with {self.security_protocol} (no TLS)"
            )


_CA = "SERVER_ROOT_CA_CERTIFICATE"
#: AWS's authentication types and, for SCRAM, KafkaSecurity.scram's mechanism.
_AUTH_TYPES = {
    "BASIC_AUTH": "PLAIN",
    "SASL_SCRAM_256_AUTH": "SHA-256",
    "SASL_SCRAM_512_AUTH": "SHA-512",
    "CLIENT_CERTIFICATE_TLS_AUTH": "mTLS",
}
_ACCESS_TYPES = frozenset({*_AUTH_TYPES, _CA, "VPC_SUBNET", "VPC_SECURITY_GROUP"})


class MskIamTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """aiokafka's OAUTHBEARER token for Amazon MSK IAM: a SigV4-presigned
    ``kafka-cluster:Connect`` URL for ``region``, from ``aws-msk-iam-sasl-signer-python``.

    One token serves every connection until :data:`TOKEN_REFRESH_MARGIN` before it expires (15
    minutes after signing): aiokafka asks on each connect. Signing may read credentials over
    the network (instance metadata, STS), so it runs in a thread. A signing failure (no
    credentials, a role that cannot be assumed) is an AuthenticationFailedError, which the
    connector reports as an access problem rather than retrying.
    """

    def __init__(
        self,
        region: str,
        *,
        profile: str | None = None,
        role_arn: str | None = None,
        credentials_provider: Any = None,
    ) -> None:
        self.region = region
        self.profile = profile
        self.role_arn = role_arn
        self.credentials_provider = credentials_provider
        self._token: str | None = None
        self._expires = 0.0  # epoch seconds
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        async with self._lock:
            if self._token is not None and time.time() < self._expires - TOKEN_REFRESH_MARGIN:
                return self._token
            token, expiry_ms = await asyncio.to_thread(self.generate)
            self._token, self._expires = token, expiry_ms / 1000
            return token

    def generate(self) -> tuple[str, int]:
        """A fresh token and its expiry (epoch milliseconds), signed now."""
        signer = _signer()
        try:
            if self.credentials_provider is not None:
                made = signer.generate_auth_token_from_credentials_provider(
                    self.region, self.credentials_provider
                )
            elif self.role_arn is not None:
                made = signer.generate_auth_token_from_role_arn(self.region, self.role_arn)
            elif self.profile is not None:
                made = signer.generate_auth_token_from_profile(self.region, self.profile)
            else:
                made = signer.generate_auth_token(self.region)
        except Exception as exc:  # botocore's many credential errors, ValueError("empty")
            raise AuthenticationFailedError(
                f"cannot sign an MSK IAM token for {self.region}: {exc!r}"
            ) from exc
        token, expiry_ms = made
        return str(token), int(expiry_ms)

    def __repr__(self) -> str:
        return f"MskIamTokenProvider(region={self.region!r})"


def _signer() -> Any:
    try:
        return importlib.import_module("aws_msk_iam_sasl_signer.MSKAuthTokenProvider")
    except ImportError as exc:
        raise ConfigError(
            "KafkaSecurity.msk_iam needs the 'kafka-iam' extra: "
            f"pip install 'streamfn[kafka-iam]' ({exc})"
        ) from exc


def _text(value: str | os.PathLike[str] | None) -> str | None:
    return None if value is None else os.fspath(value)


def _check_pem(name: str, value: object) -> None:
    """A path that names a readable file, or PEM text."""
    if value is None:
        return
    if not isinstance(value, str) or not (
        value.lstrip().startswith(_PEM) or os.access(value, os.R_OK)
    ):
        raise ConfigError.out_of_range(name, _shown(value), "a readable PEM file or PEM text")


def _shown(value: object) -> object:
    """A path as it is, PEM text (a key, maybe) as a placeholder."""
    if isinstance(value, str) and value.lstrip().startswith(_PEM):
        return "<PEM text>"
    return value


@contextlib.contextmanager
def _as_file(value: str) -> Iterator[str]:
    """A path for ``load_cert_chain``, which reads files only: PEM text goes to a private
    temporary file for as long as the block runs."""
    if not value.lstrip().startswith(_PEM):
        yield value
        return
    with tempfile.TemporaryDirectory() as folder:  # mode 0700
        path = os.path.join(folder, "pem")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w", encoding="utf-8") as f:
            f.write(value)
        yield path
