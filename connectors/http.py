"""Lambda's Invoke API over HTTP, so boto3, the AWS CLI and SDKs can call streamfn functions.

A plain ASGI callable (no framework: the invoke path is bytes in, orjson out) served by uvicorn with
httptools. Service errors follow botocore's rest-json wire format: status code, ``x-amzn-ErrorType``
header and a ``{"Type": ..., "message": ...}`` body, so SDKs raise their modelled exceptions.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import re
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from streamfn import App
from streamfn.context import ClientContext
from streamfn.dispatch import Function, InvocationResult
from streamfn.errors import (
    ConfigError,
    FunctionNotFound,
    InvalidRequestContent,
    InvocationError,
    RequestTooLarge,
    TooManyRequests,
)

log = logging.getLogger("streamfn.http")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SYNC_PAYLOAD_LIMIT = 6_291_456  # bytes; AWS's RequestResponse request cap
EVENT_PAYLOAD_LIMIT = 1_048_576  # bytes; AWS's Event request cap (1 MB since Oct 2025)
# The synchronous response cap exactly as Lambda's runtime quotes it in its error message.
RESPONSE_LIMIT = 6_291_556
CLIENT_CONTEXT_LIMIT = 3_583  # bytes of base64

_INVOCATION_TYPES = frozenset({b"RequestResponse", b"Event", b"DryRun"})
# Error shapes whose message member is capitalised in the Lambda service model.
_CAPITALISED_MESSAGE = frozenset({"ResourceNotFoundException", "ServiceException"})
# FunctionName forms: name, partial ARN and full ARN, each with an optional ":qualifier".
_FUNCTION_NAME = re.compile(
    r"(?:arn:aws[a-zA-Z-]*:lambda:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):function:"
    r"|(?P<partial_account>\d{12}):function:)?"
    r"(?P<name>[a-zA-Z0-9_-]+)(?::(?P<qualifier>\$LATEST|[a-zA-Z0-9_-]+))?"
)


class InvalidParameterValue(InvocationError):
    error_type = "InvalidParameterValueException"
    status = 400


class ValidationError(InvocationError):
    error_type = "ValidationException"
    status = 400


class UnknownOperation(InvocationError):
    error_type = "UnknownOperationException"
    status = 404


class MethodNotAllowed(InvocationError):
    error_type = "MethodNotAllowedException"
    status = 405

    def __init__(self, allow: str) -> None:
        super().__init__(f"Method not allowed; use {allow}")
        self.allow = allow


class _Disconnected(Exception):
    """The client went away before sending its whole body; there is no one to answer."""


class Response(NamedTuple):
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


_HEALTHY = Response(200, [], b'{"status":"ok"}')
_ACCEPTED = Response(202, [], b"")
_NO_CONTENT = Response(204, [], b"")

Route = Callable[[re.Match[str], Scope, Receive, str], Awaitable[Response]]


class InvokeAPI:
    """The ASGI application. It also owns the tasks of ``Event`` invocations, so the server can
    wait for them on shutdown instead of dropping accepted events."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._background: set[asyncio.Task[None]] = set()
        self._routes: list[tuple[re.Pattern[str], str, Route]] = [
            (re.compile(r"/health"), "GET", self._health),
            (re.compile(r"/2015-03-31/functions/([^/]+)/invocations"), "POST", self._invoke),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request_id = str(uuid.uuid4())
        try:
            response = await self._route(scope, receive, request_id)
        except InvocationError as exc:
            response = _error_response(exc)
        except _Disconnected:
            return
        except Exception:
            log.exception(
                "invoke API request failed", extra={"path": scope["path"], "requestId": request_id}
            )
            response = _error_response(InvocationError("The Lambda service encountered an error."))
        headers = [
            *response.headers,
            (b"x-amzn-requestid", request_id.encode()),
            (b"content-type", b"application/json"),
        ]
        if response.status != 204:  # a 204 must not carry a Content-Length
            headers.append((b"content-length", str(len(response.body)).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    async def aclose(self) -> None:
        """Wait for accepted ``Event`` invocations to finish (each is bounded by its timeout)."""
        if self._background:
            await asyncio.wait(self._background)

    async def _route(self, scope: Scope, receive: Receive, request_id: str) -> Response:
        path: str = scope["path"]
        for pattern, method, handler in self._routes:
            match = pattern.fullmatch(path)
            if match is not None:
                if scope["method"] != method:
                    raise MethodNotAllowed(method)
                return await handler(match, scope, receive, request_id)
        raise UnknownOperation(f"Unknown operation {scope['method']} {path}")

    async def _health(
        self, match: re.Match[str], scope: Scope, receive: Receive, request_id: str
    ) -> Response:
        return _HEALTHY

    async def _invoke(
        self, match: re.Match[str], scope: Scope, receive: Receive, request_id: str
    ) -> Response:
        headers: dict[bytes, bytes] = dict(scope["headers"])
        invocation_type = headers.get(b"x-amz-invocation-type", b"RequestResponse")
        if invocation_type not in _INVOCATION_TYPES:
            raise InvalidParameterValue(
                f"Unsupported invocation type {invocation_type.decode(errors='replace')!r}: "
                "use RequestResponse, Event or DryRun"
            )
        function, invoked_arn = self._resolve(match[1], scope["query_string"])
        client_context = _client_context(headers.get(b"x-amz-client-context"))
        if invocation_type == b"DryRun":
            return _NO_CONTENT
        if invocation_type == b"Event":
            body = await _read_body(receive, headers.get(b"content-length"), EVENT_PAYLOAD_LIMIT)
            event = _parse_payload(body)
            if function.config.reserved_concurrency == 0:
                # Until events are queued durably, one that can never run has nowhere to wait.
                raise function.throttled()
            self._schedule(function, event, request_id, invoked_arn)
            return _ACCEPTED
        body = await _read_body(receive, headers.get(b"content-length"), SYNC_PAYLOAD_LIMIT)
        event = _parse_payload(body)
        if not await function.try_reserve():
            raise function.throttled()
        result = await function.invoke(
            event,
            request_id=request_id,
            client_context=client_context,
            invoked_arn=invoked_arn,
            reserved=True,
        )
        return _result_response(result)

    def _resolve(self, function_name: str, query_string: bytes) -> tuple[Function, str]:
        """The function a FunctionName (and ``?Qualifier=``) designates, and the ARN it was invoked
        by, which Lambda hands to the handler as ``context.invoked_function_arn``."""
        parsed = _FUNCTION_NAME.fullmatch(function_name)
        if parsed is None:
            raise ValidationError(
                f"1 validation error detected: Value {function_name!r} at 'functionName' failed "
                "to satisfy constraint: Member must be a function name or ARN"
            )
        name = parsed["name"]
        qualifier = parsed["qualifier"]
        if query_string:
            query = dict(parse_qsl(query_string.decode("latin-1")))
            if "Qualifier" in query:
                if qualifier is not None and qualifier != query["Qualifier"]:
                    raise InvalidParameterValue(
                        "The derived qualifier from the function name does not match the "
                        "specified qualifier."
                    )
                qualifier = query["Qualifier"]
        region = parsed["region"] or self.app.region
        account = parsed["account"] or parsed["partial_account"] or self.app.account_id
        arn = f"arn:aws:lambda:{region}:{account}:function:{name}"
        if qualifier is not None:
            arn = f"{arn}:{qualifier}"
        function = self.app.functions.get(name)
        if (
            function is None
            or (region, account) != (self.app.region, self.app.account_id)
            or qualifier not in (None, "$LATEST", function.config.version)
        ):
            raise FunctionNotFound(f"Function not found: {arn}")
        return function, arn

    def _schedule(self, function: Function, event: Any, request_id: str, arn: str) -> None:
        task = asyncio.create_task(self._run_event(function, event, request_id, arn))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _run_event(self, function: Function, event: Any, request_id: str, arn: str) -> None:
        """Run one accepted ``Event`` invocation; nobody awaits its result, so failures are
        logged here."""
        extra = {"function": function.name, "requestId": request_id}
        try:
            result = await function.invoke(event, request_id=request_id, invoked_arn=arn)
        except Exception:
            log.exception("event invocation crashed", extra=extra)
            return
        if result.error is not None:
            log.warning(
                "event invocation failed",
                extra={
                    **extra,
                    "errorType": result.error.get("errorType"),
                    "errorMessage": result.error.get("errorMessage"),
                },
            )


def asgi_app(app: App) -> InvokeAPI:
    """The Invoke API of ``app`` as an ASGI application, for mounting under any ASGI server."""
    return InvokeAPI(app)


async def _read_body(receive: Receive, content_length: bytes | None, limit: int) -> bytes:
    """The request body, refused as soon as it exceeds ``limit``: never buffers more than that."""
    if content_length is not None and int(content_length) > limit:
        raise _too_large(int(content_length), limit)
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(size: int, limit: int) -> RequestTooLarge:
    if limit == EVENT_PAYLOAD_LIMIT:
        return RequestTooLarge(
            f"{size} byte payload is too large for the Event invocation type (limit {limit} bytes)"
        )
    return RequestTooLarge(
        f"Request must be smaller than {limit} bytes for the InvokeFunction operation"
    )


def _parse_payload(body: bytes) -> Any:
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestContent(f"Could not parse request body into json: {exc}") from None


def _client_context(raw: bytes | None) -> ClientContext | None:
    if raw is None:
        return None
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


def _result_response(result: InvocationResult) -> Response:
    """A 200 in every case, as on Lambda: a function error is flagged by a header, not a status."""
    headers = [(b"x-amz-executed-version", result.executed_version.encode())]
    error = result.error
    if error is None:
        try:
            # Lambda's runtime uses json.dumps, which accepts int (and other scalar) keys.
            body = orjson.dumps(result.value, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as exc:
            error = _runtime_error(
                "Runtime.MarshalError", f"Unable to marshal response: {exc}", result
            )
        else:
            if len(body) <= RESPONSE_LIMIT:
                return Response(200, headers, body)
            error = _runtime_error(
                "Function.ResponseSizeTooLarge",
                f"Response payload size ({len(body)} bytes) exceeded maximum allowed payload "
                f"size ({RESPONSE_LIMIT} bytes).",
                result,
            )
    headers.append((b"x-amz-function-error", b"Unhandled"))
    return Response(200, headers, orjson.dumps(error))


def _runtime_error(error_type: str, message: str, result: InvocationResult) -> dict[str, Any]:
    return {
        "errorMessage": message,
        "errorType": error_type,
        "requestId": result.request_id,
        "stackTrace": [],
    }


def _error_response(exc: InvocationError) -> Response:
    """The one place refusals become Lambda's rest-json service errors."""
    code = exc.error_type
    body: dict[str, str] = {
        "Type": "User" if exc.status < 500 else "Service",
        "Message" if code in _CAPITALISED_MESSAGE else "message": str(exc),
    }
    headers = [(b"x-amzn-errortype", code.encode())]
    if isinstance(exc, TooManyRequests):
        body["Reason"] = exc.reason
        headers.append((b"retry-after", b"1"))
    elif isinstance(exc, MethodNotAllowed):
        headers.append((b"allow", exc.allow.encode()))
    return Response(exc.status, headers, orjson.dumps(body))


class _Server(uvicorn.Server):
    """uvicorn's server minus its signal handlers: ``App.serve`` owns SIGTERM/SIGINT and tells
    this server to stop through the ``stop`` event."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    """Bind here rather than in uvicorn, whose bind failure calls ``sys.exit``."""
    try:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    try:
        return socket.create_server(address, family=family, backlog=2048)
    except OSError as exc:
        # create_server appends the address to strerror; the message already names it.
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(f"cannot listen on {host}:{port}: {reason}") from exc


async def serve(
    app: App, stop: asyncio.Event, *, host: str = "127.0.0.1", port: int = 9000
) -> None:
    """Serve the Invoke API until ``stop`` is set, then finish in-flight requests and accepted
    ``Event`` invocations before returning. Raises ConfigError if the address cannot be bound."""
    sock = _bind(host, port)
    with sock:
        api = asgi_app(app)
        config = uvicorn.Config(
            api,
            http=HttpToolsProtocol,
            ws="none",
            lifespan="off",
            interface="asgi3",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
        )
        server = _Server(config)
        log.info("listening", extra={"host": host, "port": sock.getsockname()[1]})
        running = asyncio.create_task(server.serve(sockets=[sock]))
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait((running, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            server.should_exit = True
            await running
        await api.aclose()
