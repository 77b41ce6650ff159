"""The code location loads; every job, schedule and sensor resolves; schedules evaluate; the
jobs evaluate the asset checks of the tables they write in the steps that write them."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from sync_pipeline.assets.maintenance import lake_maintenance_schedule
from sync_pipeline.assets.schedules import JOBS, SCHEDULES
from sync_pipeline.assets.sensors import SENSORS
from sync_pipeline.definitions import defs
from sync_pipeline.tables.registry import owner_of


@pytest.mark.parametrize("name", [job.name for job in JOBS])
def test_job_resolves(name: str) -> None:
    assert defs.resolve_job_def(name).name == name


@pytest.mark.parametrize(
    ("job", "steps"),
    [
        ("intake_job", {"notification_intake", "session_intake"}),
        ("connection_state_job", {"connection_state"}),
        ("incremental_sync_job", {"connection_state", "record_sync", "analytics_build"}),
        ("catchup_sync_job", {"connection_state", "record_sync", "analytics_build"}),
        (
            "intake_and_sync_job",
            {
                "notification_intake",
                "session_intake",
                "connection_state",
                "record_sync",
                "analytics_build",
            },
        ),
        ("analytics_job", {"analytics_build"}),
    ],
)
def test_jobs_evaluate_the_checks_of_their_assets_in_their_steps(job: str, steps: set[str]) -> None:
    """No check step: a job's nodes are the steps writing its tables, and it carries every
    check of those tables, each a check spec of the step that writes the table."""
    job_def = defs.resolve_job_def(job)
    assert set(job_def.graph.node_dict) == steps
    asset_graph = defs.resolve_asset_graph()
    expected = {
        check
        for step in steps
        for check in asset_graph.asset_check_keys
        if asset_graph.assets_def_for_key(check).node_def.name == step
    }
    assert expected
    assert job_def.asset_layer.asset_graph.asset_check_keys == expected
    for check in expected:
        table = ".".join(check.asset_key.path)
        assert owner_of(table) == asset_graph.assets_def_for_key(check).node_def.name


def test_no_definition_is_a_separate_check() -> None:
    assert not list(defs.asset_checks or [])


@pytest.mark.parametrize("name", [s.name for s in [*SCHEDULES, lake_maintenance_schedule]])
def test_schedule_resolves_and_evaluates(name: str) -> None:
    schedule = defs.resolve_schedule_def(name)
    assert defs.resolve_job_def(schedule.job_name)
    when = dt.datetime(2025, 3, 2, 3, 0, tzinfo=dt.UTC)
    # the context is a context manager: leaving it undoes what evaluating set on Dagster's
    # context globals, which would otherwise point later tests at this closed instance
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(instance=instance, scheduled_execution_time=when) as context,
    ):
        requests = schedule.evaluate_tick(context).run_requests
    assert requests, name
    for request in requests:
        if schedule.job_name == "intake_job":
            assert request.partition_key == "2025-03-02"  # the day in progress (end_offset=1)


@pytest.mark.parametrize("name", [s.name for s in SENSORS] or ["(none)"])
def test_sensor_resolves(name: str) -> None:
    if SENSORS:
        sensor = defs.resolve_sensor_def(name)
        for target in sensor.targets:
            assert defs.resolve_job_def(target.job_name)
    else:
        assert not defs.sensors


def test_every_asset_has_a_group_and_a_description() -> None:
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name != "default", key
        assert node.description, key
