"""The executor per job (SYNC_EXECUTOR unset): a job whose steps can never run at the same time
runs them in its run worker, one with steps that can run at once keeps a process per step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEventType

from sync_pipeline.definitions import defs
from sync_pipeline.deploy import write_instance_yaml
from sync_pipeline.job_shape import steps_are_serial
from sync_pipeline.shape_executor import job_is_serial

from ..conftest import REPOSITORY

NO_POOL: dict[str, str | None] = {"a": None, "b": None, "c": None}


def test_a_chain_is_serial() -> None:
    assert steps_are_serial({"a": set(), "b": {"a"}, "c": {"b"}}, NO_POOL, None)


def test_a_chain_with_a_shortcut_is_serial() -> None:
    # the sync jobs: analytics_build waits for record_sync and connection_state
    assert steps_are_serial({"a": set(), "b": {"a"}, "c": {"a", "b"}}, NO_POOL, None)


def test_a_single_step_is_serial() -> None:
    assert steps_are_serial({"a": set()}, {"a": None}, None)


def test_two_steps_ready_together_are_not_serial() -> None:
    assert not steps_are_serial({"a": set(), "b": {"a"}, "c": {"a"}}, NO_POOL, None)
    assert not steps_are_serial({"a": set(), "b": set()}, {"a": None, "b": None}, 1)


def test_independent_steps_in_one_single_slot_pool_are_serial() -> None:
    one_pool = {"a": "warehouse", "b": "warehouse"}
    assert steps_are_serial({"a": set(), "b": set()}, one_pool, 1)
    # several slots (a DuckLake with several writers), or no limit: they may run at once
    assert not steps_are_serial({"a": set(), "b": set()}, one_pool, 2)
    assert not steps_are_serial({"a": set(), "b": set()}, one_pool, None)
    # one of them outside the pool
    assert not steps_are_serial({"a": set(), "b": set()}, {"a": "warehouse", "b": None}, 1)


def test_every_job_of_the_location_is_serial_on_the_local_instance() -> None:
    """Fails when a job gains steps that can run at once: then it runs a process per step
    again, which is right, but the README's promise and the measurements no longer hold."""
    names = sorted(job.name for job in defs.resolve_all_job_defs())
    assert "incremental_sync_job" in names and "lake_maintenance_job" in names
    for name in names:
        # the local instance's warehouse pool has one slot (deploy.LOCAL_INSTANCE_YAML)
        assert job_is_serial(defs.resolve_job_def(name), 1), name
    # intake_job's two steps are only serial through the one-slot pool
    assert not job_is_serial(defs.resolve_job_def("intake_job"), 2)


def _execute(tmp_path: Path, module: str, job: str) -> dict[str, set[int]]:
    """`dagster job execute` of `job` with SYNC_EXECUTOR unset; the pids that wrote its run's
    RUN_START and STEP_START events."""
    home = tmp_path / "dagster"
    env = {k: v for k, v in os.environ.items() if k != "SYNC_EXECUTOR"}
    write_instance_yaml(home, env)
    env.update(DAGSTER_HOME=str(home), SYNC_DATA_DIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "job", "execute", "-m", module, "-j", job],
        cwd=REPOSITORY,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        pids: dict[str, set[int]] = {}
        for kind in (DagsterEventType.RUN_START, DagsterEventType.STEP_START):
            for entry in instance.all_logs(run.run_id, of_type=kind):
                assert entry.dagster_event is not None and entry.dagster_event.pid is not None
                pids.setdefault(kind.name, set()).add(entry.dagster_event.pid)
    return pids


@pytest.mark.slow
def test_a_serial_job_of_the_location_runs_its_steps_in_the_run_worker(tmp_path: Path) -> None:
    pids = _execute(tmp_path, "sync_pipeline.definitions", "incremental_sync_job")
    (worker,) = pids["RUN_START"]
    assert pids["STEP_START"] == {worker}


@pytest.mark.slow
def test_a_job_with_parallel_steps_keeps_a_process_per_step(tmp_path: Path) -> None:
    pids = _execute(tmp_path, "sync_pipeline_tests.dagster.parallel_location", "parallel_job")
    (worker,) = pids["RUN_START"]
    assert len(pids["STEP_START"]) == 2 and worker not in pids["STEP_START"]
