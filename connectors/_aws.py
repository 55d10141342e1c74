"""Which AWS errors no retry fixes, for every AWS connector: a refused identity or permission
disables the mapping (as Lambda disables one that lost access), while throttling, 5xx answers
and network errors are retried by the caller."""

from __future__ import annotations

from botocore.exceptions import ClientError

#: Error codes by which AWS refuses the caller's identity, signature or permissions, the KMS key
#: of an encrypted stream or queue included.
REFUSED = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "ExpiredToken",
        "ExpiredTokenException",
        "IncompleteSignature",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "InvalidSecurity",
        "KMSAccessDeniedException",
        "KMSDisabledException",
        "KMSInvalidStateException",
        "KMSNotFoundException",
        "KMSOptInRequired",
        "MissingAuthenticationToken",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
    }
)


def refusal(exc: BaseException) -> str | None:
    """``"HTTP 403, AccessDeniedException: <message>"`` when ``exc`` is AWS refusing access,
    else None."""
    if not isinstance(exc, ClientError):
        return None
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in REFUSED or status in (401, 403):
        return f"HTTP {status}, {code}: {error.get('Message', '')}"
    return None
