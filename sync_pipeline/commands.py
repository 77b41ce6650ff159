"""`sync-pipeline sync`, and the job launching the demo shares with it: Dagster runs in the
local instance, each shown as one live step; a failed run prints why and sets the exit code."""

from __future__ import annotations

import datetime as dt
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    ExecuteInProcessResult,
    RunRecord,
    RunsFilter,
)

from sync_pipeline.console import console, failure_reasons, print_outcome, step
from sync_pipeline.instance import ensure_local_instance, reap_dead_runs
from sync_pipeline.intake.landing import day_fingerprint
from sync_pipeline.launch import run_job, sync_config, today_partition
from sync_pipeline.settings import Settings
from sync_pipeline.sync.run import plan_for
from sync_pipeline.upstream.endpoints import ENDPOINTS
from sync_pipeline.warehouse import db


@contextmanager
def open_instance(settings: Settings) -> Iterator[DagsterInstance]:
    """The local instance, after failing the runs of dead CLI processes and freeing the pool
    slots they held (otherwise every later run would wait for those slots forever). Disposed on
    the way out: its storage keeps SQLite connections open (instance_storage.py), closed here
    rather than left to the process's end (the CLI ends without the interpreter's teardown,
    cli.entry)."""
    instance = ensure_local_instance(settings.dagster_home, os.environ)
    try:
        cleaned = reap_dead_runs(instance)
        if cleaned.dead_runs or cleaned.freed_runs:
            console.print(f"[yellow]cleaned up[/yellow]: {cleaned.describe()}")
        yield instance
    finally:
        instance.dispose()


def _failure_metadata(result: ExecuteInProcessResult) -> dict[str, Any]:
    """The metadata of the run's failed steps' Failures (the record sync names a stopping
    signal, or how many items it left behind)."""
    found: dict[str, Any] = {}
    for event in result.all_events:
        failure = event.step_failure_data if event.is_step_failure else None
        if failure is not None and failure.user_failure_data is not None:
            found.update({k: v.value for k, v in failure.user_failure_data.metadata.items()})
    return found


def _exit_code(result: ExecuteInProcessResult) -> int:
    """0 for success; 128 + the signal's number when a signal stopped it (the shell's
    convention); 1 for any other failure."""
    if result.success:
        return 0
    stopped_by = _failure_metadata(result).get("signal")
    return 128 + signal.Signals[str(stopped_by)].value if stopped_by else 1


def launch(
    settings: Settings,
    instance: DagsterInstance,
    title: str,
    job: str,
    *,
    partition_key: str | None = None,
    config: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> ExecuteInProcessResult:
    """Run `job` as one live step, on `settings`; on failure print why."""
    with step(title) as shown:
        result = run_job(
            job,
            settings=settings,
            instance=instance,
            partition_key=partition_key,
            config=config,
            tags=tags,
            raise_on_failure=False,
            console_log_level="CRITICAL",
        )
        shown.failed = not result.success
    if not result.success:
        for reason in failure_reasons(result) or ["the run failed"]:
            console.print(f"  [red]{reason}[/red]")
        console.print(f"  run {result.run_id} is in the Dagster instance (`dagster dev` shows it)")
    return result


def sync_outcome(settings: Settings, run_id: str) -> db.RunOutcome:
    with db.connect(settings.warehouse, read_only=True) as con:
        return db.run_outcome(con, run_id, [e.table for e in ENDPOINTS])


# The landing fingerprint (intake.landing.day_fingerprint) of the day an intake run took in:
# a later command whose day still has that fingerprint has nothing new to take in.
LANDING_TAG = "sync_pipeline/landing_fingerprint"
INTAKE_JOB = "intake_job"
# intake and the sync in one run (assets/schedules.py)
INTAKE_AND_SYNC_JOB = "intake_and_sync_job"
SYNC_JOBS = ("incremental_sync_job", "catchup_sync_job")


def _intake_is_current(instance: DagsterInstance, day: str, fingerprint: str) -> bool:
    # only the CLI's intake runs (alone or with the sync) carry the fingerprint
    done = instance.get_run_records(
        filters=RunsFilter(
            statuses=[DagsterRunStatus.SUCCESS],
            tags={"dagster/partition": day, LANDING_TAG: fingerprint},
        ),
        limit=1,
    )
    return bool(done)


def _last_success(instance: DagsterInstance, job: str) -> RunRecord | None:
    records = instance.get_run_records(
        filters=RunsFilter(job_name=job, statuses=[DagsterRunStatus.SUCCESS]), limit=1
    )
    return records[0] if records else None


def _synced_since_last_intake(instance: DagsterInstance) -> bool:
    """A sync run (which rebuilds connection state first) succeeded after the last intake."""
    last = (_last_success(instance, job) for job in (INTAKE_JOB, INTAKE_AND_SYNC_JOB))
    intakes = [record for record in last if record is not None]
    if not intakes:
        return True
    intake = max(intakes, key=lambda r: r.end_time or 0)
    if intake.dagster_run.job_name == INTAKE_AND_SYNC_JOB:
        return True  # its sync ran after its intake, in the same run
    if intake.end_time is None:
        return True
    syncs = [_last_success(instance, job) for job in SYNC_JOBS]
    return any(r is not None and (r.start_time or 0) >= intake.end_time for r in syncs)


def _nothing_to_do(settings: Settings, instance: DagsterInstance, users: list[str]) -> bool:
    """True when an incremental run would change nothing: every session that landed has been
    taken in by a sync run's connection state, and the planner finds no notified change to
    fetch."""
    if not _synced_since_last_intake(instance) or not settings.warehouse.exists():
        return False
    return not plan_for(settings.warehouse, "incremental", only_users=set(users) or None).items


def run_sync_command(settings: Settings, *, mode: str, users: list[str]) -> int:
    with open_instance(settings) as instance:
        return _sync(settings, instance, mode=mode, users=users)


def _sync(settings: Settings, instance: DagsterInstance, *, mode: str, users: list[str]) -> int:
    console.print(f"sync ({mode}) against {settings.api_url}, data in {settings.data_dir}")
    day = today_partition()
    fingerprint = day_fingerprint(settings.data_dir, dt.date.fromisoformat(day))
    config = sync_config(mode, users)
    if not _intake_is_current(instance, day, fingerprint):
        # something landed: intake of the day and the sync in one run
        synced = launch(
            settings, instance, f"Dagster run: intake of today's landing log, {mode} sync",
            INTAKE_AND_SYNC_JOB, partition_key=day, config=config,
            tags={LANDING_TAG: fingerprint},
        )  # fmt: skip
    else:
        # intake is idempotent: the same landing log gives the same rows, so it need not run
        console.print("[green]✓[/green] intake: nothing has landed since the last intake run")
        if mode == "incremental" and _nothing_to_do(settings, instance, users):
            # an incremental run only fetches what pending notifications name and rebuilds
            # connection state from sessions: with neither, a run would write events and no data
            console.print("[green]✓[/green] incremental sync: nothing pending, no run needed")
            return 0
        job = "incremental_sync_job" if mode == "incremental" else "catchup_sync_job"
        synced = launch(settings, instance, f"Dagster run: {mode} sync", job, config=config)
    if synced.success or "failed_items" in _failure_metadata(synced):
        # the run committed: what succeeded is in, what failed is named
        print_outcome(sync_outcome(settings, synced.run_id))
    return _exit_code(synced)
