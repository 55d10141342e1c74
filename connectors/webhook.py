"""An HTTP webhook as a destination: each record is POSTed as JSON, and only a 2xx answer
counts as stored. The record's key (an async invocation's request id) travels as
``Idempotency-Key``, so a receiver can drop the duplicates at-least-once delivery may bring."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson

from streamfn.errors import ConfigError, DestinationError


class WebhookDestination:
    """POSTs records to ``url`` (http or https) with ``headers`` added, within ``timeout``
    seconds per attempt; the caller retries a refusal."""

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        include_payload: bool = False,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError.out_of_range("url", url, "an http:// or https:// URL")
        extra = dict(headers or {})
        if any(c in text for item in extra.items() for text in item for c in "\r\n"):
            raise ConfigError.out_of_range("headers", extra, "names and values without CR/LF")
        self.url = url
        self.include_payload = include_payload
        self.timeout = timeout
        self._tls = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        self._authority = parts.netloc.rpartition("@")[2]
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._headers = "".join(f"{name}: {value}\r\n" for name, value in extra.items())

    def describe(self) -> str:
        return self.url

    async def send(self, record: Mapping[str, Any], *, key: bytes | None = None) -> None:
        body = orjson.dumps(record)
        try:
            async with asyncio.timeout(self.timeout):
                status = await self._post(body, key)
        except (OSError, TimeoutError, ValueError) as exc:
            raise DestinationError(f"cannot POST to {self.url}: {exc!r}") from exc
        if not 200 <= status < 300:
            raise DestinationError(f"{self.url} answered {status}")

    async def _post(self, body: bytes, key: bytes | None) -> int:
        reader, writer = await asyncio.open_connection(
            self._host, self._port, ssl=ssl.create_default_context() if self._tls else None
        )
        try:
            head = (
                f"POST {self._target} HTTP/1.1\r\nHost: {self._authority}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                f"Connection: close\r\n{self._headers}"
            )
            if key is not None:
                head += f"Idempotency-Key: {key.decode(errors='replace')}\r\n"
            writer.write(head.encode() + b"\r\n" + body)
            await writer.drain()
            status_line = await reader.readline()
            parts = status_line.split()
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
                raise ValueError(f"not an HTTP response: {status_line[:80]!r}")
            return int(parts[1])
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
