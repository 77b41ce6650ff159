"""Runs the daemon or the UI launched whose run worker died are marked failed and lose their pool
slots (instance.reap_dead_runs); runs whose worker lives are left alone. Real processes, a real
local instance; the daemon's part is in test_daemon.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType

from sync_pipeline.instance import (
    PID_REUSE_SLACK_S,
    ensure_local_instance,
    launched_runs_are_local,
    process_started_at,
    reap_dead_runs,
    worker_is_gone,
)

POOL = "warehouse"


def test_a_worker_whose_pid_no_process_holds_is_gone() -> None:
    assert worker_is_gone(None, run_started_at=1000.0)


def test_a_worker_started_before_its_run_is_alive() -> None:
    assert not worker_is_gone(995.0, run_started_at=1000.0)
    # /proc's start time is only whole-second exact: just after the run start is still it
    assert not worker_is_gone(1000.0 + PID_REUSE_SLACK_S / 2, run_started_at=1000.0)


def test_a_pid_held_by_a_process_started_after_the_run_was_reused() -> None:
    assert worker_is_gone(1000.0 + PID_REUSE_SLACK_S + 1, run_started_at=1000.0)


def test_process_start_times_read_from_proc() -> None:
    mine = process_started_at(os.getpid())
    assert mine is not None and mine <= time.time() + PID_REUSE_SLACK_S
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()  # reaped: no process holds its pid now (until the kernel hands it out again)
    assert process_started_at(ended.pid) is None


def test_a_killed_process_not_yet_waited_for_is_gone() -> None:
    zombie = subprocess.Popen(["sleep", "600"])
    try:
        assert process_started_at(zombie.pid) is not None
        os.kill(zombie.pid, 9)
        # not waited for: its zombie holds the pid until wait(); the kill lands asynchronously
        deadline = time.monotonic() + 30  # a bound on waiting, not a timing assertion
        while process_started_at(zombie.pid) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert Path(f"/proc/{zombie.pid}").exists()
        assert process_started_at(zombie.pid) is None
    finally:
        zombie.kill()
        zombie.wait()


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process standing for a run worker."""
    process = subprocess.Popen(["sleep", "600"])
    yield process
    process.kill()
    process.wait()


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    with ensure_local_instance(tmp_path / "dagster", {}) as opened:
        yield opened


def _launched_run(
    instance: dg.DagsterInstance, worker: int, started_at: float, step_pid: int | None = None
) -> str:
    """A STARTED run as a launched run worker `worker` leaves it (RUN_START written by it at
    `started_at`, no CLI tags), holding the warehouse pool's slot."""
    run_id = str(uuid.uuid4())
    instance.add_run(
        dg.DagsterRun(job_name="analytics_job", run_id=run_id, status=dg.DagsterRunStatus.STARTED)
    )
    start = DagsterEvent(
        event_type_value=DagsterEventType.RUN_START.value, job_name="analytics_job", pid=worker
    )
    instance.report_dagster_event(start, run_id=run_id, timestamp=started_at)
    if step_pid is not None:
        step = DagsterEvent(
            event_type_value=DagsterEventType.STEP_START.value,
            job_name="analytics_job",
            step_key="analytics_build",
            pid=step_pid,
        )
        instance.report_dagster_event(step, run_id=run_id, timestamp=time.time())
    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default(POOL)
    storage.claim_concurrency_slot(POOL, run_id, "analytics_build")
    return run_id


def _gone_pid() -> int:
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    return ended.pid


def _status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return run.status


def test_the_local_instance_judges_launched_runs(instance: dg.DagsterInstance) -> None:
    assert launched_runs_are_local(instance)


def test_a_run_whose_worker_is_gone_is_failed_and_frees_its_slot(
    instance: dg.DagsterInstance,
) -> None:
    dead = _launched_run(instance, _gone_pid(), time.time())
    cleanup = reap_dead_runs(instance, by="this test")
    assert cleanup.dead_runs == [f"{dead[:8]} (analytics_job)"]
    assert _status(instance, dead) == dg.DagsterRunStatus.FAILURE
    assert dead not in instance.event_log_storage.get_concurrency_run_ids()
    (failure,) = instance.all_logs(dead, of_type=DagsterEventType.RUN_FAILURE)
    assert "run worker" in (failure.message or "") and "this test" in (failure.message or "")


def test_a_run_whose_worker_lives_is_left_alone(
    instance: dg.DagsterInstance, sleeper: subprocess.Popen[bytes]
) -> None:
    live = _launched_run(instance, sleeper.pid, time.time())
    assert reap_dead_runs(instance).dead_runs == []
    assert _status(instance, live) == dg.DagsterRunStatus.STARTED
    assert live in instance.event_log_storage.get_concurrency_run_ids()


def test_a_run_whose_worker_pid_was_reused_is_failed(
    instance: dg.DagsterInstance, sleeper: subprocess.Popen[bytes]
) -> None:
    # the run started an hour ago; the process holding its worker's pid started just now
    reused = _launched_run(instance, sleeper.pid, time.time() - 3600)
    assert reap_dead_runs(instance).dead_runs == [f"{reused[:8]} (analytics_job)"]
    assert _status(instance, reused) == dg.DagsterRunStatus.FAILURE


def test_a_run_whose_step_process_outlives_its_worker_is_left_alone(
    instance: dg.DagsterInstance, sleeper: subprocess.Popen[bytes]
) -> None:
    # a multiprocess step keeps writing after its run worker was killed: not dead yet; the
    # step's process is judged by its STEP_START, written long after the run started
    run = _launched_run(instance, _gone_pid(), time.time() - 3600, step_pid=sleeper.pid)
    assert reap_dead_runs(instance).dead_runs == []
    assert _status(instance, run) == dg.DagsterRunStatus.STARTED
