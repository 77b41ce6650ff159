"""Contract part A over real loopback HTTP, with plain httpx."""

from __future__ import annotations

import time

import httpx
import pytest

from starfleet import SimFaults, SimulatorHandle
from starfleet.world import PROFILE_PATH
from sync_pipeline_tests.starfleet.conftest import bearer, request_token

pytestmark = pytest.mark.slow

ERROR_KEYS = {"status", "code", "message", "contextId"}


def _user(sim: SimulatorHandle, index: int = 0) -> tuple[str, str]:
    user = sim.world.users[index]
    return user.client_user_id, user.human_id


def test_token_for_a_known_user(http: httpx.Client, sim: SimulatorHandle) -> None:
    client_user_id, human_id = _user(sim, 1)  # the non-ASCII one
    response = request_token(http, client_user_id)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer" and body["human_id"] == human_id
    assert body["expires_in"] == 3600 and body["access_token"] and body["refresh_token"]


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({"client_secret": "wrong"}, 401),
        ({"client_id": "someone-else"}, 401),
        ({"client_user_id": "nobody"}, 404),
        ({"type": "session"}, 400),
    ],
)
def test_token_errors(
    http: httpx.Client, sim: SimulatorHandle, overrides: dict[str, str], status: int
) -> None:
    overrides = dict(overrides)
    client_user_id = overrides.pop("client_user_id", _user(sim)[0])
    response = request_token(http, client_user_id, **overrides)
    assert response.status_code == status
    assert set(response.json()) == ERROR_KEYS and response.json()["status"] == status


def test_refused_user_gets_403(http: httpx.Client, sim: SimulatorHandle) -> None:
    client_user_id = _user(sim, 2)[0]
    sim.app_config.faults = SimFaults(refused_users=(client_user_id,))
    assert request_token(http, client_user_id).status_code == 403
    assert request_token(http, _user(sim, 3)[0]).status_code == 200


def test_data_needs_a_valid_unexpired_token(http: httpx.Client, sim: SimulatorHandle) -> None:
    assert http.get("/v1/human/activities").status_code == 401
    bad = {"Authorization": "Bearer not-a-token"}
    assert http.get("/v1/human/activities", headers=bad).status_code == 401
    sim.app_config.faults = SimFaults(token_ttl_s=1)
    headers = bearer(http, _user(sim)[0])
    assert http.get("/v1/human/activities", headers=headers).status_code == 200
    time.sleep(1.1)
    response = http.get("/v1/human/activities", headers=headers)
    assert response.status_code == 401 and set(response.json()) == ERROR_KEYS


def test_pagination_walks_every_record_once(http: httpx.Client, sim: SimulatorHandle) -> None:
    client_user_id, human_id = _user(sim)
    headers = bearer(http, client_user_id)
    truth = sim.world.records(human_id, "medical/test_results")
    url: str | None = "/v1/human/medical/test_results?limit=7&source=" + truth[0]["source"]
    expected = [r for r in truth if r["source"] == truth[0]["source"]]
    seen: list[dict[str, object]] = []
    pages = 0
    while url is not None:
        response = http.get(url, headers=headers)
        assert response.status_code == 200
        assert int(response.headers["X-Total-Count"]) == len(expected)
        seen.extend(response.json())
        pages += 1
        link = response.links.get("next")
        if link is None:
            assert "Link" not in response.headers
            url = None
        else:
            url = link["url"]
            assert url.startswith(sim.base_url)  # absolute
            assert "limit=7" in url and "source=" in url  # keeps limit and filters
    assert pages == -(-len(expected) // 7)
    assert seen == expected


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("limit=abc", 400),
        ("limit=0", 400),
        ("offset=-1", 400),
        ("updated_since=2024-01-01", 400),
        ("created_since=20241301T000000Z", 400),
        ("limit=10000", 200),
    ],
)
def test_query_validation(
    http: httpx.Client, sim: SimulatorHandle, query: str, status: int
) -> None:
    response = http.get(f"/v1/human/sleeps?{query}", headers=bearer(http, _user(sim)[0]))
    assert response.status_code == status
    if status == 400:
        assert set(response.json()) == ERROR_KEYS


def test_default_limit_is_50_and_max_500(http: httpx.Client, sim: SimulatorHandle) -> None:
    headers = bearer(http, _user(sim)[0])
    total = int(http.get("/v1/human/weight/readings", headers=headers).headers["X-Total-Count"])
    assert len(http.get("/v1/human/weight/readings", headers=headers).json()) == min(50, total)
    everything = http.get("/v1/human/weight/readings?limit=10000", headers=headers)
    assert len(everything.json()) == total and "Link" not in everything.headers


@pytest.mark.parametrize(
    ("param", "field"), [("updated_since", "updatedAt"), ("created_since", "createdAt")]
)
def test_since_filters(http: httpx.Client, sim: SimulatorHandle, param: str, field: str) -> None:
    client_user_id, human_id = _user(sim)
    truth = sim.world.records(human_id, "activities")
    middle = sorted(r[field] for r in truth)[len(truth) // 2]
    stamp = middle[:19].replace("-", "").replace(":", "") + "Z"  # YYYYMMDDTHHmmssZ
    response = http.get(
        f"/v1/human/activities?limit=500&{param}={stamp}", headers=bearer(http, client_user_id)
    )
    floor = middle[:19] + ".000Z"
    assert {r["id"] for r in response.json()} == {r["id"] for r in truth if r[field] >= floor}


def test_single_record_profile_and_404s(http: httpx.Client, sim: SimulatorHandle) -> None:
    with_profile, without_profile = sim.world.users[1], sim.world.users[0]
    assert len(without_profile.store(PROFILE_PATH)) == 0
    headers = bearer(http, with_profile.client_user_id)
    record = sim.world.records(with_profile.human_id, "medical/allergies")[0]
    single = http.get(f"/v1/human/medical/allergies/{record['id']}", headers=headers)
    assert single.status_code == 200 and single.json() == record
    profile = http.get("/v1/human/medical/profile", headers=headers)
    assert profile.status_code == 200 and isinstance(profile.json(), dict)
    missing = http.get("/v1/human/medical/allergies/" + "0" * 24, headers=headers)
    assert missing.status_code == 404 and set(missing.json()) == ERROR_KEYS
    no_profile = http.get(
        "/v1/human/medical/profile", headers=bearer(http, without_profile.client_user_id)
    )
    assert no_profile.status_code == 404


def test_deleted_record_answers_404(http: httpx.Client, sim: SimulatorHandle) -> None:
    client_user_id, human_id = _user(sim, 4)
    headers = bearer(http, client_user_id)
    victim = sim.world.records(human_id, "locations")[0]["id"]
    assert http.get(f"/v1/human/locations/{victim}", headers=headers).status_code == 200
    deleted = http.post(
        "/_sim/delete", json={"human_id": human_id, "path": "locations", "record_id": victim}
    )
    assert deleted.json() == {"deleted": True}
    assert http.get(f"/v1/human/locations/{victim}", headers=headers).status_code == 404


def test_sources_lists_current_connections(http: httpx.Client, sim: SimulatorHandle) -> None:
    client_user_id, human_id = _user(sim)
    response = http.get("/v1/human/sources", headers=bearer(http, client_user_id))
    assert response.status_code == 200
    assert response.json() == sim.world.sources_view(human_id)
    truth = http.get("/_sim/truth", params={"human_id": human_id, "path": "sources"})
    assert truth.json() == response.json()


def test_request_id_is_echoed_on_every_response(http: httpx.Client, sim: SimulatorHandle) -> None:
    ids = {"X-Request-Id": "req-123"}
    for response in (
        http.get("/v1/human/activities", headers=ids),  # 401
        http.post("/v1/connect/token", json={}, headers=ids),  # 400
        http.get("/nowhere", headers=ids),  # framework 404
        http.get("/v1/human/activities", headers={**ids, **bearer(http, _user(sim)[0])}),
    ):
        assert response.headers["X-Request-Id"] == "req-123"


def test_users_and_counters(http: httpx.Client, sim: SimulatorHandle) -> None:
    users = http.get("/_sim/users").json()
    assert users == [
        {"client_user_id": u.client_user_id, "human_id": u.human_id} for u in sim.world.users
    ]
    client_user_id, human_id = _user(sim)
    headers = bearer(http, client_user_id)
    record_id = sim.world.records(human_id, "medical/test_results")[0]["id"]
    http.get("/v1/human/medical/test_results", headers=headers)
    http.get(f"/v1/human/medical/test_results/{record_id}", headers=headers)
    http.get("/v1/human/medical/test_results")  # 401, no human
    stats = http.get("/_sim/stats").json()
    assert stats["total"] == 4
    assert stats["by_path"] == {
        "connect/token": 1,
        "medical/test_results": 2,
        "medical/test_results/{id}": 1,
    }
    assert stats["by_human_id"] == {human_id: 3}
    assert stats["by_status"] == {"200": 3, "401": 1}
    assert stats["rate_limited"] == 0
    assert http.post("/_sim/stats/reset").json()["total"] == 0
