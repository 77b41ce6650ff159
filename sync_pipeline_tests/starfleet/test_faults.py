"""Each fault knob, observed the way a client would see it over real HTTP."""

from __future__ import annotations

import json
import time
from email.utils import parsedate_to_datetime

import httpx
import pytest

from starfleet import SimFaults, SimulatorHandle
from starfleet.config import RetryAfterFormat
from sync_pipeline_tests.starfleet.conftest import bearer

pytestmark = pytest.mark.slow


def _headers(http: httpx.Client, sim: SimulatorHandle) -> dict[str, str]:
    return bearer(http, sim.world.users[0].client_user_id)


@pytest.mark.parametrize("retry_after_format", ["seconds", "http-date"])
def test_rate_limit_answers_429_with_retry_after(
    http: httpx.Client, sim: SimulatorHandle, retry_after_format: RetryAfterFormat
) -> None:
    headers = _headers(http, sim)
    sim.app_config.faults = SimFaults(rate_limit_per_s=1, retry_after_format=retry_after_format)
    first = http.get("/v1/human/sleeps", headers=headers)
    second = http.get("/v1/human/sleeps", headers=headers)
    assert first.status_code == 200 and second.status_code == 429
    for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
        assert name in first.headers and name in second.headers
    retry_after = second.headers["Retry-After"]
    if retry_after_format == "seconds":
        assert int(retry_after) >= 1
    else:
        assert parsedate_to_datetime(retry_after).timestamp() > time.time() - 1
    assert second.json()["status"] == 429
    assert http.get("/_sim/stats").json()["rate_limited"] == 1


def test_fail_first_n_then_success_per_path(http: httpx.Client, sim: SimulatorHandle) -> None:
    headers = _headers(http, sim)
    sim.app_config.faults = SimFaults(fail_first_n=3)
    statuses = [http.get("/v1/human/sleeps", headers=headers).status_code for _ in range(4)]
    assert statuses == [503, 503, 503, 200]
    assert http.get("/v1/human/locations", headers=headers).status_code == 503


@pytest.mark.parametrize(
    ("faults", "path", "status"),
    [
        (SimFaults(fail_paths=("medical/vitals",)), "/v1/human/medical/vitals", 500),
        (SimFaults(fail_paths=("medical/vitals",)), "/v1/human/medical/issues", 200),
        (SimFaults(error_rate_5xx=1.0), "/v1/human/medical/issues", 503),
    ],
)
def test_failing_paths_and_random_5xx(
    http: httpx.Client, sim: SimulatorHandle, faults: SimFaults, path: str, status: int
) -> None:
    headers = _headers(http, sim)
    sim.app_config.faults = faults
    response = http.get(path, headers=headers)
    assert response.status_code == status
    if status >= 500:
        assert set(response.json()) == {"status", "code", "message", "contextId"}


def test_dropped_connection_is_a_transport_error(http: httpx.Client, sim: SimulatorHandle) -> None:
    headers = _headers(http, sim)
    sim.app_config.faults = SimFaults(drop_rate=1.0)
    with pytest.raises(httpx.TransportError):
        http.get("/v1/human/sleeps", headers=headers)
    sim.app_config.faults = SimFaults()
    assert http.get("/v1/human/sleeps", headers=headers).status_code == 200


def test_truncated_body_does_not_parse(http: httpx.Client, sim: SimulatorHandle) -> None:
    headers = _headers(http, sim)
    sim.app_config.faults = SimFaults(truncate_rate=1.0)
    response = http.get("/v1/human/sleeps", headers=headers)
    assert response.status_code == 200 and "Content-Length" not in response.headers
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_corrupt_records_differ_from_the_truth(http: httpx.Client, sim: SimulatorHandle) -> None:
    user = sim.world.users[0]
    headers = _headers(http, sim)
    sim.app_config.faults = SimFaults(corrupt_rate=1.0, seed=3)
    served = http.get("/v1/human/weight/readings?limit=500", headers=headers).json()
    truth = {r["id"]: r for r in sim.world.records(user.human_id, "weight/readings")}
    kinds = set()
    for record in served:
        original = truth[record["id"]]
        assert record != original
        if set(record) > set(original):
            kinds.add("unknown_field")
        elif set(record) < set(original):
            kinds.add("missing_field")
        elif "abc" in record.values():
            kinds.add("wrong_type")
    assert kinds == {"unknown_field", "missing_field", "wrong_type"}


def test_latency_delays_each_request(http: httpx.Client, sim: SimulatorHandle) -> None:
    headers = _headers(http, sim)
    sim.app_config.faults = SimFaults(latency_ms=200)
    started = time.monotonic()
    assert http.get("/v1/human/sleeps", headers=headers).status_code == 200
    # asyncio's timer may fire up to a clock tick early (CI once measured 0.19990 s), so the
    # bound proves that the delay happened, not that it is exact to the microsecond.
    assert time.monotonic() - started >= 0.19


def test_faults_change_at_runtime_over_http(http: httpx.Client, sim: SimulatorHandle) -> None:
    headers = _headers(http, sim)
    changed = http.post("/_sim/faults", json={"fail_paths": ["sleeps"]})
    assert changed.status_code == 200 and changed.json()["fail_paths"] == ["sleeps"]
    assert http.get("/v1/human/sleeps", headers=headers).status_code == 500
    assert http.post("/_sim/faults", json={"no_such_knob": 1}).status_code == 400
    assert http.post("/_sim/faults", json={"drop_rate": 2}).status_code == 400
    http.post("/_sim/faults", json={"fail_paths": []})
    assert http.get("/v1/human/sleeps", headers=headers).status_code == 200
