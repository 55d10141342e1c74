"""Function URLs: any HTTP request to a function, as Lambda's payload format 2.0 event, and the
function's 2.0 response (or bare JSON) back as the HTTP response.

A function opts in with ``url=FunctionUrl(...)``. Two ways reach it locally:

- by path: ``http://127.0.0.1:9000/urls/<function>/<path>`` (the function sees ``/<path>``);
- by host, as on AWS: ``Host: <function>.lambda-url.<region>.<anything>`` (e.g.
  ``hello.lambda-url.us-east-1.localhost:9000``), the function seeing the whole path.

The URL targets ``$LATEST`` or the alias named by ``FunctionUrl.qualifier``. CORS preflights are
answered here from the ``Cors`` object without invoking the function, and the configured CORS
headers replace any the function sets. ``AWS_IAM`` URLs need a SigV4 signature for service
``lambda`` by one of the app's access keys, in the ``Authorization`` header or in the query (a
presigned URL), from a key granted the function and the URL's qualifier for ``RequestResponse``
(:mod:`streamfn.access_keys`); ``NONE`` URLs are public even when the app has keys, as on AWS.
Errors are Lambda's: 403 for auth failures and unknown URLs, 413, 429, and 502 when the function
fails or returns something unmappable.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import orjson

from streamfn import App
from streamfn.config import Cors, FunctionUrl
from streamfn.dispatch import InvocationResult
from streamfn.errors import AccessDenied, InvocationError, NotAuthenticated

from .._retrylog import RetryLog
from .sigv4 import SigV4Verifier
from .wire import (
    JSON,
    BodyTooLarge,
    Headers,
    Receive,
    Response,
    Scope,
    read_body,
)

log = logging.getLogger("streamfn.http")

PREFIX = "/urls/"
REQUEST_LIMIT = 6_291_456  # bytes; BUFFERED URLs take the synchronous Invoke limit
_HOST = re.compile(r"([a-zA-Z0-9_-]+)\.lambda-url\.([a-z0-9-]+)\.", re.ASCII)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TEXT_TYPES = re.compile(
    r"text/|application/(json|xml|javascript|graphql|[\w.-]+\+(json|xml))", re.ASCII
)
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
_FORBIDDEN = (
    b'{"Message":"Forbidden. For troubleshooting Function URL authorization issues, see: '
    b'https://docs.aws.amazon.com/lambda/latest/dg/urls-auth.html"}'
)
_CORS_NAMES = frozenset(
    {
        b"access-control-allow-origin",
        b"access-control-allow-credentials",
        b"access-control-allow-methods",
        b"access-control-allow-headers",
        b"access-control-expose-headers",
        b"access-control-max-age",
    }
)
_BAD_GATEWAY = (502, [(b"content-type", b"text/plain")], b"Internal Server Error")


def _error(status: int, error_type: str, body: bytes, *extra: tuple[bytes, bytes]) -> Response:
    return (status, [JSON, (b"x-amzn-errortype", error_type.encode()), *extra], body)


_UNKNOWN_URL = _error(403, "AccessDeniedException", b'{"Message":null}')
_DENIED = _error(403, "AccessDeniedException", _FORBIDDEN)
_THROTTLED = _error(429, "TooManyRequestsException", b'{"Message":"Rate Exceeded."}')


class Malformed(Exception):
    """The function's response cannot be mapped to HTTP: Lambda answers 502."""


class FunctionUrls:
    """Routes function URL requests of one app."""

    def __init__(self, app: App) -> None:
        self.app = app
        iam = [
            f
            for f in app.functions.values()
            if f.config.url and f.config.url.auth_type == "AWS_IAM"
        ]
        self.verifier = SigV4Verifier(app.access_keys, app.region, presigned=True) if iam else None
        self._refusals = RetryLog(log, "function URL request refused")

    def target(self, path: str, host: bytes | None) -> tuple[str, str] | None:
        """``(function name, path the function sees)`` when the request is for a URL."""
        if host is not None:
            match = _HOST.match(host.decode("latin-1"))
            if match is not None and match[2] == self.app.region:
                return match[1], path
        if path.startswith(PREFIX):
            name, _, rest = path[len(PREFIX) :].partition("/")
            return name, "/" + rest
        return None

    async def handle(
        self, name: str, path: str, scope: Scope, receive: Receive, request_id: str
    ) -> Response:
        function = self.app.functions.get(name)
        url = function.config.url if function is not None else None
        if url is None:
            return _UNKNOWN_URL
        headers = _header_map(scope["headers"])
        cors = url.cors
        origin = headers.get("origin")
        if cors is not None and _is_preflight(scope["method"], headers):
            return _preflight(cors, headers)
        response = await self._invoke(name, url, path, scope, receive, headers, request_id)
        if cors is None:
            return response
        status, response_headers, body = response
        kept = [(k, v) for k, v in response_headers if k.lower() not in _CORS_NAMES]
        return (status, kept + _cors_headers(cors, origin), body)

    async def _invoke(
        self,
        name: str,
        url: FunctionUrl,
        path: str,
        scope: Scope,
        receive: Receive,
        headers: dict[str, str],
        request_id: str,
    ) -> Response:
        claim = None
        if url.auth_type == "AWS_IAM":  # what the headers alone disprove costs no body
            assert self.verifier is not None
            try:
                claim = self.verifier.claim(scope["headers"], scope["query_string"])
            except NotAuthenticated as exc:
                return self._refused(exc)
        length = headers.get("content-length")
        try:
            body = await read_body(receive, length.encode() if length else None, REQUEST_LIMIT)
        except BodyTooLarge as exc:
            message = f"Request must be smaller than {exc.limit} bytes for the InvokeFunction"
            return _error(413, "RequestEntityTooLargeException", orjson.dumps({"Message": message}))
        identity = None
        if claim is not None:
            assert self.verifier is not None
            try:
                key = self.verifier.verify(
                    claim, scope["method"], scope["raw_path"], scope["query_string"], body
                )
            except NotAuthenticated as exc:
                return self._refused(exc)
            if not key.allows(name, url.qualifier, "RequestResponse"):
                denied = f"access key {key.access_key_id!r} is not granted the URL of {name!r}"
                return self._refused(AccessDenied(denied))
            identity = key.access_key_id
        event = url_event(self.app, name, path, scope, headers, body, request_id, identity)
        function = self.app.resolve(name, url.qualifier)
        if not function.try_reserve():
            return _THROTTLED
        arn = self.app.arn(name, url.qualifier)
        result = await function.invoke(event, request_id=request_id, invoked_arn=arn, reserved=True)
        return url_response(result)

    def _refused(self, reason: InvocationError) -> Response:
        """Lambda's one answer to every auth failure of a URL; the reason goes to the log only
        (at a bounded rate: refusals may come by the thousand)."""
        self._refusals.failed(reason, "answered 403", error_type=reason.error_type)
        return _DENIED


def _header_map(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Lowercase names; repeated headers joined with ',' as Lambda does."""
    out: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        out[key] = f"{out[key]},{text}" if key in out else text
    return out


def _is_preflight(method: str, headers: Mapping[str, str]) -> bool:
    return (
        method == "OPTIONS" and "origin" in headers and ("access-control-request-method" in headers)
    )


def _origin_allowed(cors: Cors, origin: str | None) -> bool:
    if origin is None:
        return False
    return "*" in cors.allow_origins or origin.lower() in (o.lower() for o in cors.allow_origins)


def _allow_origin(cors: Cors, origin: str) -> Headers:
    if "*" in cors.allow_origins and not cors.allow_credentials:
        return [(b"access-control-allow-origin", b"*")]
    return [(b"access-control-allow-origin", origin.encode()), (b"vary", b"Origin")]


def _cors_headers(cors: Cors, origin: str | None) -> Headers:
    """CORS headers of an actual (non-preflight) response: none for a disallowed origin."""
    if origin is None or not _origin_allowed(cors, origin):
        return []
    headers = _allow_origin(cors, origin)
    if cors.allow_credentials:
        headers.append((b"access-control-allow-credentials", b"true"))
    if cors.expose_headers:
        headers.append((b"access-control-expose-headers", ", ".join(cors.expose_headers).encode()))
    return headers


def _preflight(cors: Cors, headers: Mapping[str, str]) -> Response:
    """The answer to a CORS preflight, from the Cors object alone; a disallowed origin or
    method gets a 200 without CORS headers, which the browser treats as a refusal."""
    origin = headers["origin"]
    method = headers["access-control-request-method"].upper()
    methods_ok = "*" in cors.allow_methods or method in cors.allow_methods
    if not _origin_allowed(cors, origin) or not methods_ok:
        return (200, [], b"")
    out = _allow_origin(cors, origin)
    out.append((b"access-control-allow-methods", ", ".join(cors.allow_methods).encode()))
    if cors.allow_headers:
        out.append((b"access-control-allow-headers", ", ".join(cors.allow_headers).encode()))
    if cors.allow_credentials:
        out.append((b"access-control-allow-credentials", b"true"))
    if cors.max_age:
        out.append((b"access-control-max-age", str(cors.max_age).encode()))
    return (200, out, b"")


def url_event(
    app: App,
    name: str,
    path: str,
    scope: Scope,
    headers: dict[str, str],
    body: bytes,
    request_id: str,
    access_key: str | None,
) -> dict[str, Any]:
    """The payload format 2.0 event of one request."""
    now = time.time()
    client = scope.get("client") or ("127.0.0.1", 0)
    server = scope.get("server") or ("127.0.0.1", 0)
    host = headers.get("host", f"{server[0]}:{server[1]}")
    cookie = headers.pop("cookie", None)
    headers.setdefault("x-forwarded-for", client[0])
    headers.setdefault("x-forwarded-proto", scope.get("scheme", "http"))
    headers.setdefault("x-forwarded-port", str(server[1]))
    headers.setdefault("x-amzn-trace-id", f"Root=1-{int(now):08x}-{secrets.token_hex(12)}")
    query: bytes = scope["query_string"]
    raw_query = query.decode("latin-1")
    gmt = time.gmtime(now)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous" if access_key is None else app.account_id,
            "apiId": name,
            "authentication": None,
            "authorizer": None if access_key is None else _iam(app, access_key),
            "domainName": host.partition(":")[0],
            "domainPrefix": name,
            "http": {
                "method": scope["method"],
                "path": path,
                "protocol": f"HTTP/{scope.get('http_version', '1.1')}",
                "sourceIp": client[0],
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime(f"%d/{_MONTHS[gmt.tm_mon - 1]}/%Y:%H:%M:%S +0000", gmt),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookie:
        event["cookies"] = [c.strip() for c in cookie.replace(",", ";").split(";") if c.strip()]
    if raw_query:
        params: dict[str, str] = {}
        for key, value in parse_qsl(raw_query, keep_blank_values=True):
            params[key] = f"{params[key]},{value}" if key in params else value
        event["queryStringParameters"] = params
    if body:
        text = _as_text(body, headers.get("content-type"))
        if text is None:
            event["body"] = base64.b64encode(body).decode()
            event["isBase64Encoded"] = True
        else:
            event["body"] = text
    return event


def _iam(app: App, access_key: str) -> dict[str, Any]:
    return {
        "iam": {
            "accessKey": access_key,
            "accountId": app.account_id,
            "callerId": access_key,
            "cognitoIdentity": None,
            "principalOrgId": None,
            "userArn": f"arn:aws:iam::{app.account_id}:user/{access_key}",
            "userId": access_key,
        }
    }


def _as_text(body: bytes, content_type: str | None) -> str | None:
    """The body as text when its content type is textual (or absent) and it is valid UTF-8;
    None means it travels base64-encoded, as Lambda sends binary bodies."""
    if content_type is not None and _TEXT_TYPES.match(content_type.lower()) is None:
        return None
    try:
        return body.decode()
    except UnicodeDecodeError:
        return None


def url_response(result: InvocationResult) -> Response:
    """Lambda's mapping of a 2.0 response; 502 for a function error or an unmappable value."""
    if result.error is not None:
        return _BAD_GATEWAY
    value = result.value
    try:
        if isinstance(value, dict) and "statusCode" in value:
            return _structured(value)
        return (200, [JSON], orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))
    except (Malformed, TypeError) as exc:
        log.warning(
            "function URL response cannot be mapped",
            extra={"requestId": result.request_id, "error": str(exc)},
        )
        return _BAD_GATEWAY


def _structured(value: dict[str, Any]) -> Response:
    status = value["statusCode"]
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise Malformed(f"statusCode {status!r} is not an HTTP status")
    headers: Headers = []
    raw_headers = value.get("headers") or {}
    if not isinstance(raw_headers, dict):
        raise Malformed("headers must be an object")
    for name, header in raw_headers.items():
        headers.append((_header_name(name), _header_value(header)))
    cookies = value.get("cookies") or []
    if not isinstance(cookies, list):
        raise Malformed("cookies must be a list")
    headers += [(b"set-cookie", _header_value(cookie)) for cookie in cookies]
    return (status, headers, _body(value.get("body"), value.get("isBase64Encoded")))


def _header_name(name: Any) -> bytes:
    if not isinstance(name, str) or _TOKEN.fullmatch(name) is None:
        raise Malformed(f"invalid header name {name!r}")
    return name.lower().encode()


def _header_value(value: Any) -> bytes:
    if isinstance(value, bool):
        value = "true" if value else "false"
    if not isinstance(value, str | int | float):
        raise Malformed(f"invalid header value {value!r}")
    text = str(value)
    if any(c in text for c in "\r\n\0"):
        raise Malformed("header values may not contain CR, LF or NUL")
    return text.encode()


def _body(body: Any, is_base64: Any) -> bytes:
    if body is None:
        return b""
    if not isinstance(body, str):
        raise Malformed("body must be a string")
    if is_base64 is True:
        try:
            return base64.b64decode(body, validate=True)
        except binascii.Error as exc:
            raise Malformed(f"body is not valid base64: {exc}") from None
    return body.encode()
