"""Backfills of the daily intake partitions: one day, a range in one run, overlapping re-runs,
and a 30-day backfill launched the way the UI launches it (its own process; a process per step
with SYNC_EXECUTOR=multiprocess) while other runs write the same DuckDB file."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from sync_pipeline.definitions import defs
from sync_pipeline.deploy import LOCAL_INSTANCE_YAML
from sync_pipeline.intake.landing import LandedDelivery, LandingLog
from sync_pipeline_tests.resources import resources_for

API = "https://api.humanapi.co/v1/human"
FIRST_DAY = dt.date(2025, 3, 1)
PER_DAY = 3  # deliveries per day, each with two good items and one unusable one


def _delivery(day: dt.date, n: int) -> LandedDelivery:
    received = dt.datetime.combine(day, dt.time(10, n), tzinfo=dt.UTC)
    human = f"{day:%Y%m%d}{n:024x}"
    items = [
        {
            "humanId": human,
            "updatedAt": received.isoformat(),
            "endpoint": f"{API}/medical/test_results",
            "type": "medical",
            "model": "testresult",
            "action": "created",
            "objectId": f"{day:%m%d}{n:020x}",
        },
        {
            "humanId": human,
            "updatedAt": received.isoformat(),
            "endpoint": f"{API}/activities",
            "type": "wellness",
            "model": "activity",
            "action": "updated",
            "objectId": f"{day:%m%d}{n + 100:020x}",
        },
        {"humanId": human, "endpoint": "https://elsewhere.example/x", "action": "created"},
    ]
    body = json.dumps(items)
    return LandedDelivery(
        digest=hashlib.sha256(body.encode()).hexdigest(),
        kind="notifications",
        received_at=received,
        headers={},
        body=body,
        claims=None,
    )


def land_days(data_dir: Path, days: list[dt.date]) -> None:
    """Land PER_DAY notification deliveries on each day (the landing log files them by the
    UTC date of received_at)."""
    log = LandingLog(data_dir, "notifications")
    try:
        for day in days:
            for n in range(PER_DAY):
                assert log.land_sync(_delivery(day, n))
    finally:
        log.close()


def day_range(first: dt.date, count: int) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range(count)]


def rows_per_day(warehouse: Path) -> dict[dt.date, int]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute(
            "SELECT CAST(timezone('UTC', received_at) AS DATE), count(*) "
            "FROM ops.notifications GROUP BY ALL"
        ).fetchall()
    return {day: int(n) for day, n in rows}


def snapshot(warehouse: Path) -> dict[str, list[tuple[Any, ...]]]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {
            table: con.execute(f"SELECT * EXCLUDE ({drop}) FROM {table} ORDER BY ALL").fetchall()
            for table, drop in (
                ("ops.notifications", "synced_at"),
                # the first run to see a reject records it; its run_id stays (first write wins)
                ("ops.rejected_records", "rejected_at"),
                ("connect.session_responses", "payload"),
            )
        }


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def run_intake(
    instance: dg.DagsterInstance, data_dir: Path, first: dt.date, last: dt.date
) -> dg.ExecuteInProcessResult:
    """One run of intake_job over [first, last], as the UI launches a single-run backfill."""
    job = defs.resolve_job_def("intake_job")
    resources = resources_for(data_dir)
    if first == last:
        return job.execute_in_process(
            instance=instance, partition_key=first.isoformat(), resources=resources
        )
    tags = {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }
    return job.execute_in_process(instance=instance, tags=tags, resources=resources)


@pytest.mark.slow
def test_single_day_then_range_then_overlapping_range(data_dir: Path) -> None:
    days = day_range(FIRST_DAY, 6)
    land_days(data_dir, days)
    warehouse = data_dir / "warehouse.duckdb"
    with dg.instance_for_test() as instance:
        result = run_intake(instance, data_dir, days[2], days[2])
        assert result.success
        assert rows_per_day(warehouse) == {days[2]: 2 * PER_DAY}
        meta = result.asset_materializations_for_node("notification_intake")[0].metadata
        assert meta["days"].value == f"{days[2]} .. {days[2]}"

        result = run_intake(instance, data_dir, days[0], days[3])
        assert result.success
        assert rows_per_day(warehouse) == {d: 2 * PER_DAY for d in days[0:4]}
        # one run for the whole range, and its window covers exactly the four days
        meta = result.asset_materializations_for_node("notification_intake")[0].metadata
        assert meta["days"].value == f"{days[0]} .. {days[3]}"
        assert meta["deliveries"].value == 4 * PER_DAY
        before = snapshot(warehouse)

        # an overlapping range again: the overlap changes nothing, the new days are added
        assert run_intake(instance, data_dir, days[1], days[3]).success
        assert snapshot(warehouse) == before
        assert run_intake(instance, data_dir, days[3], days[5]).success
        after = snapshot(warehouse)
        assert rows_per_day(warehouse) == {d: 2 * PER_DAY for d in days}
        assert run_intake(instance, data_dir, days[0], days[5]).success
        assert snapshot(warehouse) == after
        with duckdb.connect(str(warehouse), read_only=True) as con:
            rejected = con.execute(
                "SELECT count(*) FROM ops.rejected_records WHERE table_name = 'ops.notifications'"
            ).fetchall()
        assert rejected == [(len(days) * PER_DAY,)]


# --- a 30-day backfill next to other writers, each in its own process --------------------------

DAGSTER = str(Path(sys.executable).with_name("dagster"))
LOCK_ERROR = "Could not set lock"


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [DAGSTER, *args, "-m", "sync_pipeline.definitions"],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _pool_intervals(instance: dg.DagsterInstance) -> Iterator[tuple[float, float, str]]:
    """(start, end, run:step) of every step that ran in the warehouse pool, from the event log."""
    for record in instance.get_run_records():
        starts: dict[str, float] = {}
        for event in instance.all_logs(record.dagster_run.run_id):
            step = event.step_key
            if step is None or event.dagster_event is None:
                continue
            kind = event.dagster_event.event_type_value
            if kind == "STEP_START":
                starts[step] = event.timestamp
            elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
                yield starts[step], event.timestamp, f"{record.dagster_run.run_id[:8]}:{step}"


def _blocked_messages(instance: dg.DagsterInstance) -> list[str]:
    return [
        event.message
        for record in instance.get_run_records()
        for event in instance.all_logs(record.dagster_run.run_id)
        if event.message.startswith("Step blocked by limit for pool warehouse")
    ]


@pytest.mark.slow
def test_30_day_backfill_with_multiprocess_executor_and_concurrent_writers(
    data_dir: Path, tmp_path: Path
) -> None:
    """The UI launches a single-run backfill as one run in a new process. Here the CLI does the
    same with SYNC_EXECUTOR=multiprocess (a process per step: the two intake steps are ready
    together; unset, this serial job would run its steps in the run worker, shape_executor.py)
    while a connection-state rebuild runs alongside in its own process (same executor): every
    step that opens
    DuckDB waits for the one warehouse pool slot (sync_pipeline.instance), so no step ever
    meets another's file lock."""
    days = day_range(FIRST_DAY, 30)
    land_days(data_dir, days)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(LOCAL_INSTANCE_YAML)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "SYNC_DATA_DIR": str(data_dir),
        "SYNC_EXECUTOR": "multiprocess",
    }
    # create the instance's storage first: two processes creating it at once race in alembic
    with dg.DagsterInstance.from_config(str(home)):
        pass
    intake = (
        "ops/notification_items,ops/rejected_notification_items,"
        "connect/session_responses,ops/rejected_session_responses"
    )
    procs = [
        _cli(
            [
                "asset",
                "materialize",
                "--select",
                intake,
                "--partition-range",
                f"{days[0]}...{days[-1]}",
            ],
            env,
            tmp_path,
        ),
        _cli(["job", "execute", "-j", "connection_state_job"], env, tmp_path),
    ]
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=300)
            outputs.append(out)
            assert proc.returncode == 0, out[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert not [out for out in outputs if LOCK_ERROR in out]

    assert rows_per_day(data_dir / "warehouse.duckdb") == {d: 2 * PER_DAY for d in days}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_run_records()
        assert len(runs) == 2
        assert {r.dagster_run.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
        # the 30 days were one run (BackfillPolicy.single_run), with the range tags
        ranged = [
            r.dagster_run
            for r in runs
            if "dagster/asset_partition_range_start" in r.dagster_run.tags
        ]
        assert len(ranged) == 1
        # every DuckDB step of every run ran alone: the pool serialised them across processes
        intervals = sorted(_pool_intervals(instance))
        # 2 intake steps and the rebuild, each evaluating its tables' checks in the step
        assert len(intervals) == 3
        checked_in = {
            event.step_key
            for record in runs
            for event in instance.all_logs(
                record.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
            )
        }
        assert checked_in == {"notification_intake", "session_intake", "connection_state"}
        for (_, end, a), (start, _, b) in itertools.pairwise(intervals):
            assert end <= start, f"{a} and {b} overlapped"
        # and the pool did hold steps back (the two intake steps are ready together)
        assert _blocked_messages(instance)
