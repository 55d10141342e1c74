"""ASGI plumbing shared by the Invoke API and function URLs: the response, the limits a client is
held to, reading a body within its size limit (so a large client cannot hold memory), and request
ids."""

from __future__ import annotations

import itertools
import os
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

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
    """Bounds on what one client may cost the server. ``header_timeout`` and ``body_timeout``
    cut clients that send a request's headers or body too slowly (a 408 once the headers are
    in); ``keep_alive`` closes idle connections; ``max_connections`` answers 503 beyond that many
    connections."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive: float = 5.0
    max_connections: int = 2048


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
