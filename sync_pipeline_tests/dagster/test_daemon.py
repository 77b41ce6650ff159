"""The automation as an operator gets it: a real `dagster-daemon` on this code location (what
`dg dev` starts beside the UI), with nothing switched on by hand.

- Sensors run by default: a delivery in the landing log starts intake_job for its day.
- Freshness is evaluated with no run: a record table last materialised longer ago than
  SYNC_FRESHNESS_HOURS is FAIL, one materialised just now PASS, before any run touched them.
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.freshness import FreshnessState
from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
from dagster._core.instance.ref import InstanceRef
from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID

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
