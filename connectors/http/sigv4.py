"""SigV4 verification for function URLs with ``AWS_IAM`` auth: the signature is recomputed with
botocore's own signer from the request as received, against the app's configured access keys.

A request is refused when it is unsigned, signed with an unknown key, for another region or
service, over a body or header other than the one received, dated more than five minutes from now,
or when its exact signature was already accepted (a replay). The replay check also refuses an
identical request re-signed by the same client within the same second, since SigV4 dates have
one-second resolution.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

log = logging.getLogger("streamfn.http")

SERVICE = "lambda"
MAX_SKEW = 300.0  # seconds a signature's X-Amz-Date may differ from now
_ALGORITHM = "AWS4-HMAC-SHA256"
_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_PRUNE_EVERY = 1024


class SignatureRejected(Exception):
    """Why a request was refused; logged by the caller, never sent to the client."""


class _SignedHeadersOnly(SigV4Auth):  # type: ignore[misc]
    """botocore's signer, but canonicalising exactly the headers the client said it signed
    (botocore itself skips some, e.g. ``user-agent``, which other SDKs do sign)."""

    def __init__(self, credentials: Credentials, region: str, signed: Any) -> None:
        super().__init__(credentials, SERVICE, region)
        self._signed = signed

    def headers_to_sign(self, request: AWSRequest) -> Any:
        return self._signed


class SigV4Verifier:
    """Checks requests against ``access_keys`` (access key id -> secret access key)."""

    def __init__(
        self,
        access_keys: Mapping[str, str],
        region: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = access_keys
        self._region = region
        self._clock = clock
        self._seen: dict[str, float] = {}  # accepted signature -> when it stops being valid
        self._inserts = 0

    def authenticate(
        self,
        method: str,
        raw_path: bytes,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> str | None:
        """The access key id that signed the request, or None (the reason is logged, never
        told to the client)."""
        try:
            return self.verify(method, raw_path, query, headers, body)
        except SignatureRejected as exc:
            log.info("function URL request denied", extra={"reason": str(exc)})
            return None

    def verify(
        self,
        method: str,
        raw_path: bytes,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> str:
        """The access key id that signed the request, or SignatureRejected."""
        values: dict[str, list[str]] = {}
        for name, value in headers:
            values.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        credential, signed_names, signature = _parse_authorization(values)
        access_key, day, region, service, terminator = _split_scope(credential)
        secret = self._keys.get(access_key)
        if secret is None:
            raise SignatureRejected(f"unknown access key {access_key!r}")
        if (region, service, terminator) != (self._region, SERVICE, "aws4_request"):
            raise SignatureRejected(f"credential scope {credential!r} is not for this endpoint")
        amz_date = self._check_date(values, day)
        if "host" not in signed_names or "x-amz-date" not in signed_names:
            raise SignatureRejected("host and x-amz-date must be signed")
        sent_hash = values.get("x-amz-content-sha256")
        if sent_hash is not None and sent_hash[0] != hashlib.sha256(body).hexdigest():
            raise SignatureRejected("x-amz-content-sha256 does not match the body")
        expected = _signature(
            Credentials(access_key, secret),
            self._region,
            method,
            raw_path,
            query,
            {name: values[name] for name in signed_names},
            body,
            amz_date,
        )
        if not hmac.compare_digest(expected, signature):
            raise SignatureRejected("signature mismatch")
        self._remember(signature)
        return access_key

    def _check_date(self, values: dict[str, list[str]], day: str) -> str:
        amz_date = (values.get("x-amz-date") or [""])[0]
        try:
            signed_at = calendar.timegm(time.strptime(amz_date, _DATE_FORMAT))
        except ValueError:
            raise SignatureRejected(f"bad or missing X-Amz-Date {amz_date!r}") from None
        if amz_date[:8] != day:
            raise SignatureRejected("X-Amz-Date and the credential scope disagree on the date")
        if abs(self._clock() - signed_at) > MAX_SKEW:
            raise SignatureRejected(f"signature dated {amz_date} has expired")
        return amz_date

    def _remember(self, signature: str) -> None:
        now = self._clock()
        if self._seen.get(signature, 0.0) > now:
            raise SignatureRejected("signature replayed")
        self._seen[signature] = now + 2 * MAX_SKEW
        self._inserts += 1
        if self._inserts % _PRUNE_EVERY == 0:
            self._seen = {s: until for s, until in self._seen.items() if until > now}


def _parse_authorization(values: dict[str, list[str]]) -> tuple[str, list[str], str]:
    header = (values.get("authorization") or [""])[0]
    algorithm, _, rest = header.partition(" ")
    if algorithm != _ALGORITHM:
        raise SignatureRejected("missing or non-SigV4 Authorization header")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, _, value = part.strip().partition("=")
        fields[key] = value
    try:
        credential = fields["Credential"]
        signed = fields["SignedHeaders"].split(";")
        signature = fields["Signature"]
    except KeyError as exc:
        raise SignatureRejected(f"Authorization header lacks {exc.args[0]}") from None
    missing = [name for name in signed if name not in values]
    if missing:
        raise SignatureRejected(f"signed headers not in the request: {missing}")
    return credential, signed, signature


def _split_scope(credential: str) -> tuple[str, str, str, str, str]:
    parts = credential.split("/")
    if len(parts) != 5:
        raise SignatureRejected(f"malformed credential {credential!r}")
    return parts[0], parts[1], parts[2], parts[3], parts[4]


def _signature(
    credentials: Credentials,
    region: str,
    method: str,
    raw_path: bytes,
    query: bytes,
    signed: dict[str, list[str]],
    body: bytes,
    amz_date: str,
) -> str:
    """The signature botocore computes for this request as received."""
    host = signed["host"][0]
    url = f"http://{host}{raw_path.decode('latin-1')}"
    if query:
        url += "?" + query.decode("latin-1")
    request = AWSRequest(method=method, url=url, data=body)
    request.context["timestamp"] = amz_date
    auth = _SignedHeadersOnly(credentials, region, _Headers(signed))
    canonical = auth.canonical_request(request)
    result: str = auth.signature(auth.string_to_sign(request, canonical), request)
    return result


class _Headers(dict[str, list[str]]):
    """The ``get_all`` view botocore's canonicaliser expects (repeated values joined by ',')."""

    def get_all(self, name: str) -> list[str]:
        return self[name]
