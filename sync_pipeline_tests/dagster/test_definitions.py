"""The code location loads; every job, schedule and sensor resolves; schedules evaluate; the
sync jobs carry the asset checks of the tables they write."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from sync_pipeline.assets.maintenance import lake_maintenance_schedule
from sync_pipeline.assets.schedules import JOBS, SCHEDULES
from sync_pipeline.assets.sensors import SENSORS
from sync_pipeline.definitions import defs


@pytest.mark.parametrize("name", [job.name for job in JOBS])
def test_job_resolves(name: str) -> None:
    assert defs.resolve_job_def(name).name == name


@pytest.mark.parametrize(
    ("job", "check_ops"),
    [
        ("intake_job", {"intake_checks"}),
        ("connection_state_job", {"connect_checks"}),
        ("incremental_sync_job", {"connect_checks", "record_checks", "analytics_checks"}),
        ("catchup_sync_job", {"connect_checks", "record_checks", "analytics_checks"}),
        ("analytics_job", {"analytics_checks"}),
    ],
)
def test_jobs_include_the_checks_of_their_assets(job: str, check_ops: set[str]) -> None:
    nodes = set(defs.resolve_job_def(job).graph.node_dict)
    assert {n for n in nodes if n.endswith("_checks")} == check_ops


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
