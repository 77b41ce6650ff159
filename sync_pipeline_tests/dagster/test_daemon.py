"""The automation as an operator gets it: a real `dagster-daemon` on this code location (what
`dg dev` starts beside the UI), with nothing switched on by hand.

- Sensors run by default: a delivery in the landing log starts intake_job for its day.
- Freshness is evaluated with no run: a record table last materialised longer ago than
  SYNC_FRESHNESS_HOURS is FAIL, one materialised just now PASS, before any run touched them.
- A launched run whose run worker is SIGKILLed is marked failed by the dead-run sensor, and
  its place in the warehouse pool freed, while a run whose worker lives is left alone.
- SYNC_AUTOMATION=stopped loads every schedule and sensor stopped (in a fresh process: the
  setting is read when the code location loads).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.freshness import FreshnessState
from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
from dagster._core.instance.ref import InstanceRef
from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID

from sync_pipeline.assets.dead_runs import INTERVAL_S
from sync_pipeline.assets.sensors import TRIGGER_TAG
from sync_pipeline.deploy import write_instance_yaml
from sync_pipeline.intake.landing import LandedDelivery, LandingLog

from ..conftest import REPOSITORY

pytestmark = pytest.mark.slow

FRESH = dg.AssetKey(["medical", "allergies"])
STALE = dg.AssetKey(["wellness", "activities"])
DEADLINE_S = 240  # a bound on waiting, not a timing assertion


def _land_a_delivery(data_dir: Path) -> None:
    log = LandingLog(data_dir, "notifications")
    try:
        log.land_sync(
            LandedDelivery(
                digest="daemon-test",
                kind="notifications",
                received_at=dt.datetime.now(dt.UTC),
                headers={},
                body="[]",
                claims=None,
            )
        )
    finally:
        log.close()


def _materialised(instance: dg.DagsterInstance, key: dg.AssetKey, at: dt.datetime) -> None:
    """A materialisation of `key` stamped `at`, as a sync run at that time would have left."""
    instance.report_dagster_event(
        DagsterEvent(
            event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
            event_specific_data=StepMaterializationData(dg.AssetMaterialization(key)),
            job_name=RUNLESS_JOB_NAME,
        ),
        run_id=RUNLESS_RUN_ID,
        timestamp=at.timestamp(),
    )


@contextmanager
def _daemon(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`dagster-daemon run` from the repository root (workspace.yaml), in its own process group
    so its code server and the runs it launches stop with it."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "dagster._daemon", "run", "-w", "workspace.yaml"],
            cwd=REPOSITORY,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


def _observe_freshness(
    instance: dg.DagsterInstance, seen: dict[dg.AssetKey, set[FreshnessState]]
) -> None:
    """Add each table's current freshness state to the states `seen` so far (a later sync run
    may make the stale one fresh again)."""
    for key, record in instance.get_freshness_state_records([FRESH, STALE]).items():
        seen.setdefault(key, set()).add(record.freshness_state)


def test_the_daemon_runs_sensors_and_freshness_with_nothing_switched_on(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    home = data_dir / "dagster"
    env = {k: v for k, v in os.environ.items() if k != "SYNC_AUTOMATION"}  # the default
    write_instance_yaml(home, env)
    env.update(
        DAGSTER_HOME=str(home),
        SYNC_DATA_DIR=str(data_dir),
        SYNC_FRESHNESS_HOURS="26",
        # the daemon's freshness loop runs every 30 s by default; sooner keeps the test short
        FRESHNESS_DAEMON_INTERVAL_SECONDS="2",
    )
    now = dt.datetime.now(dt.UTC)
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        _materialised(instance, FRESH, now)
        _materialised(instance, STALE, now - dt.timedelta(hours=30))
        _land_a_delivery(data_dir)

        with _daemon(env, tmp_path / "daemon.log") as process:
            deadline = time.monotonic() + DEADLINE_S
            intake: list[dg.DagsterRun] = []
            states: dict[dg.AssetKey, set[FreshnessState]] = {}
            while time.monotonic() < deadline and process.poll() is None:
                _observe_freshness(instance, states)
                intake = [
                    r
                    for r in instance.get_runs(dg.RunsFilter(job_name="intake_job"))
                    if r.is_finished
                ]
                if intake and FreshnessState.FAIL in states.get(STALE, set()):
                    break
                time.sleep(1)
            log = (tmp_path / "daemon.log").read_text(errors="replace")[-3000:]
            assert process.poll() is None, log

        assert FreshnessState.PASS in states.get(FRESH, set()), (states, log)
        assert FreshnessState.FAIL in states.get(STALE, set()), (states, log)
        assert len(intake) == 1, log
        run = intake[0]
        assert run.tags[TRIGGER_TAG] == "landing"
        assert run.tags["dagster/partition"] == now.date().isoformat()
        assert run.status == dg.DagsterRunStatus.SUCCESS, log


def test_sync_automation_stopped_loads_every_schedule_and_sensor_stopped(tmp_path: Path) -> None:
    show = (
        "from sync_pipeline.definitions import defs\n"
        "for d in [*defs.schedules, *defs.sensors]: print(d.name, d.default_status.value)\n"
    )
    states = {}
    for setting in ("stopped", "running"):
        env = {**os.environ, "SYNC_AUTOMATION": setting, "SYNC_DATA_DIR": str(tmp_path)}
        done = subprocess.run(
            [sys.executable, "-c", show], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-2000:]
        states[setting] = dict(line.split() for line in done.stdout.splitlines())
    # four schedules (intake, incremental, catch-up, lake maintenance), four sensors (landing,
    # after intake, new connection, dead runs)
    assert len(states["stopped"]) == 8 and "lake_maintenance_job_schedule" in states["stopped"]
    assert set(states["stopped"].values()) == {"STOPPED"}
    assert set(states["running"].values()) == {"RUNNING"}


def _wait_for(
    what: Callable[[], bool], seconds: float, process: subprocess.Popen[bytes], every: float = 1
) -> bool:
    deadline = time.monotonic() + seconds  # a bound on waiting, not a timing assertion
    while time.monotonic() < deadline and process.poll() is None:
        if what():
            return True
        time.sleep(every)
    return what()


def _worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid that wrote the run's RUN_START: its run worker."""
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.RUN_START):
        if entry.dagster_event is not None:
            return entry.dagster_event.pid
    return None


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus | None:
    run = instance.get_run_by_id(run_id)
    return run.status if run else None


def test_the_daemon_fails_a_launched_run_whose_worker_was_killed(tmp_path: Path) -> None:
    """The landing sensor launches an intake run; its run worker is stopped as soon as it has
    written RUN_START (so it cannot finish first), then SIGKILLed with the code server that
    started it. The dead-run sensor marks the run failed and frees what it held in the
    warehouse pool, and leaves alone a run whose worker (a process of this test) lives."""
    data_dir = tmp_path / "data"
    home = data_dir / "dagster"
    env = {k: v for k, v in os.environ.items() if k not in ("SYNC_AUTOMATION", "SYNC_EXECUTOR")}
    write_instance_yaml(home, env)
    env.update(DAGSTER_HOME=str(home), SYNC_DATA_DIR=str(data_dir))
    slack = INTERVAL_S + 60  # the sensor's interval plus the daemon's ticks and a busy machine
    with (
        dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance,
        subprocess.Popen(["sleep", "3600"]) as live_worker,
    ):
        live = str(uuid.uuid4())
        instance.add_run(
            dg.DagsterRun(job_name="analytics_job", run_id=live, status=dg.DagsterRunStatus.STARTED)
        )
        instance.report_dagster_event(
            DagsterEvent(
                event_type_value=DagsterEventType.RUN_START.value,
                job_name="analytics_job",
                pid=live_worker.pid,
            ),
            run_id=live,
        )
        _land_a_delivery(data_dir)
        storage = instance.event_log_storage
        try:
            with _daemon(env, tmp_path / "daemon.log") as process:

                def log() -> str:
                    return (tmp_path / "daemon.log").read_text(errors="replace")[-3000:]

                intake: list[str] = []

                def intake_worker_started() -> bool:
                    intake[:] = [
                        r.run_id for r in instance.get_runs(dg.RunsFilter(job_name="intake_job"))
                    ]
                    # RUN_START (with the worker's pid) is stored before the run's status turns
                    # STARTED: wait for both, or the worker may be stopped in between
                    return (
                        len(intake) == 1
                        and _worker_pid(instance, intake[0]) is not None
                        and _status(instance, intake[0]) == dg.DagsterRunStatus.STARTED
                    )

                assert _wait_for(intake_worker_started, DEADLINE_S, process, every=0.05), log()
                (killed,) = intake
                worker = _worker_pid(instance, killed)
                assert worker is not None and worker != live_worker.pid
                os.kill(worker, signal.SIGSTOP)
                assert _status(instance, killed) == dg.DagsterRunStatus.STARTED, log()
                # The code server that started the worker fails the run itself when it sees its
                # child die; the gap is a worker whose code server died too (OOM, a restarted
                # daemon or UI): both are killed, the code server first.
                code_server = _parent(worker)
                assert code_server not in (os.getpid(), process.pid, 1)
                os.kill(code_server, signal.SIGKILL)
                os.kill(worker, signal.SIGKILL)

                def failed() -> bool:
                    return _status(instance, killed) == dg.DagsterRunStatus.FAILURE

                assert _wait_for(failed, slack, process), log()
                (failure,) = instance.all_logs(killed, of_type=DagsterEventType.RUN_FAILURE)
                assert "dead_run_sensor" in (failure.message or ""), failure.message
                assert f"pid {worker}" in (failure.message or "")
                # nothing is left in the pool (the dead run's claim, had it one, is freed)
                assert killed not in storage.get_concurrency_run_ids()
                info = storage.get_concurrency_info("warehouse")
                assert info.claimed_slots == [] and info.pending_steps == []
                # the run whose worker lives is left alone
                assert _status(instance, live) == dg.DagsterRunStatus.STARTED
                assert process.poll() is None, log()
        finally:
            live_worker.kill()
