"""The response-level containment boundary: reading and decoding one body within fixed bounds.

`read_capped` streams a response and inflates it ourselves, with zlib's `max_length`, so the
bytes held never pass `limit` + one network chunk, however well the body compresses (a 200 kB
gzip of zeros inflating to 200 MB stops at the limit; httpx's own decoder would inflate each
64 KiB chunk whole, up to ~64 MB at a time). `decode_json` turns a body into JSON or says, with
a reason, why it cannot; an array element nested past the decoder's limit becomes one
`UndecodableRecord` (rejected by the normaliser) while the rest of its page decodes, and a
RecursionError never escapes into the run.

Both raise `BodyRefused` for a body that will never do, which the client turns into a failure
of that one request (and so of that one (user, endpoint) item), never retried: the same
upstream sends the same body again.
"""

from __future__ import annotations

import json
import re
import zlib
from typing import Any

import httpx
import orjson

from sync_pipeline.upstream.models import UndecodableRecord

# What we tell the upstream we can read: exactly what read_capped can inflate within bounds.
ACCEPT_ENCODING = "gzip, deflate"


class BodyRefused(Exception):
    """A response body we will not use; the message is the reason (no body content in it)."""


def _inflater(encoding: str) -> Any | None:
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    raise BodyRefused(f"unsupported Content-Encoding {encoding[:40]!r}")


async def read_capped(response: httpx.Response, limit: int) -> bytes:
    """The body of a streamed `response`, decompressed, at most `limit` bytes; BodyRefused
    (and the connection closed) when it would be more, or cannot be inflated."""
    if response.is_stream_consumed:
        # already in memory (a transport that hands over whole bodies, e.g. httpx's
        # MockTransport in fast tests): nothing left to bound but what is kept
        await response.aclose()
        if len(response.content) > limit:
            raise BodyRefused(f"body is over the {limit}-byte limit (SYNC_MAX_RESPONSE_BYTES)")
        return response.content
    encoding = response.headers.get("content-encoding", "").strip().lower()
    inflater = _inflater(encoding)
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_raw():
            pieces = [chunk] if inflater is None else _inflate(inflater, chunk, limit - size)
            for piece in pieces:
                size += len(piece)
                if size > limit:
                    raise BodyRefused(
                        f"body is over the {limit}-byte limit (SYNC_MAX_RESPONSE_BYTES)"
                    )
                parts.append(piece)
        if inflater is not None:
            tail = inflater.flush()
            size += len(tail)
            if size > limit:
                raise BodyRefused(f"body is over the {limit}-byte limit (SYNC_MAX_RESPONSE_BYTES)")
            parts.append(tail)
    except zlib.error:
        raise BodyRefused(f"body is not valid {encoding}") from None
    finally:
        await response.aclose()
    return b"".join(parts)


def _inflate(inflater: Any, chunk: bytes, room: int) -> list[bytes]:
    """Inflate `chunk`, never producing more than `room` + 1 bytes at a time (so a bomb is
    noticed after one step over the limit, not after the whole chunk has expanded)."""
    out: list[bytes] = []
    data = chunk
    while data:
        piece = inflater.decompress(data, max(room, 0) + 1)
        out.append(piece)
        room -= len(piece)
        if room < 0:
            return out
        data = inflater.unconsumed_tail
    return out


def decode_plain(body: bytes) -> tuple[Any, bool]:
    """`decode_json`, and whether orjson alone read the body: then any process that reads the
    same bytes with orjson gets the same value, so a raw page can be handed on and decoded
    again elsewhere (the json module's fallbacks depend on the stack depth they run at)."""
    try:
        return orjson.loads(body), True
    except orjson.JSONDecodeError:
        return decode_json(body), False


def decode_json(body: bytes) -> Any:
    """A body as JSON. orjson parses several times faster than the json module (every page
    passes here); the json module still decides what orjson refuses (NaN/Infinity literals,
    lone surrogates in strings, nesting past orjson's 1024 levels) so nothing the upstream
    could always send is refused now. ValueError when the body is not JSON (maybe cut off:
    worth another attempt).

    A body nested deeper than the decoder goes: when it is an array whose elements can be
    told apart, each element is decoded alone and one still too deep becomes an
    `UndecodableRecord` for the normaliser to reject, so the rest of the page loads; else
    BodyRefused (the request fails, never with a RecursionError)."""
    try:
        return _loads(body)
    except RecursionError:
        pass
    elements = split_array(body)
    if elements is None:
        raise BodyRefused("body is nested deeper than the JSON decoder allows")
    return [_decode_element(element) for element in elements]


# One token of JSON that matters for finding an array's elements: a string (escapes included),
# a bracket or a comma. Everything else (numbers, literals, whitespace) lies between them.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},]')
_ID = re.compile(rb'"id"\s*:\s*"((?:[^"\\]|\\.){1,200})"')
_EXCERPT_BYTES = 1024


def split_array(body: bytes) -> list[bytes] | None:
    """The elements of a top-level JSON array, as byte slices; None if `body` is not one
    (the elements themselves are not validated: each is decoded on its own)."""
    start = body.find(b"[")
    if start < 0 or body[:start].strip():
        return None
    depth = 0
    elements: list[bytes] = []
    element_start = start + 1
    end = -1
    for token in _TOKEN.finditer(body, start):
        kind = token.group()
        if kind in (b"[", b"{"):
            depth += 1
        elif kind in (b"]", b"}"):
            depth -= 1
            if depth == 0:
                end = token.start()
                break
        elif kind == b"," and depth == 1:
            elements.append(body[element_start : token.start()])
            element_start = token.end()
    if end < 0 or body[end + 1 :].strip():
        return None
    last = body[element_start:end]
    if last.strip() or elements:
        elements.append(last)
    return elements


def _loads(data: bytes) -> Any:
    """orjson, and the json module for what orjson refuses; RecursionError and ValueError
    (not JSON) are the caller's to judge."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def _decode_element(element: bytes) -> Any:
    try:
        return _loads(element)
    except RecursionError:
        reason = "record is nested deeper than the JSON decoder allows"
    except (ValueError, UnicodeDecodeError):
        reason = "record is not valid JSON"
    found = _ID.search(element[: _EXCERPT_BYTES * 4])
    record_id = found.group(1).decode(errors="replace") if found else None
    excerpt = element[:_EXCERPT_BYTES].decode(errors="replace")
    return UndecodableRecord(reason, len(element), record_id, excerpt)
