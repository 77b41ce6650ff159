"""The sensors against real landing-log files, a real DuckDB file and a real Dagster instance."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
import pytest

from sync_pipeline.assets.records import record_sync
from sync_pipeline.assets.sensors import (
    CONNECTION_LOOKBACK,
    ConnectionCursor,
    landing_sensor,
    new_connection_sensor,
    sync_after_intake,
)
from sync_pipeline.assets.sources_check import SOURCES_AGREE
from sync_pipeline.connect.sources import UPSTREAM_ONLY, source_status_rows
from sync_pipeline.definitions import defs
from sync_pipeline.intake.landing import LandedDelivery, LandingLog
from sync_pipeline.launch import run_job, sync_config
from sync_pipeline.sync.connection_state import rebuild_connection_state
from sync_pipeline.warehouse import db
from sync_pipeline_tests.connect.builders import (
    FITBIT,
    HUMAN,
    MOVES,
    OTHER_HUMAN,
    OTHER_USER,
    WITHINGS,
    delivery,
    sessions_frame,
)
from sync_pipeline_tests.resources import resources_for, settings_for

# the connection sensor as if it had been running since before the builders' test day
ON_TEST_DAY = ConnectionCursor(dt.datetime(2026, 3, 1, tzinfo=dt.UTC), {}).dump()


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


def _evaluate(
    sensor: dg.SensorDefinition, instance: dg.DagsterInstance, data_dir: Path, cursor: str | None
) -> tuple[list[dg.RunRequest], str | None, str | None]:
    """(run requests, new cursor, skip message) of one tick."""
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        sensor_name=sensor.name,
        definitions=defs,  # partitioned requests are resolved against the job's partitions
        resources=resources_for(data_dir),
    )
    data = sensor.evaluate_tick(context)
    return list(data.run_requests or []), data.cursor, data.skip_message


# --- landing_sensor ---------------------------------------------------------------------------


def _land(data_dir: Path, kind: str, n: int, received_at: dt.datetime) -> None:
    log = LandingLog(data_dir, kind)  # type: ignore[arg-type]
    try:
        log.land_sync(
            LandedDelivery(
                digest=f"{kind}-{received_at.isoformat()}-{n}",
                kind=kind,
                received_at=received_at,
                headers={},
                body="[]",
                claims=None,
            )
        )
    finally:
        log.close()


def test_landing_sensor_requests_each_changed_day_once(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    now = dt.datetime.now(dt.UTC)
    today, yesterday = now.date().isoformat(), (now - dt.timedelta(days=1)).date().isoformat()
    _land(tmp_path, "notifications", 1, now)
    _land(tmp_path, "sessions", 1, now - dt.timedelta(days=1))
    _land(tmp_path, "notifications", 1, dt.datetime(2024, 6, 1, tzinfo=dt.UTC))  # no partition

    first, cursor, _ = _evaluate(landing_sensor, instance, tmp_path, None)
    assert sorted(r.partition_key or "" for r in first) == [yesterday, today]
    assert all(r.run_key and r.run_key.startswith(f"landing:{r.partition_key}:") for r in first)

    again, same_cursor, skipped = _evaluate(landing_sensor, instance, tmp_path, cursor)
    assert again == [] and skipped and same_cursor == cursor  # nothing new: a skip

    _land(tmp_path, "sessions", 2, now)  # today gains a delivery of the other kind
    third, cursor_3, _ = _evaluate(landing_sensor, instance, tmp_path, cursor)
    assert [r.partition_key for r in third] == [today]
    assert third[0].run_key not in {r.run_key for r in first}
    assert cursor_3 != cursor


def test_landing_sensor_skips_when_nothing_landed(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    requests, cursor, skipped = _evaluate(landing_sensor, instance, tmp_path, None)
    assert (requests, cursor) == ([], None)
    assert skipped == "no new deliveries in the landing log"


# --- sync_after_intake ------------------------------------------------------------------------


@pytest.mark.slow
def test_sync_after_intake_follows_a_successful_intake_run(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    today = dt.datetime.now(dt.UTC).date().isoformat()
    result = run_job(
        "intake_job", settings=settings_for(tmp_path), instance=instance, partition_key=today
    )
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    context = dg.build_run_status_sensor_context(
        sensor_name=sync_after_intake.name,
        dagster_event=result.get_run_success_event(),
        dagster_instance=instance,
        dagster_run=run,
    )
    request = sync_after_intake(context)
    assert isinstance(request, dg.RunRequest)
    assert request.run_key == f"after-intake:{result.run_id}"
    assert sync_after_intake.job_name == "incremental_sync_job"


# --- new_connection_sensor --------------------------------------------------------------------


def _store_sessions(data_dir: Path, rows: Sequence[dict[str, Any]]) -> None:
    with db.connect(data_dir / "warehouse.duckdb") as con:
        frame = sessions_frame(rows)
        db.insert_absent(
            con,
            "connect.session_responses",
            pa.Table.from_pandas(frame, preserve_index=False),
            ("delivery_digest",),
        )


def test_new_connection_sensor_requests_one_catchup_per_opening_session(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    _, _, skipped = _evaluate(new_connection_sensor, instance, tmp_path, None)
    assert skipped == "no warehouse yet"

    _store_sessions(
        tmp_path,
        [
            delivery("d1", "10:00", "close", connected=[FITBIT], current=[FITBIT]),
            delivery("d2", "10:05", "close", status="SESSION_TOKEN_EXPIRED", current=[]),
            delivery(
                "o1",
                "10:10",
                "connect_source",
                connected=[MOVES],
                human_id=OTHER_HUMAN,
                client_user_id=OTHER_USER,
            ),
        ],
    )
    first, cursor, _ = _evaluate(new_connection_sensor, instance, tmp_path, ON_TEST_DAY)
    assert [(r.run_key, r.run_config) for r in first] == [
        (f"connect:{HUMAN}:d1", sync_config("catchup", [HUMAN])),
        (f"connect:{OTHER_HUMAN}:o1", sync_config("catchup", [OTHER_HUMAN])),
    ]

    again, cursor_2, _ = _evaluate(new_connection_sensor, instance, tmp_path, cursor)
    assert again == []

    # repeating an open connection and disconnecting open nothing; connecting Withings does
    _store_sessions(
        tmp_path,
        [
            delivery("d3", "11:00", "connect_source", connected=[FITBIT]),
            delivery("d4", "11:01", "disconnect_source", disconnected=[FITBIT]),
            delivery("d5", "11:02", "connect_source", connected=[WITHINGS]),
        ],
    )
    third, cursor_3, _ = _evaluate(new_connection_sensor, instance, tmp_path, cursor_2 or cursor)
    assert [r.run_key for r in third] == [f"connect:{HUMAN}:d5"]
    assert third[0].tags["sync_pipeline/human_id"] == HUMAN
    parsed = ConnectionCursor.parse(cursor_3)
    assert parsed.watermark == dt.datetime(2026, 3, 1, 11, 2, tzinfo=dt.UTC)
    assert set(parsed.handled) == {"d1", "d2", "o1", "d3", "d4", "d5"}


def test_new_connection_sensor_catches_a_late_inserted_session_once(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """A session inserted after a later-received one (still being written when an intake read
    the day) is inside the lookback window: requested once, not skipped, not repeated."""
    _store_sessions(tmp_path, [delivery("d1", "10:00", "connect_source", connected=[FITBIT])])
    _, cursor, _ = _evaluate(new_connection_sensor, instance, tmp_path, ON_TEST_DAY)
    _store_sessions(
        tmp_path,
        [delivery("d0", "09:30", "connect_source", connected=[MOVES], received_at="09:59")],
    )
    late, cursor_2, _ = _evaluate(new_connection_sensor, instance, tmp_path, cursor)
    assert [r.run_key for r in late] == [f"connect:{HUMAN}:d0"]
    assert _evaluate(new_connection_sensor, instance, tmp_path, cursor_2)[0] == []


def test_new_connection_sensor_first_tick_looks_back_one_window_only(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """Turned on for the first time, the sensor does not start a catch-up for every user ever
    connected (the daily catch-up covers them), only for sessions of the last window."""
    now = pd.Timestamp.now(tz="UTC")
    old = delivery("old", "10:00", "connect_source", connected=[FITBIT])
    old["received_at"] = now - CONNECTION_LOOKBACK - pd.Timedelta(hours=1)
    new = delivery(
        "new",
        "10:00",
        "connect_source",
        connected=[MOVES],
        human_id=OTHER_HUMAN,
        client_user_id=OTHER_USER,
    )
    new["received_at"] = now
    _store_sessions(tmp_path, [old, new])
    requests, _, _ = _evaluate(new_connection_sensor, instance, tmp_path, None)
    assert [r.run_key for r in requests] == [f"connect:{OTHER_HUMAN}:new"]


def test_connection_cursor_forgets_digests_outside_the_window() -> None:
    start = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    cursor = ConnectionCursor.parse(None).advanced({"old": start})
    later = start + CONNECTION_LOOKBACK + dt.timedelta(seconds=1)
    cursor = ConnectionCursor.parse(cursor.advanced({"new": later}).dump())
    assert cursor.watermark == later
    assert set(cursor.handled) == {"new"}
    assert cursor.since == later - CONNECTION_LOOKBACK


def test_new_connection_sensor_skips_a_tick_while_a_run_holds_the_write_lock(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    _store_sessions(tmp_path, [delivery("d1", "10:00", "connect_source", connected=[FITBIT])])
    holder = subprocess.Popen(  # another process writing, as a run's step would
        [
            sys.executable,
            "-c",
            "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('locked', flush=True); "
            "sys.stdin.read()",
            str(tmp_path / "warehouse.duckdb"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        requests, cursor, skipped = _evaluate(
            new_connection_sensor, instance, tmp_path, ON_TEST_DAY
        )
        assert requests == [] and cursor == ON_TEST_DAY  # skipped: cursor unchanged
        assert skipped is not None and skipped.startswith("warehouse busy")
    finally:
        holder.communicate("")
    requests, _, _ = _evaluate(new_connection_sensor, instance, tmp_path, ON_TEST_DAY)
    assert [r.run_key for r in requests] == [f"connect:{HUMAN}:d1"]


# --- the reconciliation check (assets/sources_check.py) ---------------------------------------


def _snapshot(human_id: str, at: str, sources: list[dict[str, str]]) -> pa.Table:
    entries = [{"source": s["name"], "id": s["id"], "name": s["name"]} for s in sources]
    taken = dt.datetime.fromisoformat(f"2026-03-01T{at}:00+00:00")
    return pa.Table.from_pandas(source_status_rows(human_id, entries, taken), preserve_index=False)


def test_reconciliation_check_warns_about_disagreeing_users_only(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    _store_sessions(
        tmp_path,
        [
            delivery("h1", "10:00", "close", connected=[FITBIT], current=[FITBIT]),
            delivery(
                "o1",
                "10:00",
                "close",
                connected=[MOVES],
                current=[MOVES],
                human_id=OTHER_HUMAN,
                client_user_id=OTHER_USER,
            ),
            # after o1's snapshot below: OTHER's snapshot is stale, so it is not judged
            delivery(
                "o2",
                "12:00",
                "connect_source",
                connected=[WITHINGS],
                human_id=OTHER_HUMAN,
                client_user_id=OTHER_USER,
            ),
        ],
    )
    with db.connect(tmp_path / "warehouse.duckdb") as con:
        rebuild_connection_state(con)
        db.append(con, "connect.source_status", _snapshot(HUMAN, "11:00", [FITBIT, WITHINGS]))
        db.append(con, "connect.source_status", _snapshot(OTHER_HUMAN, "11:00", [MOVES]))
    # evaluated by record_sync after its commit; an incremental sync with nothing pending makes
    # no requests and leaves the snapshots above as they are
    result = dg.materialize(
        [record_sync],
        resources=resources_for(tmp_path),
        instance=instance,
        raise_on_error=False,
    )
    assert result.success
    (evaluation,) = [
        e for e in result.get_asset_check_evaluations() if e.check_name == SOURCES_AGREE
    ]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.description == f"1 user(s) disagree: {HUMAN}"
    assert evaluation.metadata["users_checked"].value == 1
    assert evaluation.metadata["users_with_stale_snapshot"].value == 1
    table = evaluation.metadata["disagreements"].value
    assert table == (
        f"| human_id | source | problem |\n|---|---|---|\n| {HUMAN} | Withings | {UPSTREAM_ONLY} |"
    )
