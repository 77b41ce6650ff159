"""Issue 8, faults: real sync runs against the running simulator with its fault knobs on.

Every test compares the warehouse with the simulator's truth and reads the request audit
(ops.http_requests) to see what the client actually did on the wire. One stack (simulator,
receiver, connected users) serves the module; each test syncs into its own copy of the
warehouse, so tests stay independent without paying for a stack each.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from dagster import DagsterEventType
from starlette.requests import Request
from starlette.responses import Response

from starfleet.app import error_response
from starfleet.config import RetryAfterFormat, SimFaults
from starfleet.server import SimulatorHandle
from sync_pipeline.assets.records import record_sync
from sync_pipeline.settings import Settings
from sync_pipeline.upstream.endpoints import BY_PATH
from sync_pipeline.upstream.errors import UpstreamUnreachable
from sync_pipeline_tests.e2e.harness import Stack
from sync_pipeline_tests.reliability.flow import BROKEN as FLOW_BROKEN
from sync_pipeline_tests.reliability.flow import Flow
from sync_pipeline_tests.reliability.helpers import (
    connected_stack,
    duplicate_keys,
    fresh_warehouse,
    loaded_keys,
    query,
    sync_once,
    truth_by_key,
    truth_keys,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with connected_stack(tmp_path_factory.mktemp("faults") / "data") as running:
        yield running


@pytest.fixture
def settings(stack: Stack, tmp_path: Path) -> Settings:
    stack.sim.app_config.faults = SimFaults()
    stack.reset_stats()
    return fresh_warehouse(stack, tmp_path / "data")


Attempt = tuple[int, int, datetime, float, str]


def attempts(settings: Settings, where: str = "true") -> dict[str, list[Attempt]]:
    """request_id → [(attempt, status, started_at, duration_ms, path)] in attempt order."""
    rows = query(
        settings,
        "SELECT request_id, attempt, coalesce(status, 0), started_at, duration_ms, path "
        f"FROM ops.http_requests WHERE {where} ORDER BY request_id, attempt",
    )
    out: dict[str, list[Attempt]] = {}
    for request_id, *rest in rows:
        out.setdefault(request_id, []).append(tuple(rest))  # type: ignore[arg-type]
    return out


def assert_level_with_truth(stack: Stack, settings: Settings) -> None:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        keys = loaded_keys(con)
        assert duplicate_keys(con) == {}
    assert len(keys) == len(set(keys))
    assert set(keys) == truth_keys(stack.sim)


def assert_loaded_rows_equal_truth(stack: Stack, settings: Settings) -> int:
    """Every stored record row is (as JSON) exactly a record the simulator holds."""
    truth = truth_by_key(stack.sim)
    checked = 0
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        assert duplicate_keys(con) == {}
        for table, human_id, record_id in loaded_keys(con):
            row = con.execute(
                f"SELECT raw FROM {table} WHERE human_id = ? AND record_id = ?",
                [human_id, record_id],
            ).fetchone()
            assert row is not None
            assert json.loads(row[0]) == truth[(table, human_id, record_id)]
            checked += 1
    return checked


@pytest.mark.parametrize("retry_after_format", ["seconds", "http-date"])
def test_429_retry_after_is_waited_out_and_attempts_stay_capped(
    stack: Stack, settings: Settings, retry_after_format: RetryAfterFormat
) -> None:
    # 10/s, and the first three requests refused whatever the clock says (throttle_first_n:
    # the client learns the limit from the run's first answer, the probe's token, and then
    # paces under it, so the limit alone is rarely hit); those Retry-Afters are exactly 1 s.
    faults = SimFaults(
        rate_limit_per_s=10, throttle_first_n=3, retry_after_format=retry_after_format
    )
    report = sync_once(stack, faults=faults, settings=settings)
    assert stack.sim_stats()["rate_limited"] > 0, "the limit was never hit: test proves nothing"
    assert report.summary.failed_items == []
    assert_level_with_truth(stack, settings)  # every user's data arrived: nobody starved
    waited = 0
    for tries in attempts(settings).values():
        assert [a for a, *_ in tries] == list(range(1, len(tries) + 1))
        assert len(tries) <= settings.http_max_attempts
        for before, after in itertools.pairwise(tries):
            _, status, started, duration_ms, _ = before
            next_started = after[2]
            if status != 429:
                continue
            if retry_after_format == "seconds":
                earliest = started.timestamp() + duration_ms / 1000 + 1.0
            else:  # an HTTP-date has whole seconds: not before the second after the send
                earliest = math.floor(started.timestamp()) + 1.0
            assert next_started.timestamp() >= earliest - 0.01, (started, next_started)
            waited += 1
    assert waited > 0


def test_503_three_times_then_200_loads_the_data_once(stack: Stack, settings: Settings) -> None:
    report = sync_once(stack, faults=SimFaults(fail_first_n=3), settings=settings)
    assert report.summary.failed_items == []
    failures: Counter[str] = Counter()
    for tries in attempts(settings, "path NOT LIKE '%token%'").values():
        statuses = [status for _, status, *_ in tries]
        assert set(statuses[:-1]) <= {503} and statuses[-1] in (200, 404), statuses
        failures[tries[0][4]] += len(statuses) - 1
    # the simulator fails the first three requests to each URL path, whoever asks
    assert failures and set(failures.values()) == {3}
    assert_level_with_truth(stack, settings)
    # a second, clean, full run changes nothing and still duplicates nothing
    sync_once(stack, mode="full", settings=settings)
    assert_level_with_truth(stack, settings)


BROKEN = "medical/test_results"


def test_a_permanently_failing_endpoint_fails_alone_bounded_and_keeps_its_cursor(
    stack: Stack, settings: Settings
) -> None:
    humans = {u.human_id for u in stack.sim.world.users}
    started = time.monotonic()
    report = sync_once(
        stack,
        faults=SimFaults(fail_paths=(BROKEN,)),
        settings=settings,
        http_max_attempts=3,
        http_deadline_s=5.0,
    )
    assert time.monotonic() - started < 20
    assert {(h, e) for h, e, _ in report.summary.failed_items} == {(h, BROKEN) for h in humans}
    broken_tries = attempts(settings, f"path LIKE '%{BROKEN}%'")
    assert broken_tries and all(len(t) == 3 for t in broken_tries.values())
    assert query(
        settings,
        "SELECT count(*) FROM ops.sync_state "
        "WHERE endpoint = ? AND cursor_updated_since IS NOT NULL",
        [BROKEN],
    ) == [(0,)]
    advanced = query(
        settings,
        "SELECT count(DISTINCT human_id) FROM ops.sync_state "
        "WHERE endpoint <> ? AND cursor_updated_since IS NOT NULL",
        [BROKEN],
    )
    assert advanced == [(len(humans),)]
    expected = {k for k in truth_keys(stack.sim) if k[0] != "medical.test_results"}
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        assert set(loaded_keys(con)) == expected  # everything else committed


def test_a_failing_endpoint_is_reported_by_the_dagster_run(flow: Flow) -> None:
    """The same through Dagster: the shared flow's catch-up (flow.py) ran with one endpoint
    failing every request. The run fails (ops see it red), after recording the materialisations
    of what it committed, which count the failures; its log names each failed user and
    endpoint."""
    assert not flow.failing_run_succeeded
    for human_id in flow.humans:
        assert any(human_id in m and FLOW_BROKEN in m for m in flow.failing_run_messages), (
            flow.failing_run_messages
        )
    assert flow.failing_run_counts == {len(flow.humans)}


def test_a_step_that_left_items_behind_reports_its_checks_before_it_fails(flow: Flow) -> None:
    """The same run's record_sync step committed, then failed for the items it left behind:
    every check of its tables was evaluated in the step, after the materialisations they judge
    and before the step's failure, and the key checks passed (what did commit is sound)."""
    events = flow.failing_step_events
    failure = events.index(DagsterEventType.STEP_FAILURE.value)
    evaluations = [
        i for i, e in enumerate(events) if e == DagsterEventType.ASSET_CHECK_EVALUATION.value
    ]
    materialised = [
        i for i, e in enumerate(events) if e == DagsterEventType.ASSET_MATERIALIZATION.value
    ]
    assert evaluations and materialised
    assert max(materialised) < min(evaluations) and max(evaluations) < failure
    assert set(flow.failing_step_checks) == {k.to_user_string() for k in record_sync.check_keys}
    keys = {k: ok for k, ok in flow.failing_step_checks.items() if k.endswith("_key")}
    assert keys and all(keys.values()), keys


@pytest.mark.parametrize(
    ("faults", "overrides"),
    [
        pytest.param(SimFaults(drop_rate=0.3, seed=3), {}, id="reset-connections"),
        pytest.param(SimFaults(truncate_rate=0.3, seed=4), {}, id="truncated-bodies"),
        pytest.param(SimFaults(drop_rate=0.9, seed=5), {"http_max_attempts": 2}, id="mostly-reset"),
        pytest.param(
            SimFaults(truncate_rate=0.9, seed=6), {"http_max_attempts": 2}, id="mostly-truncated"
        ),
        pytest.param(
            SimFaults(latency_ms=2000),
            {"http_timeout_s": 0.3, "http_max_attempts": 2, "http_deadline_s": 3.0},
            id="timeouts",
        ),
    ],
)
def test_transport_faults_end_in_bounded_time_with_nothing_partial(
    stack: Stack, settings: Settings, faults: SimFaults, overrides: dict[str, Any]
) -> None:
    started = time.monotonic()
    try:
        report = sync_once(stack, faults=faults, settings=settings, **overrides)
    except UpstreamUnreachable as stop:
        # so faulty that the probe before the fan-out got no usable token: the run stops at
        # once, with the transport fault named, and commits nothing. An aborted connection
        # reads as a closed one (RemoteProtocolError) or a reset one (ReadError), depending on
        # when the abort reaches the client
        assert time.monotonic() - started < 60
        transport_faults = ("RemoteProtocolError", "ReadError", "WriteError", "JSON", "Timeout")
        assert any(why in stop.reason for why in transport_faults), stop.reason
        assert assert_loaded_rows_equal_truth(stack, settings) == 0
        assert query(settings, "SELECT count(*) FROM ops.load_log") == [(0,)]
        return
    assert time.monotonic() - started < 60
    checked = assert_loaded_rows_equal_truth(stack, settings)
    ok_items = [r for r in report.fetched.items if r.ok]
    for result in ok_items:  # every (user, endpoint) that did not fail is complete
        table, human_id = result.item.endpoint.table, result.item.user.human_id
        expected = {k[2] for k in truth_keys(stack.sim, table) if k[1] == human_id}
        got = query(settings, f"SELECT record_id FROM {table} WHERE human_id = ?", [human_id])
        assert {r for (r,) in got} == expected, (table, human_id)
    if faults.latency_ms:
        assert checked == 0 and ok_items == []
    errors = query(settings, "SELECT count(*) FROM ops.http_requests WHERE error IS NOT NULL")
    assert errors[0][0] > 0, "no fault was ever seen: test proves nothing"


def test_a_refused_token_flags_that_user_only(stack: Stack, settings: Settings) -> None:
    refused = stack.sim.world.users[0]
    report = sync_once(
        stack, faults=SimFaults(refused_users=(refused.client_user_id,)), settings=settings
    )
    assert report.summary.refused_users == [refused.human_id]
    token_tries = attempts(settings, "status = 403")
    assert token_tries and all(len(t) == 1 for t in token_tries.values())  # not retried
    flagged = query(settings, "SELECT human_id FROM connect.users WHERE needs_reconnect")
    assert flagged == [(refused.human_id,)]
    others = {k for k in truth_keys(stack.sim) if k[1] != refused.human_id}
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        assert set(loaded_keys(con)) == others


Handler = Callable[[Request], Awaitable[tuple[Response, str | None]]]
Answer = Callable[[Request, Handler], Awaitable[tuple[Response, str | None]]]


@contextmanager
def data_api_answering(sim: SimulatorHandle, answer: Answer) -> Iterator[None]:
    """Let `answer` decide the simulator's data-API answers (after its fault plumbing, so the
    stats and request ids stay real). SimFaults has no knob for a 400 or a token revoked
    mid-run; like sync_pipeline_tests/upstream/observe.py, this reaches into the app."""
    original = sim.app._human

    async def wrapped(request: Request, route: object) -> tuple[Response, str | None]:
        return await answer(request, lambda r: original(r, route))  # type: ignore[arg-type]

    sim.app._human = wrapped  # type: ignore[method-assign]
    try:
        yield
    finally:
        sim.app._human = original  # type: ignore[method-assign]


def test_a_401_renews_the_token_once_per_user_through_a_real_sync(
    stack: Stack, settings: Settings
) -> None:
    """The upstream revokes a user's token after that user's first data answer: the user's next
    request gets a 401, the client asks one new token and the data still arrives once."""
    served: set[str] = set()

    async def revoke_after_first(request: Request, handler: Handler) -> tuple[Response, str | None]:
        response, human_id = await handler(request)
        if response.status_code == 200 and human_id is not None and human_id not in served:
            served.add(human_id)
            tokens = stack.sim.app._tokens
            for token in [t for t, entry in tokens.items() if entry.human_id == human_id]:
                del tokens[token]
        return response, human_id

    with data_api_answering(stack.sim, revoke_after_first):
        report = sync_once(stack, settings=settings, http_concurrency=1)
    assert report.summary.failed_items == []
    assert_level_with_truth(stack, settings)
    humans = {u.human_id for u in stack.sim.world.users}
    assert served == humans
    unauthorised = attempts(settings, "status = 401")
    assert unauthorised, "no 401 was ever answered: test proves nothing"
    for request_id, tries in attempts(settings).items():
        statuses = [status for _, status, *_ in tries]
        if 401 in statuses:  # renewed once, then answered: never a second 401
            assert statuses.count(401) == 1 and statuses[-1] in (200, 404), (request_id, tries)
    tokens = query(
        settings,
        "SELECT human_id, count(*) FROM ops.http_requests WHERE path LIKE '%token%' "
        "AND status = 200 GROUP BY human_id",
    )
    assert dict(tokens) == dict.fromkeys(humans, 2)  # the first token and one renewal each


REFUSED = "sleeps"


def test_a_400_is_not_retried_and_fails_that_endpoint_alone(
    stack: Stack, settings: Settings
) -> None:
    async def bad_request(request: Request, handler: Handler) -> tuple[Response, str | None]:
        if request.url.path.endswith(f"/{REFUSED}"):
            return error_response(400, "bad_request", "Simulated bad request"), None
        return await handler(request)

    with data_api_answering(stack.sim, bad_request):
        report = sync_once(stack, settings=settings)
    humans = {u.human_id for u in stack.sim.world.users}
    assert {(h, e) for h, e, _ in report.summary.failed_items} == {(h, REFUSED) for h in humans}
    refused = attempts(settings, "status = 400")
    assert len(refused) == len(humans)
    assert all([a for a, *_ in tries] == [1] for tries in refused.values())  # one attempt each
    assert attempts(settings, f"path LIKE '%/{REFUSED}' AND status <> 400") == {}
    expected = {k for k in truth_keys(stack.sim) if k[0] != BY_PATH[REFUSED].table}
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        assert set(loaded_keys(con)) == expected


def test_404_is_not_retried_and_marks_the_record_gone(tmp_path: Path) -> None:
    """Its own stack: it changes the simulator's world."""
    with connected_stack(tmp_path / "data", users=1) as stack:
        sync_once(stack)
        item = stack.sim.advance(updated=1)["items"][0]
        human_id, object_id = item["humanId"], item["objectId"]
        path = item["endpoint"].split("/v1/human/", 1)[1]
        assert stack.sim.world.delete(human_id, path, object_id)
        stack.intake()
        sync_once(stack, mode="incremental")
        tries = attempts(stack.settings, f"status = 404 AND path LIKE '%{object_id}%'")
        assert len(tries) == 1 and all(len(t) == 1 for t in tries.values())
        table = BY_PATH[path].table
        gone = stack.query(
            f"SELECT deleted_at IS NOT NULL FROM {table} WHERE record_id = ?", [object_id]
        )
        assert gone == [(True,)]
