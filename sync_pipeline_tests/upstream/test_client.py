"""Unit tests of UpstreamClient behaviours, one at a time, against httpx.MockTransport."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from sync_pipeline.upstream.client import (
    ClientCredentialsRejected,
    RequestAudit,
    RequestFailed,
    UpstreamClient,
    UserNeedsReconnect,
    UserRef,
)
from sync_pipeline.upstream.endpoints import BY_PATH

from .conftest import API_URL, CLIENT_SECRET, MakeSettings

ALICE = UserRef("alice@app", "a" * 32)
BOB = UserRef("bob@app", "b" * 32)
ACTIVITIES = BY_PATH["activities"]
ALLERGIES = BY_PATH["medical/allergies"]
PROFILE = BY_PATH["medical/profile"]

DataHandler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


class FakeUpstream:
    """A MockTransport handler: issues tokens like the auth service and delegates data requests."""

    def __init__(self, data: DataHandler | None = None) -> None:
        self.data = data or (lambda request: httpx.Response(200, json=[]))
        self.requests: list[httpx.Request] = []
        self.token_status: dict[str, int] = {}
        self.tokens_issued = 0

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/v1/connect/token":
            body = json.loads(request.content)
            assert body["type"] == "access" and body["client_secret"] == CLIENT_SECRET
            status = self.token_status.get(body["client_user_id"], 200)
            if status != 200:
                return httpx.Response(status, json={"status": status, "code": "x"})
            await asyncio.sleep(0.01)  # long enough for concurrent callers to pile up
            self.tokens_issued += 1
            return httpx.Response(
                200,
                json={
                    "access_token": f"TOKEN-{body['client_user_id']}-{self.tokens_issued}",
                    "refresh_token": "REFRESH-never-logged",
                    "expires_in": 3600,
                    "token_type": "Bearer",
                    "human_id": "h",
                },
            )
        answer = self.data(request)
        return await answer if isinstance(answer, Awaitable) else answer

    def data_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path != "/v1/connect/token"]


def paged(records: list[dict[str, Any]], *, next_host: str = API_URL) -> DataHandler:
    """A list endpoint paginating `records` by limit/offset with absolute Link headers."""

    def handle(request: httpx.Request) -> httpx.Response:
        limit = int(request.url.params["limit"])
        offset = int(request.url.params.get("offset", 0))
        headers = {"X-Total-Count": str(len(records))}
        if offset + limit < len(records):
            nxt = request.url.copy_merge_params({"offset": offset + limit})
            headers["Link"] = f'<{next_host}{nxt.raw_path.decode()}>; rel="next"'
        return httpx.Response(200, json=records[offset : offset + limit], headers=headers)

    return handle


def scripted(*answers: httpx.Response | Exception) -> DataHandler:
    """Answer data requests in order; exceptions are raised as transport failures."""
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handle


async def collect(client: UpstreamClient, user: UserRef = ALICE, **kw: Any) -> list[Any]:
    return [r async for page in client.iter_pages(user, ACTIVITIES, **kw) for r in page.records]


@pytest.mark.anyio
async def test_iter_pages_follows_links_with_filters_and_bearer(
    make_settings: MakeSettings,
) -> None:
    records = [{"id": f"{i:024x}"} for i in range(120)]
    upstream = FakeUpstream(paged(records))
    async with UpstreamClient(make_settings(), transport=upstream.transport()) as client:
        pages = [
            page
            async for page in client.iter_pages(
                ALICE,
                ACTIVITIES,
                updated_since=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
                source="fitbit",
            )
        ]
    assert [len(p.records) for p in pages] == [50, 50, 20]
    assert [r for p in pages for r in p.records] == records
    assert {p.total_count for p in pages} == {120}
    first = upstream.data_requests()[0]
    assert first.url.path == "/v1/human/activities"
    assert dict(first.url.params) == {
        "limit": "50",
        "updated_since": "20240102T030405Z",
        "source": "fitbit",
    }
    assert all(
        r.headers["Authorization"] == "Bearer TOKEN-alice@app-1" for r in upstream.data_requests()
    )
    request_ids = [r.headers["X-Request-Id"] for r in upstream.data_requests()]
    assert len(set(request_ids)) == 3 and all(len(i) == 32 for i in request_ids)
    assert [p.request_id for p in pages] == request_ids
    assert client.request_count == 3 and client.token_request_count == 1


@pytest.mark.anyio
async def test_page_size_is_capped_at_the_upstream_maximum(make_settings: MakeSettings) -> None:
    upstream = FakeUpstream(paged([]))
    async with UpstreamClient(make_settings(), transport=upstream.transport()) as client:
        await collect(client, page_size=10_000)
    assert upstream.data_requests()[0].url.params["limit"] == "500"


@pytest.mark.anyio
async def test_foreign_next_link_is_rebuilt_on_the_api_host(
    make_settings: MakeSettings, caplog: pytest.LogCaptureFixture
) -> None:
    records = [{"id": str(i)} for i in range(75)]
    upstream = FakeUpstream(paged(records, next_host="https://evil.example"))
    async with UpstreamClient(make_settings(), transport=upstream.transport()) as client:
        assert await collect(client) == records
    hosts = {r.url.host for r in upstream.data_requests()}
    assert hosts == {"api.upstream.test"}
    assert upstream.data_requests()[1].url.params["offset"] == "50"
    assert "named another host" in caplog.text


@pytest.mark.anyio
async def test_a_next_link_that_loops_fails_instead_of_spinning(
    make_settings: MakeSettings,
) -> None:
    loop = httpx.Response(
        200,
        json=[{"id": "1"}],
        headers={"Link": f'<{API_URL}/v1/human/activities?limit=50>; rel="next"'},
    )
    upstream = FakeUpstream(scripted(loop))
    async with UpstreamClient(make_settings(), transport=upstream.transport()) as client:
        with pytest.raises(RequestFailed, match="repeats an earlier page"):
            await collect(client)


@pytest.mark.anyio
async def test_token_is_cached_and_single_flight_per_user(make_settings: MakeSettings) -> None:
    upstream = FakeUpstream(paged([{"id": "1"}]))
    async with UpstreamClient(make_settings(), transport=upstream.transport()) as client:
        await asyncio.gather(*(collect(client, user) for user in [ALICE, BOB] * 10))
        await collect(client, ALICE)
    assert upstream.tokens_issued == 2
    assert client.token_request_count == 2
    assert client.request_count == 21


@pytest.mark.anyio
async def test_data_401_fetches_a_new_token_once_then_succeeds(make_settings: MakeSettings) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"].endswith("-1"):
            return httpx.Response(401, json={"status": 401, "code": "expired"})
        return httpx.Response(200, json=[{"id": "1"}])

    upstream = FakeUpstream(handle)
    async with UpstreamClient(make_settings(), transport=upstream.transport()) as client:
        assert await collect(client) == [{"id": "1"}]
    assert [r.headers["Authorization"] for r in upstream.data_requests()] == [
        "Bearer TOKEN-alice@app-1",
        "Bearer TOKEN-alice@app-2",
    ]


@pytest.mark.anyio
async def test_second_401_in_one_request_fails_without_more_tokens(
    make_settings: MakeSettings,
) -> None:
    upstream = FakeUpstream(scripted(httpx.Response(401)))
    async with UpstreamClient(make_settings(), transport=upstream.transport()) as client:
        with pytest.raises(RequestFailed) as caught:
            await collect(client)
    assert caught.value.status == 401
    assert upstream.tokens_issued == 2 and len(upstream.data_requests()) == 2
    assert "TOKEN" not in str(caught.value) and "TOKEN" not in repr(caught.value.args)


@pytest.mark.anyio
@pytest.mark.parametrize("status", [403, 404])
async def test_token_refused_for_a_user_means_reconnect(
    make_settings: MakeSettings, status: int
) -> None:
    upstream = FakeUpstream(paged([{"id": "1"}]))
    upstream.token_status[BOB.client_user_id] = status
    async with UpstreamClient(make_settings(), transport=upstream.transport()) as client:
        outcomes = await asyncio.gather(
            collect(client, BOB), collect(client, ALICE), return_exceptions=True
        )
    bob, alice = outcomes
    assert alice == [{"id": "1"}]
    assert isinstance(bob, UserNeedsReconnect)
    assert (bob.client_user_id, bob.human_id, bob.status) == (
        BOB.client_user_id,
        BOB.human_id,
        status,
    )
    assert client.token_request_count == 2  # not retried


@pytest.mark.anyio
async def test_rejected_client_credentials_are_fatal(make_settings: MakeSettings) -> None:
    upstream = FakeUpstream()
    upstream.token_status[ALICE.client_user_id] = 401
    async with UpstreamClient(make_settings(), transport=upstream.transport()) as client:
        with pytest.raises(ClientCredentialsRejected) as caught:
            await collect(client)
    assert CLIENT_SECRET not in str(caught.value) and CLIENT_SECRET not in repr(caught.value.args)


@pytest.mark.anyio
@pytest.mark.parametrize("status", [400, 403, 404, 422])
async def test_client_errors_are_not_retried(make_settings: MakeSettings, status: int) -> None:
    upstream = FakeUpstream(scripted(httpx.Response(status, json={"status": status})))
    async with UpstreamClient(make_settings(), transport=upstream.transport()) as client:
        with pytest.raises(RequestFailed) as caught:
            await collect(client, updated_since=datetime(2024, 1, 1, tzinfo=UTC))
    assert caught.value.status == status
    assert caught.value.path == "/v1/human/activities"
    assert "updated_since" not in str(caught.value) and "?" not in str(caught.value)
    assert len(upstream.data_requests()) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(503),
        httpx.Response(500),
        httpx.Response(429, headers={"Retry-After": "0"}),
        httpx.Response(200, content=b'[{"id": "1"'),  # cut off behind a complete-looking read
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
        httpx.ConnectError("connection refused"),
    ],
    ids=["503", "500", "429", "truncated-json", "timeout", "dropped", "refused"],
)
async def test_transient_failures_are_retried_until_success(
    make_settings: MakeSettings, no_backoff: None, failure: httpx.Response | Exception
) -> None:
    audits: list[RequestAudit] = []
    ok = httpx.Response(200, json=[{"id": "1"}])
    upstream = FakeUpstream(scripted(failure, failure, failure, ok))
    async with UpstreamClient(
        make_settings(), transport=upstream.transport(), on_request=audits.append
    ) as client:
        assert await collect(client, updated_since=datetime(2024, 1, 1, tzinfo=UTC)) == [
            {"id": "1"}
        ]
    data_audits = [a for a in audits if a.path.startswith("/v1/human/")]
    assert [a.attempt for a in data_audits] == [1, 2, 3, 4]
    assert len({a.request_id for a in data_audits}) == 1
    assert data_audits[-1].status == 200 and data_audits[-1].error is None
    assert all(a.error for a in data_audits[:3])
    assert {a.path for a in data_audits} == {"/v1/human/activities"}
    assert {a.human_id for a in audits} == {ALICE.human_id}
    assert all(a.started_at.tzinfo is UTC and a.duration_ms >= 0 for a in audits)


@pytest.mark.anyio
async def test_retries_stop_at_max_attempts(make_settings: MakeSettings, no_backoff: None) -> None:
    upstream = FakeUpstream(scripted(httpx.Response(503)))
    async with UpstreamClient(
        make_settings(http_max_attempts=3), transport=upstream.transport()
    ) as client:
        with pytest.raises(RequestFailed, match="gave up after 3 attempts") as caught:
            await collect(client)
    assert caught.value.status == 503
    assert len(upstream.data_requests()) == 3


@pytest.mark.anyio
async def test_token_request_is_retried_on_5xx(
    make_settings: MakeSettings, no_backoff: None
) -> None:
    upstream = FakeUpstream(paged([{"id": "1"}]))
    failures = [httpx.Response(502), httpx.Response(503)]
    inner = upstream.__call__

    async def flaky_auth(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/connect/token" and failures:
            return failures.pop(0)
        return await inner(request)

    async with UpstreamClient(make_settings(), transport=httpx.MockTransport(flaky_auth)) as client:
        assert await collect(client) == [{"id": "1"}]
    assert client.token_request_count == 3


@pytest.mark.anyio
async def test_retry_after_is_honoured(make_settings: MakeSettings) -> None:
    answers = scripted(
        httpx.Response(503, headers={"Retry-After": "0.4"}), httpx.Response(200, json=[])
    )
    arrivals: list[float] = []

    def handle(request: httpx.Request) -> httpx.Response:
        arrivals.append(time.monotonic())
        return answers(request)  # type: ignore[return-value]

    async with UpstreamClient(
        make_settings(), transport=FakeUpstream(handle).transport()
    ) as client:
        await collect(client)
    assert len(arrivals) == 2
    assert arrivals[1] - arrivals[0] >= 0.4


@pytest.mark.anyio
async def test_retry_after_beyond_the_deadline_fails_at_once(make_settings: MakeSettings) -> None:
    upstream = FakeUpstream(scripted(httpx.Response(429, headers={"Retry-After": "3600"})))
    started = time.monotonic()
    async with UpstreamClient(
        make_settings(http_deadline_s=5.0), transport=upstream.transport()
    ) as client:
        with pytest.raises(RequestFailed) as caught:
            await collect(client)
    assert caught.value.status == 429
    assert time.monotonic() - started < 1.0


@pytest.mark.anyio
async def test_overall_deadline_bounds_a_hanging_request(make_settings: MakeSettings) -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")

    started = time.monotonic()
    async with UpstreamClient(
        make_settings(http_deadline_s=0.3), transport=FakeUpstream(hang).transport()
    ) as client:
        with pytest.raises(RequestFailed, match="deadline") as caught:
            await collect(client)
    assert caught.value.status is None
    assert time.monotonic() - started < 2.0


@pytest.mark.anyio
async def test_fetch_record_quotes_the_id_and_maps_404_to_none(make_settings: MakeSettings) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.raw_path.endswith(b"/known"):
            return httpx.Response(200, json={"id": "known"})
        return httpx.Response(404, json={"status": 404})

    upstream = FakeUpstream(handle)
    hostile = "x'); DROP TABLE t;--/../.."
    async with UpstreamClient(make_settings(), transport=upstream.transport()) as client:
        assert await client.fetch_record(ALICE, ALLERGIES, "known") == {"id": "known"}
        assert await client.fetch_record(ALICE, ALLERGIES, hostile) is None
        assert await client.fetch_record(ALICE, ALLERGIES, "..") is None
    paths = [r.url.raw_path.decode() for r in upstream.data_requests()]
    assert paths[0] == "/v1/human/medical/allergies/known"
    assert all(p.startswith("/v1/human/medical/allergies/") and p.count("/") == 5 for p in paths)


@pytest.mark.anyio
async def test_fetch_object_for_single_object_endpoints(make_settings: MakeSettings) -> None:
    answers = scripted(httpx.Response(200, json={"name": "x"}), httpx.Response(404))
    upstream = FakeUpstream(answers)
    async with UpstreamClient(make_settings(), transport=upstream.transport()) as client:
        assert await client.fetch_object(ALICE, PROFILE) == {"name": "x"}
        assert await client.fetch_object(ALICE, PROFILE) is None
        with pytest.raises(ValueError):
            await client.fetch_object(ALICE, ALLERGIES)
        with pytest.raises(ValueError):
            [p async for p in client.iter_pages(ALICE, PROFILE)]
    assert upstream.data_requests()[0].url.path == "/v1/human/medical/profile"


@pytest.mark.anyio
@pytest.mark.parametrize("body", [{"not": "a list"}, "text", True, 7])
async def test_a_body_that_is_not_a_list_fails_the_request(
    make_settings: MakeSettings, body: Any
) -> None:
    upstream = FakeUpstream(scripted(httpx.Response(200, json=body)))
    async with UpstreamClient(make_settings(), transport=upstream.transport()) as client:
        with pytest.raises(RequestFailed, match="expected a JSON array, got "):
            await client.list_sources(ALICE)


@pytest.mark.anyio
async def test_list_elements_that_are_not_objects_pass_on_for_the_normaliser_to_reject(
    make_settings: MakeSettings,
) -> None:
    # one bad element must not cost its page: the normaliser rejects it with a reason
    upstream = FakeUpstream(scripted(httpx.Response(200, json=[1, {"id": "a"}])))
    async with UpstreamClient(make_settings(), transport=upstream.transport()) as client:
        pages = [p async for p in client.iter_pages(ALICE, ALLERGIES)]
        assert [p.records for p in pages] == [[1, {"id": "a"}]]


@pytest.mark.anyio
async def test_list_sources(make_settings: MakeSettings) -> None:
    sources = [{"source": "fitbit", "id": "1"}]
    upstream = FakeUpstream(scripted(httpx.Response(200, json=sources)))
    async with UpstreamClient(make_settings(), transport=upstream.transport()) as client:
        assert await client.list_sources(ALICE) == sources
    assert upstream.data_requests()[0].url.path == "/v1/human/sources"


@pytest.mark.anyio
async def test_using_the_client_outside_its_context_is_an_error(
    make_settings: MakeSettings,
) -> None:
    client = UpstreamClient(make_settings(), transport=FakeUpstream().transport())
    with pytest.raises(RuntimeError, match="async with"):
        await client.list_sources(ALICE)


@pytest.mark.anyio
async def test_debug_logs_never_show_tokens_secrets_or_queries(
    make_settings: MakeSettings, caplog: pytest.LogCaptureFixture, no_backoff: None
) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"].endswith("-1"):
            return httpx.Response(401, json={"status": 401})
        if "offset" not in request.url.params:
            return httpx.Response(
                200,
                json=[{"id": "1"}],
                headers={"Link": f'<{API_URL}/v1/human/activities?limit=50&offset=50>; rel="next"'},
            )
        return httpx.Response(503)

    caplog.set_level(logging.DEBUG)
    async with UpstreamClient(
        make_settings(http_max_attempts=2), transport=FakeUpstream(handle).transport()
    ) as client:
        with pytest.raises(RequestFailed) as caught:
            await collect(client, created_since=datetime(2024, 1, 1, tzinfo=UTC))
    text = caplog.text
    assert "-> GET /v1/human/activities" in text and "<- POST /v1/connect/token 200" in text
    for secret in (
        "TOKEN-",
        "REFRESH-",
        CLIENT_SECRET,
        "Bearer T",
        "Authorization",
        "created_since",
        "offset=",
        "?",
    ):
        assert secret not in text, secret
        assert secret not in str(caught.value) and secret not in repr(caught.value.args)
    assert not [r for r in caplog.records if r.name.startswith("httpx")]
