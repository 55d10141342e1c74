"""SigV4 verification as AWS does it, for the Invoke API and ``AWS_IAM`` function URLs, against
the app's access keys (:mod:`streamfn.access_keys`). Standard library only: the signature is
recomputed here from the request as received, and the suite checks it against botocore's signer.

- A signature holds from five minutes before its ``X-Amz-Date`` to five minutes after (a
  presigned URL: until its ``X-Amz-Expires`` has passed). Within that window the same signed
  request may come again, as on AWS: SDKs resend a request as it was signed when they retry, and
  identical requests signed within one second carry identical signatures (SigV4 dates have
  one-second resolution), so there is no replay cache.
- The canonical request is built from the raw path exactly as received, never normalised: a
  signature for ``/a/b`` does not also admit ``/x/../a/b``, a path the router reads differently
  (the URL of function ``x``). Its segments are encoded again, as AWS does for every service but
  S3, and the query is decoded and re-encoded in AWS's canonical form.
- ``Authorization`` header signatures always; query-string signatures (``X-Amz-Signature`` in
  the query: presigned URLs) only where Lambda accepts them, function URLs (``presigned=True``).
- Checks go in AWS's order, each failure raising the error AWS returns
  (:class:`~streamfn.errors.NotAuthenticated` and its subclasses): :meth:`SigV4Verifier.claim`
  reads what the request says (algorithm, credential, key, scope, date) before its body is read,
  so a request that cannot be valid costs no body; :meth:`SigV4Verifier.verify` then recomputes
  the signature over the body.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, quote_from_bytes, unquote

from streamfn.access_keys import AccessKey
from streamfn.errors import (
    IncompleteSignature,
    InvalidSignature,
    MissingAuthenticationToken,
    UnrecognizedClient,
)

SERVICE = "lambda"
ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = 300.0  # seconds a signature's X-Amz-Date may be before or after now
MAX_EXPIRES = 604_800  # seconds: the longest X-Amz-Expires AWS accepts (7 days)
_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_SIGNING_KEYS = 1024  # derived signing keys kept, by (access key, day)
_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check "
    "your AWS Secret Access Key and signing method. Consult the service documentation for "
    "details."
)
_QUERY_PARAMETERS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Claim:
    """What a request says about its signature, read before its body: the key it names (known
    to the verifier), the date, the headers it signed and the signature itself."""

    key: AccessKey
    amz_date: str
    scope: str
    signed_headers: tuple[str, ...]
    signature: str
    headers: dict[str, list[str]]  # lowercase name -> values, as received
    presigned: bool


class SigV4Verifier:
    """Checks requests signed for service ``lambda`` in ``region`` with one of ``keys`` (by
    access key id). ``presigned`` also accepts query-string signatures."""

    def __init__(
        self,
        keys: Mapping[str, AccessKey],
        region: str,
        *,
        presigned: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._region = region
        self._presigned = presigned
        self._clock = clock
        self._signing_keys: dict[tuple[str, str], tuple[AccessKey, bytes]] = {}

    def authenticate(
        self, method: str, raw_path: bytes, query: bytes, headers: Headers, body: bytes
    ) -> AccessKey:
        """The key that signed this request, or a NotAuthenticated error saying why not."""
        return self.verify(self.claim(headers, query), method, raw_path, query, body)

    def claim(self, headers: Headers, query: bytes) -> Claim:
        """Everything about the signature that can be checked without the body: it is there
        and well formed, its key is known, its scope is this endpoint, its date is current."""
        values: dict[str, list[str]] = {}
        for name, value in headers:
            values.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        authorization = values.get("authorization")
        if authorization is not None:
            credential, signed, signature = _authorization(authorization[0])
            amz_date = (values.get("x-amz-date") or [""])[0]
            if not amz_date:
                raise IncompleteSignature(
                    "Authorization header requires existence of either a 'X-Amz-Date' or a "
                    "'Date' header."
                )
            expires = None
            token = "x-amz-security-token" in values
        elif self._presigned and b"X-Amz-Signature" in query:
            params = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True))
            credential, signed, signature, amz_date, expires = _query_signature(params)
            token = "X-Amz-Security-Token" in params
        else:
            raise MissingAuthenticationToken
        key_id, day, region, service, terminator = _scope(credential)
        if token:  # keys here are long-term: a session token is not one of theirs
            raise UnrecognizedClient
        key = self._keys.get(key_id)
        if key is None:
            raise UnrecognizedClient
        if region != self._region:
            raise InvalidSignature(
                f"Credential should be scoped to a valid region, not {region!r}."
            )
        if service != SERVICE:
            raise InvalidSignature(f"Credential should be scoped to correct service: {SERVICE!r}.")
        if terminator != "aws4_request":
            raise InvalidSignature(
                "Credential should be scoped with a valid terminator: 'aws4_request'."
            )
        self._check_date(amz_date, day, expires)
        if "host" not in signed:
            raise IncompleteSignature(
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
            )
        scope = "/".join((day, region, service, terminator))
        return Claim(key, amz_date, scope, signed, signature, values, expires is not None)

    def verify(
        self, claim: Claim, method: str, raw_path: bytes, query: bytes, body: bytes
    ) -> AccessKey:
        """The claimed key once the signature recomputed over the request (its raw path,
        query, signed headers and body) is the one it carries."""
        body_hash = hashlib.sha256(body).hexdigest()
        sent_hash = claim.headers.get("x-amz-content-sha256")
        if sent_hash is not None and sent_hash[0] != body_hash:
            raise InvalidSignature(
                "The provided 'x-amz-content-sha256' header does not match what was computed."
            )
        canonical = "\n".join(
            (
                method,
                quote_from_bytes(raw_path or b"/", safe="/~"),
                _canonical_query(query, presigned=claim.presigned),
                *(f"{n}:{_header_value(claim.headers.get(n))}" for n in claim.signed_headers),
                "",
                ";".join(claim.signed_headers),
                body_hash,
            )
        )
        string_to_sign = "\n".join(
            (ALGORITHM, claim.amz_date, claim.scope, hashlib.sha256(canonical.encode()).hexdigest())
        )
        signing_key = self._signing_key(claim.key, claim.scope.partition("/")[0])
        expected = hmac.new(signing_key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), claim.signature.encode("latin-1")):
            raise InvalidSignature(_MISMATCH)
        return claim.key

    def _check_date(self, amz_date: str, day: str, expires: int | None) -> None:
        try:
            signed_at = calendar.timegm(time.strptime(amz_date, _DATE_FORMAT))
        except ValueError:
            raise InvalidSignature(
                f"Date must be in ISO-8601 'basic format'. Got {amz_date!r}."
            ) from None
        if amz_date[:8] != day:
            raise InvalidSignature(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
                f"from HTTP: {day!r} != {amz_date[:8]!r}, from {amz_date!r}."
            )
        now = self._clock()
        if signed_at > now + MAX_SKEW:
            raise InvalidSignature(
                f"Signature not yet current: {amz_date} is still later than "
                f"{_iso(now + MAX_SKEW)} ({_iso(now)} + 5 min.)"
            )
        if expires is not None:
            if now > signed_at + expires:
                raise InvalidSignature("Request has expired")
        elif signed_at < now - MAX_SKEW:
            raise InvalidSignature(
                f"Signature expired: {amz_date} is now earlier than {_iso(now - MAX_SKEW)} "
                f"({_iso(now)} - 5 min.)"
            )

    def _signing_key(self, key: AccessKey, day: str) -> bytes:
        """SigV4's key for ``key`` on ``day``, derived once per day rather than per request."""
        cached = self._signing_keys.get((key.access_key_id, day))
        if cached is not None and cached[0] is key:
            return cached[1]
        derived = ("AWS4" + key.secret_access_key).encode()
        for part in (day, self._region, SERVICE, "aws4_request"):
            derived = hmac.new(derived, part.encode(), hashlib.sha256).digest()
        if len(self._signing_keys) >= _SIGNING_KEYS:
            self._signing_keys.clear()
        self._signing_keys[(key.access_key_id, day)] = (key, derived)
        return derived


def _authorization(header: str) -> tuple[str, tuple[str, ...], str]:
    """Credential, signed header names and signature of an ``Authorization`` header."""
    algorithm, _, rest = header.strip().partition(" ")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, _, value = part.strip().partition("=")
        fields[name] = value
    missing = [n for n in ("Credential", "Signature", "SignedHeaders") if not fields.get(n)]
    if algorithm != ALGORITHM or missing:
        raise IncompleteSignature(
            " ".join(
                f"Authorization header requires '{name}' parameter."
                for name in missing or ("Credential", "Signature", "SignedHeaders")
            )
        )
    return fields["Credential"], tuple(fields["SignedHeaders"].split(";")), fields["Signature"]


def _query_signature(params: dict[str, str]) -> tuple[str, tuple[str, ...], str, str, int]:
    """Credential, signed header names, signature, date and lifetime of a presigned URL."""
    for name in _QUERY_PARAMETERS:
        if not params.get(name):
            raise IncompleteSignature(
                f"AWS query-string parameters must include {name!r}. Re-examine the "
                "query-string parameters."
            )
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise IncompleteSignature(f"X-Amz-Algorithm only supports {ALGORITHM!r}.")
    raw_expires = params["X-Amz-Expires"]
    expires = int(raw_expires) if raw_expires.isdigit() else -1
    if not 1 <= expires <= MAX_EXPIRES:
        raise IncompleteSignature(
            f"X-Amz-Expires must be a whole number of seconds from 1 to {MAX_EXPIRES}."
        )
    signed = tuple(params["X-Amz-SignedHeaders"].split(";"))
    return (
        params["X-Amz-Credential"],
        signed,
        params["X-Amz-Signature"],
        params["X-Amz-Date"],
        expires,
    )


def _scope(credential: str) -> tuple[str, str, str, str, str]:
    parts = credential.split("/")
    if len(parts) != 5:
        raise IncompleteSignature(
            "Credential must have exactly 5 slash-delimited elements, e.g. "
            "keyid/date/region/service/term."
        )
    return parts[0], parts[1], parts[2], parts[3], parts[4]


def _canonical_query(query: bytes, *, presigned: bool) -> str:
    """The query in SigV4's canonical form: each name and value decoded and encoded again
    (RFC 3986 unreserved characters kept), sorted; a presigned URL's signature left out."""
    pairs = []
    for piece in query.decode("latin-1").split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        name = quote(unquote(name), safe="-_.~")
        if presigned and name == "X-Amz-Signature":
            continue
        pairs.append((name, quote(unquote(value), safe="-_.~")))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def _header_value(values: list[str] | None) -> str:
    """A signed header's canonical value: each value trimmed with inner runs of spaces made
    one, repeated headers joined by ','; an absent header signs as empty."""
    return ",".join(" ".join(value.split()) for value in values or ())


def _iso(seconds: float) -> str:
    return time.strftime(_DATE_FORMAT, time.gmtime(seconds))
