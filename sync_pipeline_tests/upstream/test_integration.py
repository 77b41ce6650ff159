"""UpstreamClient against the real simulator over loopback HTTP, end to end.

Every test compares what the client collected with the simulator's own records
(`world.records`), and what it did with the simulator's request counters (`/_sim/stats`) and
the client's audit, and checks the DEBUG logs for every token the simulator issued.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from starfleet import SimFaults, SimulatorHandle, running_simulator
from sync_pipeline.settings import Settings
from sync_pipeline.upstream.client import RequestAudit, UpstreamClient, UserNeedsReconnect, UserRef
from sync_pipeline.upstream.endpoints import BY_PATH, Endpoint

from .conftest import CLIENT_ID, CLIENT_SECRET, MakeSettings
from .observe import RecordingTransport, issued_tokens, revoke_all_tokens

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

ENDPOINTS = [BY_PATH["activities"], BY_PATH["medical/test_results"], BY_PATH["sleeps"]]
QUERY_STRING = re.compile(r"[?&](limit|offset|updated_since|created_since|source)=")

Results = dict[UserRef, dict[str, list[str]] | BaseException]


@pytest.fixture
def sim(request: pytest.FixtureRequest) -> Iterator[SimulatorHandle]:
    """A fresh simulator (3 users, 12-30 records per endpoint) with the test's faults."""
    faults = getattr(request, "param", SimFaults())
    with running_simulator(
        users=3,
        seed=5,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        faults=faults,
        min_records=12,
        max_records=30,
    ) as handle:
        yield handle


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    # The client turns httpx/httpcore down to WARNING at import; lift them too, so their own
    # lines (request and response headers) are searched for secrets as well.
    for name in (None, "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def users_of(sim: SimulatorHandle) -> list[UserRef]:
    return [UserRef(u.client_user_id, u.human_id) for u in sim.world.users]


def settings_for(sim: SimulatorHandle, make_settings: MakeSettings, **kw: Any) -> Settings:
    return make_settings(**kw).with_upstream(sim.base_url)


def sim_stats(sim: SimulatorHandle) -> dict[str, Any]:
    response = httpx.get(f"{sim.base_url}/_sim/stats", timeout=10)
    response.raise_for_status()
    stats: dict[str, Any] = response.json()
    return stats


def truth(sim: SimulatorHandle, user: UserRef, endpoints: list[Endpoint]) -> dict[str, list[str]]:
    """Record ids the simulator holds for the user, in the order it serves them."""
    return {e.path: [r["id"] for r in sim.world.records(user.human_id, e.path)] for e in endpoints}


async def sync_all(
    client: UpstreamClient, users: list[UserRef], endpoints: list[Endpoint], page_size: int
) -> Results:
    """What a run does: every (user, endpoint) concurrently; one user's failure spares the rest."""

    async def one_user(user: UserRef) -> dict[str, list[str]]:
        async def one_endpoint(endpoint: Endpoint) -> list[str]:
            pages = client.iter_pages(user, endpoint, page_size=page_size)
            return [r["id"] async for page in pages for r in page.records]

        ids = await asyncio.gather(*(one_endpoint(e) for e in endpoints))
        return {e.path: i for e, i in zip(endpoints, ids, strict=True)}

    results = await asyncio.gather(*(one_user(u) for u in users), return_exceptions=True)
    return dict(zip(users, results, strict=True))


def assert_complete(sim: SimulatorHandle, results: Results, users: list[UserRef]) -> None:
    """Every record of every page arrived exactly once, in the upstream's order."""
    for user in users:
        expected = truth(sim, user, ENDPOINTS)
        assert results[user] == expected
        assert all(len(ids) >= 12 for ids in expected.values())  # the world is not empty


def assert_no_secrets(caplog: pytest.LogCaptureFixture, tokens: list[str]) -> None:
    assert tokens, "the simulator issued no tokens: nothing was checked"
    text = caplog.text
    assert "-> GET /v1/human/" in text  # the client's DEBUG lines were captured
    assert '"access_token": "[redacted]"' in text  # token bodies were logged, redacted
    leaked = [t for t in tokens if t in text]
    assert not leaked, f"{len(leaked)} issued tokens appear in the logs"
    assert CLIENT_SECRET not in text
    assert "Bearer " not in text
    assert "authorization" not in text.lower()
    # httpx logs full URLs at INFO once lifted; everything else must show paths only
    ours = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert not [r.getMessage() for r in ours if QUERY_STRING.search(r.getMessage())]


def timeline(wire: RecordingTransport) -> str:
    """The exchanges as text, for failure messages."""
    start = wire.exchanges[0].sent_at if wire.exchanges else 0.0
    return "\n".join(
        f"{e.sent_at - start:6.2f}s {e.status} retry-after={e.retry_after} "
        f"{e.request_id[:8]} {e.raw_path.decode()}"
        for e in wire.exchanges
    )


def retries_of(audits: list[RequestAudit], request_id: str) -> list[RequestAudit]:
    return sorted((a for a in audits if a.request_id == request_id), key=lambda a: a.attempt)


def assert_every_failure_recovered(audits: list[RequestAudit]) -> list[RequestAudit]:
    """Each failed attempt is followed by a successful attempt of the same request."""
    failed = [a for a in audits if a.error is not None]
    for failure in failed:
        final = retries_of(audits, failure.request_id)[-1]
        assert final.error is None and final.attempt > failure.attempt
    return failed


@pytest.mark.parametrize(
    ("sim", "revoke"),
    [
        # tokens live 1 s and the sync takes longer: the client renews them as they age
        (SimFaults(token_ttl_s=1, latency_ms=40), False),
        # the upstream drops every token mid-sync: the data API's 401s drive renewal
        (SimFaults(latency_ms=15), True),
    ],
    indirect=["sim"],
    ids=["renew-before-expiry", "renew-on-401"],
)
async def test_many_pages_arrive_once_across_token_expiry(
    sim: SimulatorHandle,
    revoke: bool,
    make_settings: MakeSettings,
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    users = users_of(sim)
    tokens = issued_tokens(sim)
    audits: list[RequestAudit] = []

    revoked = False

    def on_request(audit: RequestAudit) -> None:
        nonlocal revoked
        audits.append(audit)
        # Revoke once every user's token has served data, so that no token request is in
        # flight: a token issued just before a revocation and handed out just after it is
        # refused on its first use, and the client renews on 401 only once per request.
        served = {a.human_id for a in audits if a.status == 200 and a.path.startswith("/v1/h")}
        if revoke and not revoked and served == {u.human_id for u in users}:
            revoke_all_tokens(sim)
            revoked = True

    settings = settings_for(sim, make_settings, http_concurrency=2)
    async with UpstreamClient(settings, on_request=on_request) as client:
        results = await sync_all(client, users, ENDPOINTS, page_size=3)

    assert_complete(sim, results, users)
    stats = sim_stats(sim)
    token_requests = stats["by_path"]["connect/token"]
    assert token_requests == client.token_request_count
    assert len(users) < token_requests <= 10 * len(users)
    assert stats["total"] == client.request_count + client.token_request_count == len(audits)
    if revoke:
        assert revoked
        # one renewal per user that still had work, however many of its requests saw the 401
        assert token_requests <= 2 * len(users)
        unauthorised = [a for a in audits if a.status == 401]
        assert unauthorised and stats["by_status"]["401"] == len(unauthorised)
        assert assert_every_failure_recovered(audits) == unauthorised
    assert all("?" not in a.path for a in audits)
    assert_no_secrets(debug_logs, tokens)


# The three users' first token requests are refused whatever the clock says (throttle_first_n):
# on a loaded machine the opening burst could spread thin enough that the limit alone was never
# hit.
@pytest.mark.parametrize(
    "sim",
    [
        SimFaults(rate_limit_per_s=4, throttle_first_n=3, retry_after_format="seconds"),
        SimFaults(rate_limit_per_s=4, throttle_first_n=3, retry_after_format="http-date"),
    ],
    indirect=True,
    ids=["retry-after-seconds", "retry-after-http-date"],
)
async def test_429_storm_is_honoured_and_paced(
    sim: SimulatorHandle, make_settings: MakeSettings, debug_logs: pytest.LogCaptureFixture
) -> None:
    users, endpoints = users_of(sim), ENDPOINTS[:2]
    tokens = issued_tokens(sim)
    audits: list[RequestAudit] = []
    wire = RecordingTransport()
    # 3 token requests and 6 first pages start at once against a bucket of 4 per second
    settings = settings_for(
        sim, make_settings, http_concurrency=16, http_max_attempts=10, http_deadline_s=60
    )
    async with UpstreamClient(settings, transport=wire, on_request=audits.append) as client:
        results = await sync_all(client, users, endpoints, page_size=30)

    for user in users:
        assert results[user] == truth(sim, user, endpoints)
    throttled = [e for e in wire.exchanges if e.status == 429]
    stats = sim_stats(sim)
    assert throttled and stats["rate_limited"] == len(throttled)
    # No storm: the opening burst (a token and a first page per stream) is refused at most
    # once per request; after it the client's pace keeps within the limit.
    opening = len(users) * (1 + len(endpoints))
    assert len(throttled) <= opening, timeline(wire)
    for refusal in throttled:
        not_before = refusal.retry_not_before()
        assert not_before is not None
        exchanges = [e for e in wire.exchanges if e.request_id == refusal.request_id]
        n = exchanges.index(refusal)
        retry = exchanges[n + 1]  # never retried would be an IndexError
        assert retry.sent_at >= not_before - 0.01, timeline(wire)
        # the audit saw the same: attempt n+2 started no earlier than Retry-After allowed
        attempts = retries_of(audits, refusal.request_id)
        assert (attempts[n].attempt, attempts[n].status) == (n + 1, 429)
        assert attempts[n + 1].started_at.timestamp() >= not_before - 0.01
    assert_every_failure_recovered(audits)
    assert_no_secrets(debug_logs, tokens)


@pytest.mark.parametrize(
    ("sim", "failed_status", "failed_error"),
    [
        (SimFaults(fail_first_n=2, error_rate_5xx=0.2, seed=3), 503, "HTTP 503"),
        (SimFaults(drop_rate=0.2, seed=3), None, None),
        (SimFaults(truncate_rate=0.2, seed=3), 200, "invalid JSON body"),
    ],
    indirect=["sim"],
    ids=["5xx", "dropped-connections", "truncated-bodies"],
)
async def test_transient_faults_are_recovered(
    sim: SimulatorHandle,
    failed_status: int | None,
    failed_error: str | None,
    make_settings: MakeSettings,
    no_backoff: None,
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    users = users_of(sim)
    tokens = issued_tokens(sim)
    audits: list[RequestAudit] = []
    settings = settings_for(sim, make_settings, http_max_attempts=10)
    async with UpstreamClient(settings, on_request=audits.append) as client:
        results = await sync_all(client, users, ENDPOINTS, page_size=5)

    assert_complete(sim, results, users)
    failed = assert_every_failure_recovered(audits)
    assert failed
    assert {a.status for a in failed} == {failed_status}
    if failed_error is not None:
        assert {a.error for a in failed} == {failed_error}
    stats = sim_stats(sim)
    served = Counter(str(a.status or 0) for a in audits)
    assert stats["by_status"] == dict(served)  # the simulator saw exactly what the client audited
    if failed_status == 503:
        # fail_first_n: the first two requests to each URL path (token, 3 list paths) are 503s
        assert stats["by_status"]["503"] >= 2 * (1 + len(ENDPOINTS))
    assert_no_secrets(debug_logs, tokens)


@pytest.mark.parametrize(
    "sim",
    [SimFaults(refused_users=("starfleet-user-0002-zoë-船長",))],
    indirect=True,
    ids=["unicode-user-refused"],
)
async def test_refused_user_needs_reconnect_while_others_sync(
    sim: SimulatorHandle, make_settings: MakeSettings
) -> None:
    users = users_of(sim)
    refused_user = users[1]
    assert refused_user.client_user_id in sim.app_config.faults.refused_users
    async with UpstreamClient(settings_for(sim, make_settings)) as client:
        results = await sync_all(client, users, ENDPOINTS, page_size=10)

    refused = results[refused_user]
    assert isinstance(refused, UserNeedsReconnect)
    assert (refused.client_user_id, refused.human_id, refused.status) == (
        refused_user.client_user_id,
        refused_user.human_id,
        403,
    )
    others = [users[0], users[2]]
    assert_complete(sim, results, others)
    # A refusal is never retried: each endpoint task asked once at most (the token cache
    # does not remember refusals, so waiters ask again: reported), every answer a 403.
    stats = sim_stats(sim)
    refused_requests = stats["by_human_id"][refused_user.human_id]
    assert 1 <= refused_requests <= len(ENDPOINTS)
    assert stats["by_status"]["403"] == refused_requests


@pytest.mark.parametrize(
    ("record_id", "sent_as"),
    [
        ("x'); DROP TABLE t;--", "x%27%29%3B%20DROP%20TABLE%20t%3B--"),
        ("../..", "..%2F.."),
        ("..", "%2E%2E"),
        ("a/b?c#d", "a%2Fb%3Fc%23d"),
    ],
    ids=["sql", "parent-dirs", "dot-dot", "slash-query-fragment"],
)
async def test_hostile_record_ids_stay_one_path_segment(
    record_id: str, sent_as: str, sim: SimulatorHandle, make_settings: MakeSettings
) -> None:
    user = users_of(sim)[0]
    audits: list[RequestAudit] = []
    async with UpstreamClient(settings_for(sim, make_settings), on_request=audits.append) as c:
        assert await c.fetch_record(user, BY_PATH["activities"], record_id) is None

    data = [a for a in audits if a.path.startswith("/v1/human/")]
    assert [(a.path, a.status) for a in data] == [(f"/v1/human/activities/{sent_as}", 404)]
    stats = sim_stats(sim)
    assert stats["by_human_id"] == {user.human_id: 2}  # token + this request, nothing else
    # One request reached the per-user data API, and no list was served. The simulator
    # routes on the percent-decoded path, so an id containing "/" is counted as "unknown"
    # there rather than "activities/{id}" (reported); either way it answered 404.
    data_paths = {k: v for k, v in stats["by_path"].items() if k != "connect/token"}
    allowed = {"activities/{id}"} | ({"unknown"} if "/" in record_id else set())
    assert sum(data_paths.values()) == 1 and set(data_paths) <= allowed
