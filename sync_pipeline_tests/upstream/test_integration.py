"""UpstreamClient against a real HTTP server on 127.0.0.1 (loopback.py), end to end."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from sync_pipeline.settings import Settings
from sync_pipeline.upstream.client import RequestAudit, UpstreamClient, UserNeedsReconnect, UserRef
from sync_pipeline.upstream.endpoints import BY_PATH, Endpoint

from .conftest import CLIENT_ID, CLIENT_SECRET, MakeSettings
from .loopback import Behaviour, LoopbackUpstream, serve

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

USERS = [UserRef(f"user-{n}@app", f"{n:032x}") for n in range(3)]
ENDPOINTS = [BY_PATH["activities"], BY_PATH["medical/test_results"]]


@pytest.fixture
def loopback(request: pytest.FixtureRequest) -> Iterator[LoopbackUpstream]:
    upstream = LoopbackUpstream(CLIENT_ID, CLIENT_SECRET, request.param)
    with serve(upstream.app()) as base_url:
        upstream.base_url = base_url
        yield upstream


def settings_for(upstream: LoopbackUpstream, make_settings: MakeSettings, **kw: Any) -> Settings:
    return make_settings(**kw).with_upstream(upstream.base_url)


async def sync_all(
    client: UpstreamClient, users: list[UserRef], endpoints: list[Endpoint], page_size: int
) -> dict[UserRef, list[Any] | BaseException]:
    """What a run does: every (user, endpoint) concurrently; one user's failure spares the rest."""

    async def one_user(user: UserRef) -> list[Any]:
        async def one_endpoint(endpoint: Endpoint) -> list[Any]:
            pages = client.iter_pages(user, endpoint, page_size=page_size)
            return [r["id"] async for page in pages for r in page.records]

        per_endpoint = await asyncio.gather(*(one_endpoint(e) for e in endpoints))
        return [record_id for ids in per_endpoint for record_id in ids]

    results = await asyncio.gather(*(one_user(u) for u in users), return_exceptions=True)
    return dict(zip(users, results, strict=True))


def expected_ids(user: UserRef, endpoints: list[Endpoint], total: int) -> list[str]:
    prefix = user.client_user_id
    return [f"{prefix}:/v1/human/{e.path}:{i}" for e in endpoints for i in range(total)]


@pytest.mark.parametrize(
    "loopback",
    [
        # tokens really expire after 0.3 s and the client is told so: it renews before expiry
        Behaviour(records_per_endpoint=95, token_lifetime_s=0.3, data_delay_s=0.01),
        # tokens die after 0.3 s but are advertised for an hour: the data API's 401 drives renewal
        Behaviour(
            records_per_endpoint=95,
            token_lifetime_s=0.3,
            advertised_lifetime_s=3600,
            data_delay_s=0.01,
        ),
    ],
    indirect=True,
    ids=["renew-before-expiry", "renew-on-401"],
)
async def test_many_pages_survive_token_expiry_without_leaking_tokens(
    loopback: LoopbackUpstream, make_settings: MakeSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    audits: list[RequestAudit] = []
    settings = settings_for(loopback, make_settings, http_concurrency=2)
    async with UpstreamClient(settings, on_request=audits.append) as client:
        results = await sync_all(client, USERS, ENDPOINTS, page_size=5)
    for user in USERS:
        assert results[user] == expected_ids(user, ENDPOINTS, 95)
    assert client.token_request_count > len(USERS)  # tokens were renewed mid-sync
    if loopback.behaviour.advertised_lifetime_s is not None:
        assert any(s.status == 401 for s in loopback.seen)
    assert client.request_count == len([s for s in loopback.seen if s.path.startswith("/v1/human")])
    assert len(audits) == len(loopback.seen)
    assert all("?" not in a.path for a in audits)
    text = caplog.text
    assert "<- GET /v1/human/activities 200" in text
    leaks = [*loopback.issued_tokens, "loopback-refresh-", CLIENT_SECRET, "Bearer l", "limit="]
    assert not [leak for leak in leaks if leak in text]


@pytest.mark.parametrize(
    "loopback", [Behaviour(records_per_endpoint=20, rate_limit=4)], indirect=True
)
async def test_429_storm_is_honoured_and_paced(
    loopback: LoopbackUpstream, make_settings: MakeSettings
) -> None:
    # 6 streams start at once against 4 requests per second: the first burst must be throttled
    settings = settings_for(loopback, make_settings, http_concurrency=16, http_max_attempts=10)
    async with UpstreamClient(settings) as client:
        results = await sync_all(client, USERS, ENDPOINTS, page_size=10)
    for user in USERS:
        assert results[user] == expected_ids(user, ENDPOINTS, 20)
    throttled = [s for s in loopback.seen if s.status == 429]
    assert throttled
    # no storm: after the first burst, the budget keeps the client under the advertised limit
    assert len(throttled) <= len(USERS) * len(ENDPOINTS)
    for refusal in throttled:
        retries = [
            s.at for s in loopback.seen if s.request_id == refusal.request_id and s.at > refusal.at
        ]
        assert retries, "a throttled request was never retried"
        assert retries[0] - refusal.at >= (refusal.retry_after or 0) - 0.02


@pytest.mark.parametrize(
    "loopback", [Behaviour(records_per_endpoint=30, failures_per_page=2)], indirect=True
)
async def test_5xx_on_every_page_is_recovered(
    loopback: LoopbackUpstream, make_settings: MakeSettings, no_backoff: None
) -> None:
    async with UpstreamClient(settings_for(loopback, make_settings)) as client:
        results = await sync_all(client, USERS, ENDPOINTS, page_size=10)
    for user in USERS:
        assert results[user] == expected_ids(user, ENDPOINTS, 30)
    statuses = [s.status for s in loopback.seen if s.path.startswith("/v1/human")]
    assert statuses.count(503) == statuses.count(502) == statuses.count(200) == 3 * 2 * 3


@pytest.mark.parametrize(
    "loopback",
    [Behaviour(records_per_endpoint=12, refused_users=frozenset({USERS[1].client_user_id}))],
    indirect=True,
)
async def test_refused_user_is_skipped_while_others_sync(
    loopback: LoopbackUpstream, make_settings: MakeSettings
) -> None:
    async with UpstreamClient(settings_for(loopback, make_settings)) as client:
        results = await sync_all(client, USERS, ENDPOINTS, page_size=5)
    refused = results[USERS[1]]
    assert isinstance(refused, UserNeedsReconnect)
    assert (refused.client_user_id, refused.human_id, refused.status) == (
        USERS[1].client_user_id,
        USERS[1].human_id,
        404,
    )
    for user in (USERS[0], USERS[2]):
        assert results[user] == expected_ids(user, ENDPOINTS, 12)
