"""The bounds of the response and wait boundaries, one at a time (fast: no server).

Bodies: decompressed bytes capped while streaming (a gzip bomb is stopped, not inflated),
nesting past the decoder refused. Waits: no pause longer than SYNC_HTTP_MAX_PAUSE_S, no wait
past a request's deadline. Tokens: expires_in floored and capped. Pagination: chains that run
far past X-Total-Count or SYNC_MAX_PAGES end. Clock: the upstream's Date, but never one far in
the future.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from sync_pipeline.sync.fetch import FetchResult, ItemResult
from sync_pipeline.sync.plan import WorkItem
from sync_pipeline.upstream.body import BodyRefused, decode_json, read_capped
from sync_pipeline.upstream.client import RequestFailed, UpstreamClient
from sync_pipeline.upstream.endpoints import BY_PATH
from sync_pipeline.upstream.models import UndecodableRecord
from sync_pipeline.upstream.ratelimit import RateBudget, WaitTooLong
from sync_pipeline.upstream.tokens import (
    DEFAULT_TOKEN_LIFETIME_S,
    TOKEN_LIFETIME_CAP_S,
    TOKEN_LIFETIME_FLOOR_S,
    token_lifetime_s,
)

from .conftest import API_URL, MakeSettings
from .test_client import ALICE, FakeUpstream

MiB = 2**20


class CountingStream(httpx.AsyncByteStream):
    """A streamed body that counts the chunks the reader pulled."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.pulled += 1
            yield chunk


def gzip_chunks(inflated: int, chunk: int = 64 * 1024) -> list[bytes]:
    squeeze = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    wire = b"".join([squeeze.compress(b"0" * inflated), squeeze.flush()])
    return [wire[i : i + chunk] for i in range(0, len(wire), chunk)]


def streamed(chunks: list[bytes], encoding: str | None) -> tuple[httpx.Response, CountingStream]:
    stream = CountingStream(chunks)
    headers = {"Content-Encoding": encoding} if encoding else {}
    return httpx.Response(200, headers=headers, stream=stream), stream


@pytest.mark.anyio
async def test_a_gzip_bomb_is_stopped_at_the_cap_not_inflated() -> None:
    chunks = gzip_chunks(200 * MiB)  # ~200 kB that inflate to 200 MB
    response, stream = streamed(chunks, "gzip")
    with pytest.raises(BodyRefused, match="over the 1048576-byte limit"):
        await read_capped(response, 1 * MiB)
    assert stream.pulled == 1 < len(chunks)  # one network chunk, at most cap + 1 bytes made


@pytest.mark.anyio
@pytest.mark.parametrize("encoding", [None, "identity", "gzip", "deflate"])
async def test_a_body_within_the_cap_is_read_whole(encoding: str | None) -> None:
    body = b'[{"id": "a"}]' * 1000
    if encoding == "gzip":
        wire = zlib.compress(body, wbits=16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        wire = zlib.compress(body)
    else:
        wire = body
    response, _ = streamed([wire[:100], wire[100:]], encoding)
    assert await read_capped(response, len(body)) == body
    response, _ = streamed([wire[:100], wire[100:]], encoding)
    with pytest.raises(BodyRefused, match="limit"):
        await read_capped(response, len(body) - 1)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("encoding", "wire", "reason"),
    [("gzip", b"not gzip at all", "not valid gzip"), ("br", b"x", "unsupported Content-Encoding")],
)
async def test_a_body_we_cannot_inflate_is_refused(encoding: str, wire: bytes, reason: str) -> None:
    response, _ = streamed([wire], encoding)
    with pytest.raises(BodyRefused, match=reason):
        await read_capped(response, MiB)


def test_nesting_past_the_decoder_costs_one_record_or_else_the_body() -> None:
    deep = b"[" * 5000 + b"]" * 5000
    element = b' {"id": "deep", "x": ' + deep + b"}"
    page = decode_json(b'[{"id": "a, ]"},' + element + b", 7]")
    assert page[0] == {"id": "a, ]"} and page[2] == 7
    assert isinstance(page[1], UndecodableRecord)
    assert (page[1].record_id, page[1].size) == ("deep", len(element))
    assert page[1].excerpt == element[:1024].decode()  # what its reject row keeps
    with pytest.raises(BodyRefused, match="nested deeper"):
        decode_json(b'{"data": ' + deep + b"}")  # no array to salvage elements from
    with pytest.raises(BodyRefused, match="nested deeper"):
        decode_json(deep + b" trailing")


def test_a_cut_body_is_retryable() -> None:
    with pytest.raises(ValueError):
        decode_json(b'[{"id": "a"')  # cut off: another attempt may get it whole
    assert decode_json(b'[{"a": NaN, "b": "\\ud800"}]')[0]["b"] == "\ud800"


@pytest.mark.parametrize(
    ("expires_in", "lifetime"),
    [
        (0, TOKEN_LIFETIME_FLOOR_S),
        (-5, TOKEN_LIFETIME_FLOOR_S),
        (1e12, TOKEN_LIFETIME_CAP_S),
        (float("inf"), TOKEN_LIFETIME_CAP_S),
        (float("nan"), DEFAULT_TOKEN_LIFETIME_S),
        (None, DEFAULT_TOKEN_LIFETIME_S),
        (True, DEFAULT_TOKEN_LIFETIME_S),
        ("3600", DEFAULT_TOKEN_LIFETIME_S),
        (3600, 3600.0),
    ],
)
def test_token_lifetimes_get_a_floor_and_a_cap(expires_in: Any, lifetime: float) -> None:
    assert token_lifetime_s(expires_in) == lifetime


def test_no_response_pauses_everyone_longer_than_the_cap() -> None:
    now = [1000.0]
    budget = RateBudget(max_pause_s=2.0, clock=lambda: now[0], wall_clock=lambda: 1.7e9)
    budget.observe(429, {}, retry_after_s=99_999_999)
    assert budget.paused_until == 1002.0
    ten_years = str(int(1.7e9) + 10 * 365 * 86_400)
    budget.observe(200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": ten_years})
    assert budget.paused_until == 1002.0
    # a window said to reset in ten years does not slow everyone to a crawl either
    budget.observe(200, {"X-RateLimit-Remaining": "100", "X-RateLimit-Reset": ten_years})
    assert budget.rate_per_s == 50.0  # 100 requests over at most the 2 s cap


@pytest.mark.anyio
async def test_a_wait_past_the_deadline_fails_at_once_instead_of_waiting() -> None:
    budget = RateBudget(max_pause_s=30.0)
    budget.observe(429, {}, retry_after_s=30.0)
    started = time.monotonic()
    with pytest.raises(WaitTooLong, match="past the"):
        await budget.acquire(deadline=time.monotonic() + 1.0)
    assert time.monotonic() - started < 1.0  # refused, not waited out
    await asyncio.wait_for(RateBudget().acquire(deadline=time.monotonic() + 1.0), 1.0)


def endless(total: int | None, per_page: int = 1) -> Any:
    def handle(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params.get("offset", "0"))
        headers = {"Link": f'<{API_URL}/v1/human/activities?offset={offset + 1}>; rel="next"'}
        if total is not None:
            headers["X-Total-Count"] = str(total)
        records = [{"id": f"r{offset}-{n}"} for n in range(per_page)]
        return httpx.Response(200, json=records, headers=headers)

    return handle


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("total", "per_page", "overrides", "reason", "pages"),
    [
        (2, 1, {}, "far past X-Total-Count 2", 2 * 2 + 50 + 1),
        (0, 0, {}, "far past X-Total-Count 0", 1),  # empty pages that still link on
        (None, 1, {"max_pages": 7}, r"past 7 pages \(SYNC_MAX_PAGES\)", 7),
    ],
)
async def test_a_link_chain_that_never_ends_fails_the_item(
    make_settings: MakeSettings,
    total: int | None,
    per_page: int,
    overrides: dict[str, Any],
    reason: str,
    pages: int,
) -> None:
    upstream = FakeUpstream(endless(total, per_page))
    settings = make_settings(**overrides)
    async with UpstreamClient(settings, transport=upstream.transport()) as client:
        with pytest.raises(RequestFailed, match=reason):
            [p async for p in client.iter_pages(ALICE, BY_PATH["activities"])]
    assert len(upstream.data_requests()) == pages


@pytest.mark.anyio
async def test_the_upstream_clock_is_its_date_header_unless_far_ahead(
    make_settings: MakeSettings,
) -> None:
    dates: list[datetime] = []

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=[], headers={"Date": format_datetime(dates.pop(0), True)})

    upstream = FakeUpstream(handle)
    async with UpstreamClient(make_settings(), transport=upstream.transport()) as client:
        assert abs(client.upstream_now() - datetime.now(UTC)) < timedelta(seconds=60)
        behind = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
        dates[:] = [behind, datetime(2199, 1, 1, tzinfo=UTC)]
        await client.list_sources(ALICE)
        assert behind <= client.upstream_now() < behind + timedelta(minutes=5)
        await client.list_sources(ALICE)  # a Date in 2199 is not believed
        assert client.upstream_now() < behind + timedelta(minutes=5)


def item_result(newest: datetime | None, since: datetime | None) -> ItemResult:
    item = WorkItem(ALICE, BY_PATH["activities"], "list", updated_since=since)
    return ItemResult(item, newest_updated_at=newest)


def test_a_cursor_trails_the_newest_record_and_the_upstream_clock_by_the_lag() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, 500_000, tzinfo=UTC)
    lag = timedelta(minutes=5)
    fetched = FetchResult(
        staged={}, items=[], received={}, rejected=None,  # type: ignore[arg-type]
        refused={}, source_status=None, audits=[], requests=0,  # type: ignore[arg-type]
        upstream_now=now, cursor_lag=lag,
    )  # fmt: skip
    old = datetime(2020, 1, 1, 0, 0, 0, 700_000, tzinfo=UTC)
    # the newest record, a window back (floored to the filter's second)
    assert fetched.next_cursor(item_result(old, None)) == old.replace(microsecond=0) - lag
    # a record stamped in 2199 moves the cursor no further than the upstream's now - lag
    future = datetime(2199, 1, 1, tzinfo=UTC)
    assert fetched.next_cursor(item_result(future, None)) == (now - lag).replace(microsecond=0)
    # never behind where the item started; nothing seen keeps the cursor
    start = datetime(2025, 12, 31, tzinfo=UTC)
    assert fetched.next_cursor(item_result(start + timedelta(seconds=1), start)) == start
    assert fetched.next_cursor(item_result(None, start)) == start
