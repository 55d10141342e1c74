"""Lambda's Invoke API over HTTP, so boto3, the AWS CLI and SDKs can call streamfn functions;
plus function URLs (see :mod:`streamfn.connectors.http.urls`) and the operational endpoints.

A plain ASGI callable (no framework: the invoke path is bytes in, orjson out) served by uvicorn with
httptools. Service errors follow botocore's rest-json wire format: status code, ``x-amzn-ErrorType``
header and a ``{"Type": ..., "message": ...}`` body, so SDKs raise their modelled exceptions.

Routes (also described by ``connectors/http/openapi.json``, served at ``/openapi.json``):

- ``POST /2015-03-31/functions/{FunctionName}/invocations[?Qualifier=]``: Invoke;
- ``/urls/{function}/{path}`` or ``Host: {function}.lambda-url.{region}.*``: function URLs;
- ``GET /health`` (liveness: no partition stuck, no source fatal), ``GET /ready`` (the app runs,
  is not stopping and every mapping has its assignment), both judged by
  :mod:`streamfn.health`, ``GET /metrics`` (Prometheus text format), ``GET /openapi.json``.

With ``operational_only`` only ``/health``, ``/ready`` and ``/metrics`` are served: the listener
of ``streamfn run --metrics-port``, which keeps them reachable under ``--no-http``.

Authentication: once the app has an access key (:mod:`streamfn.access_keys`), every request must
be SigV4-signed by one (:mod:`.sigv4`) and its key granted the function, qualifier and invocation
type, except ``/health`` and ``/ready`` (kubelet probes cannot sign), ``/openapi.json`` (the
document shipped in the package) and function URLs (each by its own ``auth_type``, as on AWS).
``/metrics`` needs a key here, as it names every function and mapping: Prometheus, which cannot
sign, scrapes the ``operational_only`` listener, which invokes nothing and asks for none. The
signature is checked before anything else about the request (an unsigned caller learns nothing,
not even whether a function exists), before the body is read when its header alone is enough to
refuse it; a key's grants are checked before the function's existence.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import re
import unicodedata
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

import orjson

from streamfn import App, tracing
from streamfn.access_keys import AccessKey
from streamfn.context import ClientContext, Context
from streamfn.dispatch import (
    Function,
    FunctionError,
    InvocationResult,
    current_request_id,
    marshal_error,
)
from streamfn.errors import (
    AccessDenied,
    FunctionNotFound,
    InvalidParameterValue,
    InvalidRequestContent,
    InvocationError,
    MethodNotAllowed,
    MissingAuthenticationToken,
    RequestTooLarge,
    TooManyRequests,
    UnknownOperation,
    UnsupportedMediaType,
    ValidationError,
)
from streamfn.health import Verdict
from streamfn.versions import FUNCTION_NAME, LATEST, FunctionName

from .._retrylog import RetryLog
from . import openapi
from .sigv4 import SigV4Verifier
from .urls import FunctionUrls
from .wire import (
    JSON,
    BodyTooLarge,
    Disconnected,
    Limits,
    Receive,
    Response,
    Scope,
    Send,
    error_response,
    read_body,
    request_id,
)

log = logging.getLogger("streamfn.http")

SYNC_PAYLOAD_LIMIT = 6_291_456  # bytes; AWS's RequestResponse request cap
EVENT_PAYLOAD_LIMIT = 1_048_576  # bytes; AWS's Event request cap (1 MB since Oct 2025)
# The synchronous response cap exactly as Lambda's runtime quotes it in its error message.
RESPONSE_LIMIT = 6_291_556
CLIENT_CONTEXT_LIMIT = 3_583  # bytes of base64

_INVOCATION_TYPES = frozenset({b"RequestResponse", b"Event", b"DryRun"})
_LOG_TYPES = frozenset({b"None", b"Tail"})
# Media types an Invoke body may be declared as; anything else is "not JSON" (415).
_PAYLOAD_TYPES = re.compile(
    rb"\s*(application/(json|x-amz-json-1\.[01]|octet-stream|[\w.-]+\+json)|binary/octet-stream"
    rb"|text/plain)\s*(;.*)?",
    re.ASCII | re.IGNORECASE,
)
# Routes answered without a key even when the app has keys (see the module docstring).
_OPEN_PATHS = frozenset({"/health", "/ready", "/openapi.json"})
_INVOKE_PATH = re.compile(r"/2015-03-31/functions/([^/]+)/invocations")
# Invoke's FunctionName (FUNCTION_NAME) and Qualifier constraints exactly as Lambda's service
# model states them and its ValidationException quotes them.
_FUNCTION_NAME_LENGTH = 256
_QUALIFIER = re.compile(r"\$(LATEST(\.PUBLISHED)?)|[a-zA-Z0-9-_$]+")
_QUALIFIER_LENGTH = 128
_TARGET_CACHE = 4096
# How Lambda's parser (Jackson) frames a body that is not JSON, and words its commonest case.
_NOT_JSON = "Could not parse request body into json: Could not parse payload into json: "
_NOT_A_VALUE = (
    "expected a valid value (JSON String, Number, Array, Object or token 'null', 'true' or 'false')"
)
_JSON_LOCATION = (
    "\n at [Source: REDACTED (`StreamReadFeature.INCLUDE_SOURCE_IN_LOCATION` disabled); "
    "line: {}, column: {}]"
)
# Characters a JSON value may start with, or that Jackson words its own way at the start.
_VALUE_STARTS = frozenset('"{[]},-+./0123456789')
# Unicode categories of the characters Java takes as an identifier's start: Jackson reads a
# token from one ("Unrecognized token"), not a single unexpected character.
_IDENTIFIER_STARTS = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Nl", "Sc", "Pc"})


# AWS's answer to a value over RESPONSE_LIMIT, word for word: the platform reports it, not the
# runtime, so it names neither the size nor the request and has no stack trace.
_RESPONSE_TOO_LARGE = {
    "errorMessage": (
        f"Response payload size exceeded maximum allowed payload size ({RESPONSE_LIMIT} bytes)."
    ),
    "errorType": "Function.ResponseSizeTooLarge",
}

_ACCEPTED: Response = (202, [], b"")
_NO_CONTENT: Response = (204, [], b"")
_UNHANDLED = (b"x-amz-function-error", b"Unhandled")
_PROMETHEUS = (b"content-type", b"text/plain; version=0.0.4; charset=utf-8")

Handler = Callable[[Scope, Receive, str], Awaitable[Response]]


class _Target(NamedTuple):
    """What an Invoke path designates: the function and qualifier, the ARN it was invoked by
    (``context.invoked_function_arn``), and the version it runs unless an alias draws one per
    invocation (then ``function`` is None)."""

    name: str
    qualifier: str | None
    arn: str
    function: Function | None
    #: ``X-Amz-Executed-Version`` of ``function``, when there is one.
    executed: tuple[bytes, bytes] | None = None


class InvokeAPI:
    """The ASGI application of one app: Invoke, function URLs and the operational routes."""

    def __init__(
        self, app: App, limits: Limits | None = None, *, operational_only: bool = False
    ) -> None:
        self.app = app
        self.limits = limits or Limits()
        self.operational_only = operational_only
        self.urls = FunctionUrls(app)
        #: Checks every request but those of _OPEN_PATHS and function URLs, once a key exists.
        self.verifier = (
            SigV4Verifier(app.access_keys, app.region)
            if app.access_keys and not operational_only
            else None
        )
        self._refusals = RetryLog(log, "Invoke API request refused")
        self._targets: dict[tuple[str, bytes], _Target] = {}
        self._routes: dict[str, tuple[str, Handler]] = {
            "/health": ("GET", self._health),
            "/ready": ("GET", self._ready),
            "/metrics": ("GET", self._metrics),
        }
        if not operational_only:
            self._routes["/openapi.json"] = ("GET", self._openapi_document)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every request. Invoke is written out here rather than in a method of its own: it is
        the path every invocation takes, and one coroutine less is a tenth of its cost."""
        if scope["type"] != "http":
            return
        rid = request_id()
        token = current_request_id.set(rid)  # on every log line of this request
        # The caller's trace context is the parent of what the request runs, now or queued.
        parent = tracing.accept(scope["headers"]) if tracing.enabled else None
        complete = False  # whether response's headers already name the request and length
        try:
            routed: Response | _Target | None = None
            if scope["method"] == "POST":
                routed = self._targets.get((scope["path"], scope["query_string"]))
            cached = routed is not None
            caller: AccessKey | None = None
            body: bytes | None = None
            if self.verifier is not None and (cached or self._needs_key(scope)):
                caller, body = await self._authenticate(self.verifier, scope, receive)
            if routed is None:
                routed = await self._dispatch(scope, receive, rid, caller)
            if not isinstance(routed, _Target):
                response = routed
            else:
                headers: dict[bytes, bytes] = dict(scope["headers"])
                kind = headers.get(b"x-amz-invocation-type", b"RequestResponse")
                log_type = headers.get(b"x-amz-log-type")
                content_type = headers.get(b"content-type")
                raw_context = headers.get(b"x-amz-client-context")
                if (  # anything but the plainest request is checked header by header
                    kind != b"RequestResponse"
                    or log_type is not None
                    or (content_type is not None and content_type != b"application/json")
                    or raw_context is not None
                ):
                    kind, tail, client_context = _invocation(headers)
                else:
                    tail, client_context = False, None
                if cached and caller is not None:  # a new target was checked by _target
                    _authorize(caller, routed, kind.decode(), self.app.account_id)
                limit = EVENT_PAYLOAD_LIMIT if kind == b"Event" else SYNC_PAYLOAD_LIMIT
                if body is None:  # else already read, to check its signature
                    message = await receive()
                    if message.get("more_body", False) or message["type"] != "http.request":
                        try:
                            body = await read_body(
                                receive, headers.get(b"content-length"), limit, message
                            )
                        except BodyTooLarge as exc:
                            raise _too_large(exc.size, limit) from None
                    else:  # the usual case: the whole body at once, without another await
                        body = message.get("body", b"")
                if len(body) > limit:
                    raise _too_large(len(body), limit)
                try:
                    event = orjson.loads(body) if body and kind != b"DryRun" else None
                except orjson.JSONDecodeError as exc:
                    raise _not_json(body, exc) from None
                name, qualifier, arn, function, executed = routed
                if kind == b"DryRun":
                    response = _NO_CONTENT
                elif kind == b"Event":
                    await self.app.invoker.submit(name, qualifier, body, rid)
                    response = _ACCEPTED
                else:
                    if function is None or executed is None:  # both or neither
                        function = self.app.resolve(name, qualifier)
                        executed = _executed_version(function.version)
                    # try_reserve's own first test, without the call when there is no limit
                    if function.concurrency.limit is not None and not function.try_reserve():
                        raise function.throttled()
                    ctx = Context(function.info, rid, arn, client_context)
                    if tail:
                        response = _result_response(await function.run_with_tail(event, ctx))
                    else:
                        try:
                            value = await function.call(event, ctx)
                        except FunctionError as failure:
                            response = _failure_response(failure.error, function.version)
                        else:
                            try:
                                # Lambda's runtime uses json.dumps: int (and other) keys too.
                                body = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
                            except TypeError as exc:
                                error = marshal_error(exc, rid)
                                response = _failure_response(error, function.version)
                            else:
                                if len(body) > RESPONSE_LIMIT:
                                    response = _failure_response(
                                        _RESPONSE_TOO_LARGE, function.version
                                    )
                                else:  # the usual answer, its headers complete at once
                                    response = (
                                        200,
                                        [
                                            JSON,
                                            executed,
                                            (b"x-amzn-requestid", rid.encode()),
                                            (b"content-length", b"%d" % len(body)),
                                        ],
                                        body,
                                    )
                                    complete = True
        except InvocationError as exc:
            if exc.status == 403:
                self._refusals.failed(exc, "answered 403", error_type=exc.error_type)
            response = _error_response(exc)
        except Disconnected:
            return
        except Exception:
            log.exception("invoke API request failed", extra={"path": scope["path"]})
            response = _error_response(InvocationError("The Lambda service encountered an error."))
        finally:
            current_request_id.reset(token)
            if parent is not None:
                tracing.detach(parent)
        status, headers_out, body = response
        if complete:
            pass
        elif status in (204, 304):  # these must not carry a Content-Length
            headers_out = [*headers_out, (b"x-amzn-requestid", rid.encode())]
        else:
            length = b"%d" % len(body)
            headers_out = [
                *headers_out,
                (b"x-amzn-requestid", rid.encode()),
                (b"content-length", length),
            ]
        await send({"type": "http.response.start", "status": status, "headers": headers_out})
        await send({"type": "http.response.body", "body": body})

    def _needs_key(self, scope: Scope) -> bool:
        """Whether the request is for a route that only signed requests may use, decided in
        :meth:`_dispatch`'s order: an Invoke path is Invoke whatever its ``Host`` says."""
        path: str = scope["path"]
        if _INVOKE_PATH.fullmatch(path) is not None:
            return True
        return path not in _OPEN_PATHS and self.urls.target(path, _host(scope)) is None

    async def _authenticate(
        self, verifier: SigV4Verifier, scope: Scope, receive: Receive
    ) -> tuple[AccessKey, bytes]:
        """The key that signed the request, and its body, read to check the signature (within
        the limit of its invocation type). What the headers alone disprove is refused first."""
        claim = verifier.claim(scope["headers"], b"")  # the Invoke API takes no presigned URLs
        headers = dict(scope["headers"])
        kind = headers.get(b"x-amz-invocation-type")
        limit = EVENT_PAYLOAD_LIMIT if kind == b"Event" else SYNC_PAYLOAD_LIMIT
        try:
            body = await read_body(receive, headers.get(b"content-length"), limit)
        except BodyTooLarge as exc:
            raise _too_large(exc.size, limit) from None
        key = verifier.verify(
            claim, scope["method"], scope["raw_path"], scope["query_string"], body
        )
        return key, body

    async def _dispatch(
        self, scope: Scope, receive: Receive, request_id: str, caller: AccessKey | None
    ) -> Response | _Target:
        """Every route but a POST to an Invoke target seen before. For an Invoke path seen for
        the first time, the target it names (now remembered), which ``__call__`` invokes;
        ``caller`` is the key that signed the request, if the app has keys."""
        path: str = scope["path"]
        invoke = None if self.operational_only else _INVOKE_PATH.fullmatch(path)
        if invoke is not None:
            if scope["method"] != "POST":
                raise MethodNotAllowed("POST")
            if caller is None and self.verifier is not None:  # never: _needs_key said so
                raise MissingAuthenticationToken
            # A bad header is a 400 even for no function.
            kind, _, _ = _invocation(dict(scope["headers"]))
            return self._remember(invoke[1], scope, caller, kind.decode())
        url = None if self.operational_only else self.urls.target(path, _host(scope))
        if url is not None:
            return await self.urls.handle(*url, scope, receive, request_id)
        route = self._routes.get(path)
        if route is None:
            raise UnknownOperation(f"Unknown operation {scope['method']} {path}")
        method, handler = route
        if scope["method"] != method:
            raise MethodNotAllowed(method)
        return await handler(scope, receive, request_id)

    async def _health(self, scope: Scope, receive: Receive, request_id: str) -> Response:
        return _verdict(self.app.health.live())

    async def _ready(self, scope: Scope, receive: Receive, request_id: str) -> Response:
        return _verdict(self.app.health.ready(self.app.ready))

    async def _metrics(self, scope: Scope, receive: Receive, request_id: str) -> Response:
        return (200, [_PROMETHEUS], self.app.metrics.render().encode())

    async def _openapi_document(self, scope: Scope, receive: Receive, request_id: str) -> Response:
        return (200, [JSON], openapi.document())

    def _remember(
        self, function_name: str, scope: Scope, caller: AccessKey | None, kind: str
    ) -> _Target:
        """:meth:`_target`, kept for the path it came from: functions, versions and aliases do
        not change while the app serves. Only targets that exist are kept, and at most
        ``_TARGET_CACHE`` of them (whoever asks next is checked against them anew)."""
        target = self._target(function_name, scope["query_string"], caller, kind)
        if len(self._targets) >= _TARGET_CACHE:
            self._targets.clear()
        self._targets[(scope["path"], scope["query_string"])] = target
        return target

    def _target(
        self,
        function_name: str,
        query_string: bytes,
        caller: AccessKey | None = None,
        kind: str = "RequestResponse",
    ) -> _Target:
        """The function name and qualifier a FunctionName (and ``?Qualifier=``) designates, and
        the ARN it was invoked by (``context.invoked_function_arn``), checked in AWS's order:
        every constraint the two values break (ValidationException), a qualifier in the name
        that the parameter contradicts (InvalidParameterValueException), whether ``caller``
        (the signing key, if any) is granted the call (AccessDeniedException), then whether
        the function can run (ResourceNotFoundException)."""
        parsed = FunctionName.parse(function_name)
        qualifier = None
        if query_string:
            query = dict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))
            qualifier = query.get("Qualifier")
        violations = _violations(
            "functionName", function_name, FUNCTION_NAME, _FUNCTION_NAME_LENGTH
        )
        if qualifier is not None:
            violations += _violations("qualifier", qualifier, _QUALIFIER, _QUALIFIER_LENGTH)
        if violations or parsed is None:
            count = f"{len(violations)} validation error{'s' if len(violations) > 1 else ''}"
            raise ValidationError(f"{count} detected: {'; '.join(violations)}")
        region, account, name, named_qualifier = parsed
        if qualifier is None:
            qualifier = named_qualifier
        elif named_qualifier is not None and named_qualifier != qualifier:
            raise InvalidParameterValue(
                "The derived qualifier from the function name does not match the specified "
                "qualifier."
            )
        region = region or self.app.region
        account = account or self.app.account_id
        arn = f"arn:aws:lambda:{region}:{account}:function:{name}"
        if caller is not None:
            qualified = arn if qualifier is None else f"{arn}:{qualifier}"
            _authorize(caller, _Target(name, qualifier, qualified, None), kind, self.app.account_id)
        if (region, account) != (self.app.region, self.app.account_id):
            raise FunctionNotFound(f"Function not found: {arn}:{qualifier or LATEST}")
        self.app.check(name, qualifier)
        if qualifier is not None:
            arn = f"{arn}:{qualifier}"
        function = self.app.pinned(name, qualifier)
        executed = None if function is None else _executed_version(function.version)
        return _Target(name, qualifier, arn, function, executed)


def asgi_app(
    app: App, limits: Limits | None = None, *, operational_only: bool = False
) -> InvokeAPI:
    """The Invoke API of ``app`` as an ASGI application, for mounting under any ASGI server.
    ``Event`` invocations need the app running (``App.running()``) for its event queue. With
    ``operational_only``, only ``/health``, ``/ready`` and ``/metrics``."""
    return InvokeAPI(app, limits, operational_only=operational_only)


def _authorize(caller: AccessKey, target: _Target, kind: str, account: str) -> None:
    """AccessDeniedException, in AWS's words, unless ``caller`` is granted ``target``."""
    if not caller.allows(target.name, target.qualifier, kind):
        raise AccessDenied(
            f"User: arn:aws:iam::{account}:user/{caller.access_key_id} is not authorized to "
            f"perform: lambda:InvokeFunction on resource: {target.arn} because no "
            "identity-based policy allows the lambda:InvokeFunction action"
        )


def _verdict(verdict: Verdict) -> Response:
    """A health check's answer: 200 when it passes, else 503, with its reasons as JSON."""
    return (200 if verdict.ok else 503, [JSON], orjson.dumps(verdict.body))


def _host(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"host":
            host: bytes = value
            return host
    return None


def _invocation(headers: dict[bytes, bytes]) -> tuple[bytes, bool, ClientContext | None]:
    """What an Invoke request's headers ask for: the invocation type, whether the log tail is
    wanted, and the client context; InvocationError for a header out of its domain."""
    kind = headers.get(b"x-amz-invocation-type", b"RequestResponse")
    if kind not in _INVOCATION_TYPES:
        raise InvalidParameterValue(
            f"Unsupported invocation type {kind.decode(errors='replace')!r}: "
            "use RequestResponse, Event or DryRun"
        )
    log_type = headers.get(b"x-amz-log-type", b"None")
    if log_type not in _LOG_TYPES:
        raise InvalidParameterValue("LogType must be None or Tail")
    content_type = headers.get(b"content-type")
    if (
        content_type is not None
        and content_type != b"application/json"
        and _PAYLOAD_TYPES.fullmatch(content_type) is None
    ):
        raise UnsupportedMediaType("The content type of the Invoke request body is not JSON.")
    raw_context = headers.get(b"x-amz-client-context")
    client_context = None if raw_context is None else _client_context(raw_context)
    return kind, log_type == b"Tail", client_context


def _violations(member: str, value: str, pattern: re.Pattern[str], length: int) -> list[str]:
    """The constraints of Lambda's service model that ``value`` (of request member ``member``)
    breaks, each worded as AWS's ValidationException words it."""
    broken = []
    if pattern.fullmatch(value) is None:
        broken.append(f"Member must satisfy regular expression pattern: {pattern.pattern}")
    if not value:
        broken.append("Member must have length greater than or equal to 1")
    elif len(value) > length:
        broken.append(f"Member must have length less than or equal to {length}")
    return [f"Value '{value}' at '{member}' failed to satisfy constraint: {b}" for b in broken]


def _not_json(body: bytes, exc: orjson.JSONDecodeError) -> InvalidRequestContent:
    """Lambda's answer to a body that is not JSON, in the frame its parser (Jackson) gives it.
    The reason is Jackson's own words where the first character cannot start any JSON value,
    the case of binary junk such as a payload the AWS CLI v2 base64-decoded; otherwise it is
    orjson's, at orjson's position."""
    start = len(body) - len(body.lstrip(b" \t\r\n"))  # Jackson's whitespace
    char = chr(body[start]) if start < len(body) else ""  # read as Latin-1, as Jackson does
    if char and char not in _VALUE_STARTS and unicodedata.category(char) not in _IDENTIFIER_STARTS:
        line = body.count(b"\n", 0, start) + 1
        column = start - body.rfind(b"\n", 0, start)
        if unicodedata.category(char) == "Cc":  # Java's Character.isISOControl
            described = f"(CTRL-CHAR, code {ord(char)})"
        else:
            described = f"'{char}' (code {ord(char)})"
        reason = f"Unexpected character ({described}): {_NOT_A_VALUE}"
    else:
        line, column, reason = exc.lineno, exc.colno, exc.msg
    return InvalidRequestContent(_NOT_JSON + reason + _JSON_LOCATION.format(line, column))


def _too_large(size: int, limit: int) -> RequestTooLarge:
    if limit == EVENT_PAYLOAD_LIMIT:
        return RequestTooLarge(
            f"{size} byte payload is too large for the Event invocation type (limit {limit} bytes)"
        )
    return RequestTooLarge(
        f"Request must be smaller than {limit} bytes for the InvokeFunction operation"
    )


def _client_context(raw: bytes) -> ClientContext:
    if len(raw) > CLIENT_CONTEXT_LIMIT:
        raise InvalidRequestContent(
            f"Client context must be at most {CLIENT_CONTEXT_LIMIT} bytes of base64"
        )
    try:
        data = orjson.loads(base64.b64decode(raw, validate=True))
    except (binascii.Error, orjson.JSONDecodeError):
        data = None
    if not isinstance(data, dict):
        raise InvalidRequestContent("Client context must be a valid Base64-encoded JSON object.")
    return ClientContext.from_json(data)


def _value_response(value: Any, version: str, request_id: str) -> Response:
    """The function's value as the answer, or the runtime's error when it cannot be returned.
    A 200 in every case, as on Lambda: a function error is flagged by a header, not a status."""
    try:
        # Lambda's runtime uses json.dumps, which accepts int (and other scalar) keys.
        body = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        return _failure_response(marshal_error(exc, request_id), version)
    if len(body) > RESPONSE_LIMIT:
        return _failure_response(_RESPONSE_TOO_LARGE, version)
    return (200, [JSON, _executed_version(version)], body)


def _failure_response(error: dict[str, Any], version: str) -> Response:
    return (200, [JSON, _executed_version(version), _UNHANDLED], orjson.dumps(error))


def _result_response(result: InvocationResult) -> Response:
    """:func:`_value_response` or :func:`_failure_response` for a result, with its log tail."""
    if result.error is None:
        response = _value_response(result.value, result.executed_version, result.request_id)
    else:
        response = _failure_response(result.error, result.executed_version)
    if result.log is not None:
        response[1].append((b"x-amz-log-result", base64.b64encode(result.log_tail())))
    return response


@functools.lru_cache(maxsize=1024)
def _executed_version(version: str) -> tuple[bytes, bytes]:
    return (b"x-amz-executed-version", version.encode())


def _error_response(exc: InvocationError) -> Response:
    """The one place refusals become Lambda's rest-json service errors."""
    members: dict[str, str] = {}
    extra: list[tuple[bytes, bytes]] = []
    if isinstance(exc, TooManyRequests):
        members["Reason"] = exc.reason
        if exc.retry_after is not None:  # a full event queue; a throttle has none, as on AWS
            extra.append((b"retry-after", b"%d" % exc.retry_after))
    elif isinstance(exc, MethodNotAllowed):
        extra.append((b"allow", exc.allow.encode()))
    status, headers, body = error_response(exc.status, exc.error_type, str(exc), **members)
    return (status, [*headers, *extra], body)
