"""HTTP/1.1 on the wire for `guarded_http`: the request bytes, the response head, the body.

Only what a POST client needs: one request written at once, a status line and headers
parsed strictly (a malformed head is a `ProtocolFailure`), and a body framed by
Content-Length, chunked transfer coding or the end of the connection, of which at most
`limit` bytes are kept. Reading is incremental, so what arrived before a deadline cut
the exchange stays in the caller's `Exchange`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

HEAD_LIMIT: Final = 64 * 1024
"""Longest response head (status line and headers) read before failing."""
DRAIN_LIMIT: Final = 64 * 1024
"""Body bytes past `limit` read and dropped to keep a connection; more and it closes."""
_READ_SIZE: Final = 64 * 1024
_TOKEN: Final = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_STATUS: Final = re.compile(rb"^HTTP/1\.([01]) ([1-9][0-9][0-9])(?: [^\r\n]*)?$")
_CHUNK_SIZE: Final = re.compile(rb"^([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?$")
_OWN_HEADERS: Final = frozenset({"host", "content-length", "transfer-encoding", "connection"})


class HttpFailure(Exception):
    """The exchange failed below HTTP semantics (connect, framing, URL)."""


class ConnectFailed(HttpFailure):
    """No connection could be opened (the cause holds the OS or TLS error)."""


class ProtocolFailure(HttpFailure):
    """The peer broke HTTP/1.1: a malformed head, bad framing, or an early hang-up."""


class InvalidUrl(HttpFailure):
    """The URL is not an http(s) URL this client can send to."""


@dataclass(slots=True)
class Exchange:
    """What one POST has received so far; filled in as it arrives, kept when cut short.

    `headers` has lower-cased names (repeated ones joined with ", "); `body` at most the
    caller's limit of the body's bytes.
    """

    status_code: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)


def encode_request(prefix: bytes, headers: Mapping[str, str], body: bytes) -> bytes:
    """The whole request: `prefix` (request line and Host), `headers`, length, `body`.

    Raises ValueError for a header that is not a token, holds CR, LF or NUL, or is one
    this client writes itself (Host, Content-Length, Transfer-Encoding, Connection).
    """
    lines = [prefix]
    for name, value in headers.items():
        raw_name, raw_value = name.encode("latin-1"), value.encode("latin-1")
        if (
            not _TOKEN.match(raw_name)
            or b"\r" in raw_value
            or b"\n" in raw_value
            or b"\0" in raw_value
            or name.lower() in _OWN_HEADERS
        ):
            raise ValueError(f"header {name!r} cannot be sent")
        lines.append(b"%s: %s\r\n" % (raw_name, raw_value))
    lines.append(b"Content-Length: %d\r\n\r\n" % len(body))
    lines.append(body)
    return b"".join(lines)


@dataclass(frozen=True, slots=True)
class Head:
    """A parsed response head: how its body is framed and whether the connection lasts."""

    status: int
    keep_alive: bool
    chunked: bool
    length: int | None
    """Content-Length; None with `chunked` or when the body runs to the end of the stream."""


def parse_head(raw: bytes, into: Exchange) -> Head:
    """Parse a head ending in CRLF CRLF; fills `into.status_code` and `into.headers`."""
    status_line, *lines = raw[:-4].split(b"\r\n")
    match = _STATUS.match(status_line)
    if match is None:
        raise ProtocolFailure("malformed status line")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.match(name):
            raise ProtocolFailure("malformed header line")
        key = name.decode("ascii").lower()
        text = value.strip(b" \t").decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    status = int(match[2])
    into.status_code, into.headers = status, headers
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = match[1] == b"1" and "close" not in tokens
    if status < 200 or status in (204, 304):
        return Head(status, keep_alive, chunked=False, length=0)
    coding = headers.get("transfer-encoding")
    if coding is not None:
        if coding.rsplit(",", 1)[-1].strip().lower() != "chunked":
            return Head(status, False, chunked=False, length=None)
        return Head(status, keep_alive, chunked=True, length=None)
    length = headers.get("content-length")
    if length is None:
        return Head(status, False, chunked=False, length=None)
    values = {v.strip() for v in length.split(",")}
    if len(values) != 1 or not (only := values.pop()).isdigit() or len(only) > 18:
        raise ProtocolFailure("malformed Content-Length")
    return Head(status, keep_alive, chunked=False, length=int(only))


async def read_body(reader: asyncio.StreamReader, head: Head, into: bytearray, limit: int) -> bool:
    """Read the body into `into` (at most `limit` bytes kept); True if the connection can
    carry another request (the whole body read, keep-alive)."""
    if head.chunked:
        whole = await _read_chunked(reader, into, limit)
    elif head.length is not None:
        whole = await _read_sized(reader, head.length, into, limit)
    else:
        await _read_to_end(reader, into, limit)
        whole = False
    return whole and head.keep_alive


async def _read_sized(
    reader: asyncio.StreamReader, length: int, into: bytearray, limit: int
) -> bool:
    """Keep up to `limit` of `length` bytes; drop the rest if short enough, else stop."""
    keep = min(length, max(limit - len(into), 0))
    await _keep(reader, keep, into)
    remaining = length - keep
    if remaining > DRAIN_LIMIT:
        return False
    if remaining:
        await _exactly(reader, remaining)
    return True


async def _keep(reader: asyncio.StreamReader, n: int, into: bytearray) -> None:
    """Append the next `n` bytes to `into` as they arrive (a trickle is kept so far)."""
    while n:
        chunk = await reader.read(n)
        if not chunk:
            raise ProtocolFailure("the body ended early")
        into += chunk
        n -= len(chunk)


async def _read_chunked(reader: asyncio.StreamReader, into: bytearray, limit: int) -> bool:
    dropped = 0
    while True:
        match = _CHUNK_SIZE.match((await _line(reader))[:-2])
        if match is None:
            raise ProtocolFailure("malformed chunk size")
        size = int(match[1], 16)
        if size == 0:
            while await _line(reader) != b"\r\n":  # trailers, ignored
                pass
            return True
        keep = min(size, max(limit - len(into), 0))
        await _keep(reader, keep, into)
        size -= keep
        dropped += size
        if dropped > DRAIN_LIMIT:
            return False
        if size:
            await _exactly(reader, size)
        if await _exactly(reader, 2) != b"\r\n":
            raise ProtocolFailure("a chunk does not end in CRLF")


async def _read_to_end(reader: asyncio.StreamReader, into: bytearray, limit: int) -> None:
    while len(into) < limit:
        chunk = await reader.read(min(_READ_SIZE, limit - len(into)))
        if not chunk:
            return
        into += chunk


async def _line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\r\n")
    except asyncio.IncompleteReadError as exc:
        raise ProtocolFailure("the body ended early") from exc
    except asyncio.LimitOverrunError as exc:
        raise ProtocolFailure("a chunk line is too long") from exc


async def _exactly(reader: asyncio.StreamReader, n: int) -> bytes:
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError as exc:
        raise ProtocolFailure("the body ended early") from exc
