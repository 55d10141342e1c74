"""The STOMP 1.2 framing of the ActiveMQ connector's own client, without a broker."""

from __future__ import annotations

import asyncio

import pytest

from streamfn.connectors.activemq.stomp import encode, read_frame


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def test_headers_are_escaped_and_read_back() -> None:
    wire = encode("SEND", {"destination": "/queue/a", "note": "a:b\nc\\d\re"}, b"hi")
    assert b"note:a\\cb\\nc\\\\d\\re\n" in wire
    frame = await read_frame(_reader(b"\n\n" + wire))  # heart-beat EOLs before it are skipped
    assert (frame.command, frame.headers["note"], frame.body) == ("SEND", "a:b\nc\\d\re", b"hi")


async def test_connect_frames_are_not_escaped() -> None:
    assert encode("CONNECT", {"passcode": "a:b"}).startswith(b"CONNECT\npasscode:a:b\n")
    frame = await read_frame(_reader(b"CONNECTED\nsession:ID:x:1\nversion:1.2\n\n\0"))
    assert frame.headers == {"session": "ID:x:1", "version": "1.2"}


async def test_a_body_with_content_length_may_hold_nul_bytes() -> None:
    reader = _reader(b"MESSAGE\r\ncontent-length:3\r\nx:1\r\nx:2\r\n\r\n\0\1\0\0MESSAGE\n\ntext\0")
    first = await read_frame(reader)
    second = await read_frame(reader)
    assert (first.body, first.headers["x"]) == (b"\0\1\0", "1")  # the first repeated header wins
    assert second.body == b"text"


async def test_a_malformed_escape_is_refused() -> None:
    with pytest.raises(ValueError, match="escape"):
        await read_frame(_reader(b"MESSAGE\nbad:\\t\n\n\0"))
