"""Connection state end to end: Connect sessions through the real receiver, Dagster runs, and
the sensors that turn a new connection into that user's data (issue 5)."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import jwt
import pytest

from starfleet.config import SimFaults
from starfleet.delivery import session_body
from starfleet.sources import SOURCE_CATALOGUE, Source
from starfleet.world import SimUser
from sync_pipeline.assets.sensors import landing_sensor, new_connection_sensor, sync_after_intake
from sync_pipeline.connect.sources import HERE_ONLY, UPSTREAM_ONLY
from sync_pipeline.definitions import defs
from sync_pipeline.resources import build_resources
from sync_pipeline_tests.e2e.harness import Stack, running_stack

pytestmark = pytest.mark.slow


# --- helpers ----------------------------------------------------------------------------------


def _signed_session(
    stack: Stack,
    user: SimUser,
    iat: int,
    event: str,
    status: str,
    *,
    connected: Sequence[Source] = (),
    disconnected: Sequence[Source] = (),
    current: Sequence[Source] = (),
) -> tuple[bytes, str]:
    """The exact body and JWT an app would post, with a chosen session instant (`iat`)."""
    body = session_body(
        event, status, connected=connected, disconnected=disconnected, current=current
    )
    private_pem = (stack.settings.data_dir / "keys" / "session_private.pem").read_text()
    claims = {
        "client_user_id": user.client_user_id,
        "human_id": user.human_id,
        "iat": iat,
        "exp": int(time.time()) + 600,
    }
    return json.dumps(body).encode(), jwt.encode(claims, private_pem, algorithm="RS256")


def _post(stack: Stack, body: bytes, token: str) -> int:
    response = httpx.post(
        f"{stack.receiver_url}/connect/sessions",
        content=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=10,
    )
    return response.status_code


def _instant(epoch_s: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC)


def _test_results(stack: Stack, human_id: str) -> int:
    rows = stack.query("SELECT count(*) FROM medical.test_results WHERE human_id = ?", [human_id])
    return int(rows[0][0])


def _needs_reconnect(stack: Stack) -> dict[str, bool]:
    return dict(stack.query("SELECT client_user_id, needs_reconnect FROM connect.users"))


def _wait_for_next_second() -> None:
    """Session instants are JWT `iat` seconds: a session meant to come after an event that
    happened this second must be issued in the next one."""
    time.sleep(1.05 - time.time() % 1)


def _reconcile_check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (evaluation,) = [
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == "sources_agree_with_connections"
    ]
    return evaluation


# --- exact history from a sequence of sessions ------------------------------------------------


def test_history_depends_on_session_times_not_arrival(tmp_path: Path) -> None:
    with running_stack(tmp_path / "data", users=2, min_records=2, max_records=4) as stack:
        user = stack.sim.world.users[0]
        fitbit, withings = (s for s in SOURCE_CATALOGUE if s.name in ("Fitbit", "Withings"))
        t0 = int(time.time()) - 600
        steps = [
            _signed_session(
                stack, user, t0, "connect_source", "CONNECTED_SOURCE", connected=[fitbit]
            ),
            _signed_session(
                stack, user, t0 + 10, "connect_source", "CONNECTED_SOURCE", connected=[withings]
            ),
            _signed_session(
                stack,
                user,
                t0 + 20,
                "disconnect_source",
                "DISCONNECTED_SOURCE",
                disconnected=[fitbit],
            ),
            # abnormal: its empty currentConnections must not close anything
            _signed_session(stack, user, t0 + 30, "close", "SESSION_TOKEN_EXPIRED"),
        ]
        statuses = [_post(stack, body, token) for body, token in steps]
        statuses.append(_post(stack, *steps[1]))  # the same delivery again
        # late: issued before the disconnect above but arriving last. Applied in arrival order,
        # its full state would reopen Fitbit; applied in session-time order it changes nothing.
        late = _signed_session(stack, user, t0 + 15, "close", "SUCCESS", current=[fitbit, withings])
        statuses.append(_post(stack, *late))
        assert statuses == [200] * 6

        stack.intake()
        stack.run("connection_state_job")

        assert stack.query("SELECT count(*) FROM connect.session_responses") == [(5,)]
        history = stack.query(
            "SELECT human_id, source_id, valid_from, valid_to FROM connect.connection_history "
            "ORDER BY valid_from"
        )
        assert history == [
            (user.human_id, fitbit.id, _instant(t0), _instant(t0 + 20)),
            (user.human_id, withings.id, _instant(t0 + 10), None),
        ]
        current = stack.query(
            "SELECT human_id, source_id, source_name, connected_since "
            "FROM connect.current_connections"
        )
        assert current == [(user.human_id, withings.id, "Withings", _instant(t0 + 10))]
        events = stack.query(
            "SELECT source_id, change, session_at FROM connect.connection_events "
            "ORDER BY session_at"
        )
        assert events == [
            (fitbit.id, "connected", _instant(t0)),
            (withings.id, "connected", _instant(t0 + 10)),
            (fitbit.id, "disconnected", _instant(t0 + 20)),
        ]
        users = stack.query(
            "SELECT client_user_id, human_id, last_session_status, needs_reconnect "
            "FROM connect.users"
        )
        assert users == [(user.client_user_id, user.human_id, "SESSION_TOKEN_EXPIRED", False)]


# --- refused users, disconnected users, reconciliation: one timeline -------------------------


def test_refused_and_disconnected_users_and_reconciliation(tmp_path: Path) -> None:
    """One timeline (runs are the expensive part): a refused user is marked and skipped while the
    others sync; a new SUCCESS session clears it; a user who disconnected everything is not
    fetched at all; a source connected upstream without a session fails the reconciliation."""
    with running_stack(tmp_path / "data", users=3, min_records=2, max_records=4) as stack:
        refused, drifted, leaver = stack.sim.world.users
        stack.sim.app_config.faults = SimFaults(refused_users=(refused.client_user_id,))
        stack.sim.post_initial_sessions()
        stack.intake()

        first = stack.sync("catchup")
        assert _needs_reconnect(stack) == {
            refused.client_user_id: True,
            drifted.client_user_id: False,
            leaver.client_user_id: False,
        }
        assert _test_results(stack, refused.human_id) == 0
        assert (
            _test_results(stack, drifted.human_id) > 0 and _test_results(stack, leaver.human_id) > 0
        )
        # the run says so: materialisation metadata and a warning in its log
        metadata = [
            m.metadata["users_needing_reconnect"].value
            for m in first.asset_materializations_for_node("record_sync")
        ]
        assert set(metadata) == {1}
        warnings = [
            record.user_message
            for record in stack.instance.all_logs(first.run_id)
            if "token refused" in record.user_message
        ]
        assert warnings and refused.human_id in warnings[0]
        # no snapshot for the refused user (no evidence), the others agree with /sources
        assert _reconcile_check(first).passed

        # skipped, not asked again: no token request for the user while marked
        stack.reset_stats()
        stack.sync("catchup")
        assert refused.human_id not in stack.sim_stats()["by_human_id"]

        # the refused user goes through Connect again (a SUCCESS close with connections), the
        # leaver disconnects everything, and a source appears upstream with no session about it
        stack.sim.app_config.faults = SimFaults()
        _wait_for_next_second()
        stack.sim.post_session(refused.client_user_id, "close")
        stack.sim.post_session(leaver.client_user_id, "close", disconnect=list(leaver.connections))
        extra = next(s for s in SOURCE_CATALOGUE if s.id not in drifted.connections)
        stack.sim.world.connect(drifted.human_id, [extra.id])
        stack.intake()
        stack.reset_stats()
        last = stack.sync("catchup")

        assert not any(_needs_reconnect(stack).values())
        assert _test_results(stack, refused.human_id) > 0
        fetched = stack.sim_stats()["by_human_id"]
        assert leaver.human_id not in fetched  # no token request, no data request
        assert fetched.get(refused.human_id, 0) > 0 and fetched.get(drifted.human_id, 0) > 0
        open_rows = "SELECT count(*) FROM connect.current_connections WHERE human_id = ?"
        assert stack.query(open_rows, [leaver.human_id]) == [(0,)]

        check = _reconcile_check(last)
        assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
        assert check.metadata["users_disagreeing"].value == 1
        table: Any = check.metadata["disagreements"].value
        assert drifted.human_id in table and extra.slug in table and UPSTREAM_ONLY in table
        assert HERE_ONLY not in table and refused.human_id not in table


# --- sensors: a new connection brings the user's data -----------------------------------------


class SensorLoop:
    """What the Dagster daemon does, in-process: evaluate the sensors with their cursors and run
    what they request, in the stack's instance (run_keys are checked here, as the daemon would)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.cursors: dict[str, str | None] = {}
        self.run_keys: list[str] = []
        self.runs: list[tuple[str, dg.ExecuteInProcessResult]] = []

    def _tick(self, sensor: dg.SensorDefinition) -> list[dg.RunRequest]:
        context = dg.build_sensor_context(
            instance=self.stack.instance,
            cursor=self.cursors.get(sensor.name),
            sensor_name=sensor.name,
            definitions=defs,
            resources=build_resources(self.stack.settings),
        )
        data = sensor.evaluate_tick(context)
        self.cursors[sensor.name] = data.cursor
        return list(data.run_requests or [])

    def _launch(self, job: str, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        assert request.run_key is not None and request.run_key not in self.run_keys
        self.run_keys.append(request.run_key)
        result = self.stack.run(
            job, partition_key=request.partition_key, config=dict(request.run_config)
        )
        self.runs.append((job, result))
        return result

    def after_intake(self, result: dg.ExecuteInProcessResult) -> dg.RunRequest:
        run = self.stack.instance.get_run_by_id(result.run_id)
        assert run is not None
        context = dg.build_run_status_sensor_context(
            sensor_name=sync_after_intake.name,
            dagster_event=result.get_run_success_event(),
            dagster_instance=self.stack.instance,
            dagster_run=run,
        )
        request = sync_after_intake(context)
        assert isinstance(request, dg.RunRequest)
        return request

    def once(self) -> list[str]:
        """One round: landing → intake → incremental sync, then new connections → catch-up.
        Returns the jobs run."""
        started = len(self.runs)
        for request in self._tick(landing_sensor):
            intake = self._launch("intake_job", request)
            self._launch("incremental_sync_job", self.after_intake(intake))
        for request in self._tick(new_connection_sensor):
            self._launch("catchup_sync_job", request)
        return [job for job, _ in self.runs[started:]]


def test_new_connection_through_the_receiver_brings_the_users_data(tmp_path: Path) -> None:
    with running_stack(tmp_path / "data", users=1, min_records=2, max_records=4) as stack:
        newcomer = stack.sim.world.users[0]
        loop = SensorLoop(stack)
        assert loop.once() == []  # nothing landed yet

        unconnected = [s.id for s in SOURCE_CATALOGUE if s.id not in newcomer.connections]
        stack.sim.post_session(newcomer.client_user_id, "connect_source", connect=unconnected[:1])
        assert loop.once() == ["intake_job", "incremental_sync_job", "catchup_sync_job"]
        assert loop.run_keys[-1].startswith(f"connect:{newcomer.human_id}:")
        assert _test_results(stack, newcomer.human_id) > 0
        assert loop.once() == []  # evaluated again: no new run, no doubled run key
