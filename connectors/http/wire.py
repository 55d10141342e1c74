"""ASGI plumbing shared by the Invoke API, function URLs and the server under them: the response,
the limits a client is held to, Lambda's error body (one shape for the routes' refusals and for
those the server writes itself), reading a body within its size limit (so a large client cannot
hold memory), and request ids."""

from __future__ import annotations

import itertools
import os
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

from streamfn.errors import ConfigError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON = (b"content-type", b"application/json")


#: Status, headers and body of one answer: a plain tuple, which is built in a fraction of the
#: time any class takes, on a path every request takes.
Response = tuple[int, Headers, bytes]


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one client may cost the server, so that no client, slow or greedy, holds
    memory or a connection slot for long.

    - ``header_timeout``, ``body_timeout``: seconds to receive a request's head (request line
      and headers), then its body, or 408 and the connection closed;
    - ``keep_alive``: seconds an idle connection is kept between requests;
    - ``max_url_bytes``: the request target's length, or 414;
    - ``max_header_bytes``: the whole head, request line included, or 431; what a connection may
      buffer before its request starts is bounded by this, not by how fast the client sends;
    - ``max_header_count``: header fields in one request, or 431 (each costs memory beyond its
      bytes);
    - ``max_connections``: past this many connections a new one makes room by closing the
      connection that costs least to lose (a refused one, then an idle keep-alive one, then the
      one longest without progress in receiving its request); only when every connection has a
      request being answered is the new client answered 503.

    Every refusal has Lambda's error shape (:func:`error_body`) and closes the connection.
    """

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive: float = 5.0
    max_url_bytes: int = 8192
    max_header_bytes: int = 16384
    max_header_count: int = 100
    max_connections: int = 2048

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout", "keep_alive"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 < value < float("inf")):
                raise ConfigError.out_of_range(f"Limits.{name}", value, "seconds > 0")
        for name in ("max_url_bytes", "max_header_bytes", "max_header_count", "max_connections"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError.out_of_range(f"Limits.{name}", value, "a whole number >= 1")
        if self.max_url_bytes > self.max_header_bytes:
            raise ConfigError.out_of_range(
                "Limits.max_url_bytes",
                self.max_url_bytes,
                f"<= max_header_bytes ({self.max_header_bytes}), as the URL is part of the head",
            )


#: Error shapes whose message member Lambda's service model capitalises (``Message``); the
#: others have ``message``.
CAPITALISED_MESSAGE = frozenset(
    {"ResourceNotFoundException", "ServiceException", "AccessDeniedException"}
)


def error_body(status: int, code: str, message: str, **members: str) -> bytes:
    """Lambda's rest-json error body, which botocore reads into ``Error.Code``/``Message``
    together with the ``x-amzn-ErrorType: code`` header: ``Type`` is ``User`` below 500 and
    ``Service`` from 500, then the message under the member name the service model gives the
    shape, then any further ``members`` (``Reason`` of a throttle).

    >>> error_body(431, "RequestHeaderFieldsTooLargeException", "Too large.")
    b'{"Type":"User","message":"Too large."}'
    """
    body = {
        "Type": "User" if status < 500 else "Service",
        "Message" if code in CAPITALISED_MESSAGE else "message": message,
        **members,
    }
    return orjson.dumps(body)


def error_response(status: int, code: str, message: str, **members: str) -> Response:
    """A refusal as a :data:`Response`: the status, ``x-amzn-ErrorType`` and
    :func:`error_body`."""
    headers = [JSON, (b"x-amzn-errortype", code.encode())]
    return (status, headers, error_body(status, code, message, **members))


class Disconnected(Exception):
    """The client went away before sending its whole body; there is no one to answer."""


class BodyTooLarge(Exception):
    """The body passed its limit; ``size`` is what was announced or received so far."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(size, limit)
        self.size = size
        self.limit = limit


async def read_body(
    receive: Receive, content_length: bytes | None, limit: int, first: Message | None = None
) -> bytes:
    """The request body, refused as soon as it exceeds ``limit``: never buffers more than that.
    ``first`` is a message already received. (How long the body may take to arrive is the
    server's business: see ``Limits.body_timeout``.)"""
    message = first if first is not None else await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        body: bytes = message.get("body", b"")  # the usual case: the whole body at once
        if len(body) > limit:
            raise BodyTooLarge(len(body), limit)
        return body
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise BodyTooLarge(int(content_length), limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(size, limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()


def _id_prefix() -> str:
    h = os.urandom(10).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[12:15]}-{'89ab'[int(h[15], 16) % 4]}{h[16:19]}-"


_ID_PREFIX = _id_prefix()
_id_counter = itertools.count(int.from_bytes(os.urandom(5)))


def request_id() -> str:
    """A version 4 UUID string unique to this process (random prefix, then a counter): ids
    must be unique, not secret, and ``uuid4``'s system call per request shows in benchmarks.
    (``to_bytes().hex()`` formats the counter in half the time a ``:012x`` format takes.)"""
    return _ID_PREFIX + (next(_id_counter) & 0xFFFF_FFFF_FFFF).to_bytes(6).hex()
