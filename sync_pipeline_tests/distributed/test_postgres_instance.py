"""The Dagster instance on PostgreSQL (deployment/dagster.postgres.yaml): the harness flow and a
multi-day intake backfill recorded in Postgres, tables filled. Needs .ci/services."""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path

import pytest
from dagster import DagsterRunStatus, RunsFilter
from dagster_postgres import PostgresRunStorage

from sync_pipeline import deploy
from sync_pipeline.deploy import LOCAL_INSTANCE_YAML
from sync_pipeline_tests.dagster.test_backfill import PER_DAY, day_range, land_days, rows_per_day
from sync_pipeline_tests.distributed.services import PG, fresh_pg_database, postgres_stack

HOME = Path("/srv/dagster home")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, LOCAL_INSTANCE_YAML + deploy.local_storage_yaml(HOME)),
        ({"SYNC_DAGSTER_STORAGE": "sqlite"}, LOCAL_INSTANCE_YAML + deploy.local_storage_yaml(HOME)),
        (
            {"SYNC_DAGSTER_STORAGE": "postgres", **PG},
            (deploy.DEPLOY_DIR / "dagster.postgres.yaml").read_text(),
        ),
    ],
)
def test_instance_yaml_follows_the_environment(env: dict[str, str], expected: str) -> None:
    assert deploy.instance_yaml(env, HOME) == expected


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SYNC_DAGSTER_STORAGE": "mysql"}, "must be one of sqlite, postgres"),
        ({"SYNC_DAGSTER_STORAGE": "postgres", "DAGSTER_PG_HOST": "h"}, "DAGSTER_PG_PORT"),
    ],
)
def test_instance_yaml_refuses_bad_selections(env: dict[str, str], message: str) -> None:
    with pytest.raises(deploy.DeployError, match=message):
        deploy.instance_yaml(env, HOME)


@pytest.mark.slow
def test_sync_and_backfill_recorded_in_postgres(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    days = day_range(dt.date(2025, 3, 1), 3)
    land_days(data_dir, days)
    with postgres_stack(data_dir) as stack:
        instance = stack.instance
        assert isinstance(instance.run_storage, PostgresRunStorage)

        stack.sim.post_initial_sessions()
        stack.intake()
        catchup = stack.sync("catchup")
        assert stack.query("SELECT count(*) FROM connect.users") == [(2,)]
        assert stack.query("SELECT count(*) FROM medical.test_results")[0][0] > 0

        # a multi-day backfill of the intake partitions: one run per day, as a backfill launches
        for day in days:
            stack.run("intake_job", partition_key=day.isoformat())
        counts = rows_per_day(stack.settings.warehouse_path)
        assert {d: counts.get(d) for d in days} == {d: 2 * PER_DAY for d in days}

        runs = instance.get_runs()
        assert len(runs) == 2 + len(days)
        assert {r.status for r in runs} == {DagsterRunStatus.SUCCESS}
        partitions = {
            r.tags.get("dagster/partition")
            for r in instance.get_runs(RunsFilter(job_name="intake_job"))
        }
        assert {d.isoformat() for d in days} <= partitions
        # the event log is in Postgres too: the sync's materializations are readable back
        assert instance.get_run_by_id(catchup.run_id) is not None
        kinds = {
            e.dagster_event.event_type_value
            for e in instance.all_logs(catchup.run_id)
            if e.dagster_event is not None
        }
        assert "ASSET_MATERIALIZATION" in kinds


def test_missing_postgres_fails_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setitem(PG, "DAGSTER_PG_PORT", str(port))
    with pytest.raises(pytest.fail.Exception, match=r"\.ci/services"), fresh_pg_database():
        pass
