"""The local Dagster instance under the data directory (runs recorded there show in `dagster dev`
started with the same DAGSTER_HOME)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter
from dagster._core.events import DagsterEventType
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.storage.dagster_run import FINISHED_STATUSES
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage

from sync_pipeline.deploy import write_instance_yaml


def ensure_local_instance(dagster_home: Path, env: Mapping[str, str]) -> DagsterInstance:
    """The instance in `dagster_home`, whose dagster.yaml is the one `env` (the command's
    environment) selects (SYNC_DAGSTER_STORAGE: the embedded SQLite default, or Postgres).
    Opened from that folder, not through DAGSTER_HOME: this process's environment is left as
    it was, and processes it starts do not inherit an instance they were not given."""
    write_instance_yaml(dagster_home, env)
    instance = DagsterInstance.from_config(str(dagster_home))
    # create the storage now: several processes creating an empty SQLite home at once race
    # on its schema migration
    instance.get_run_records(limit=1)
    return instance


# ---- runs whose process died -------------------------------------------------------------
# Runs the CLI executes in its own process carry these tags, so a later command can tell a run
# that is still going from one whose process was killed (SIGKILL, OOM, a reboot) and left its
# status STARTED and its warehouse pool slot claimed: without this, every later run would wait
# for that slot forever.
HOST_TAG = "sync_pipeline/host"
BOOT_TAG = "sync_pipeline/boot_id"
PID_TAG = "sync_pipeline/pid"
PID_START_TAG = "sync_pipeline/pid_started"
_UNFINISHED = (
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _process_started(pid: int) -> str:
    """The process's start time in clock ticks since boot ("" where /proc cannot tell): with
    the pid, it names one process even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # field 22; the command name (field 2) may hold spaces, so count from its closing paren
    return stat.rsplit(")", 1)[1].split()[19]


def process_tags() -> dict[str, str]:
    pid = os.getpid()
    return {
        HOST_TAG: socket.gethostname(),
        BOOT_TAG: _boot_id(),
        PID_TAG: str(pid),
        PID_START_TAG: _process_started(pid),
    }


def _process_is_gone(tags: Mapping[str, str]) -> bool:
    """True only when certain: another host's process is never judged from here."""
    if tags.get(HOST_TAG) != socket.gethostname():
        return False
    if tags.get(BOOT_TAG) and tags[BOOT_TAG] != _boot_id():
        return True  # the machine rebooted since
    pid = int(tags.get(PID_TAG, "0") or 0)
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # someone else's live process holds that pid
    started = tags.get(PID_START_TAG)
    return bool(started) and _process_started(pid) != started


# ---- runs the daemon or the UI launched -----------------------------------------------------
# Dagster's DefaultRunLauncher starts each run worker (`dagster api execute_run`) as a child of
# the process that launched it, and cannot tell when it died (no run-worker health check): a
# SIGKILLed or OOM-killed worker leaves its run STARTED, holding its pool slots until run
# monitoring's max runtime (6 h). Every event records the pid of the process that wrote it, and
# the run worker writes RUN_START (and, in process, every STEP_START; a multiprocess step's
# child writes its own).
#
# A pid is only meaningful on the machine that wrote it, so this is judged only where every
# launched run worker is on this machine: the DefaultRunLauncher and the embedded SQLite
# storage (files under the data directory, one machine). A Postgres instance may have a daemon
# and a UI on different hosts: left to run monitoring.

# The start time read from /proc has the boot time's whole-second granularity and moves with
# wall-clock adjustments; a process that started more than this after the run started cannot be
# its run worker (which starts, imports the code location, then writes RUN_START).
PID_REUSE_SLACK_S = 2.0
# bounds on what one check reads: unfinished runs, and step starts per run
_MAX_RUNS = 500
_MAX_STEP_STARTS = 1000


def process_started_at(pid: int) -> float | None:
    """When process `pid` started, in seconds since the epoch; None when there is no such
    process (or only its zombie); 0.0 when it exists but its start cannot be read. Linux /proc
    only (callers check `_can_see_processes` first)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return _hidden_process(pid)
    try:
        btime = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration, ValueError):
        return 0.0  # the process exists but its start cannot be placed: never judged gone
    fields = stat.rsplit(")", 1)[1].split()
    # a zombie (killed, not yet waited for by its parent: a run worker's parent is the code
    # server, which may wait late) is gone for our purposes: it runs nothing
    if fields[0] in ("Z", "X"):
        return None
    return btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _hidden_process(pid: int) -> float | None:
    """A pid /proc does not show: gone, or another user's process behind `hidepid`, which
    cannot be judged and so counts as started long before any run (alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it exists
    return 0.0


def worker_is_gone(started_at: float | None, run_started_at: float) -> bool:
    """Whether the process that wrote a run's event (RUN_START, or a step's STEP_START) at
    `run_started_at` is gone, given when the process now holding its pid started (None: no
    process holds it). A pid held by a process that started after that event was reused: the
    run's own process is gone."""
    if started_at is None:
        return True
    return started_at > run_started_at + PID_REUSE_SLACK_S


def _can_see_processes() -> bool:
    return Path("/proc/self/stat").exists() and Path("/proc/stat").exists()


def launched_runs_are_local(instance: DagsterInstance) -> bool:
    """Whether the run workers of this instance's launched runs all run on this machine."""
    return (
        isinstance(instance.run_launcher, DefaultRunLauncher)
        and isinstance(instance.run_storage, SqliteRunStorage)
        and _can_see_processes()
    )


def _dead_worker(instance: DagsterInstance, run: DagsterRun) -> int | None:
    """The pid of `run`'s run worker when it and every step process it started are gone; None
    while any of them lives, or before RUN_START (run monitoring's start timeout covers
    that)."""
    starts = instance.get_records_for_run(
        run.run_id, of_type=DagsterEventType.RUN_START, limit=1
    ).records
    event = starts[0].event_log_entry.dagster_event if starts else None
    if event is None or event.pid is None:
        return None
    worker, run_started_at = event.pid, starts[0].event_log_entry.timestamp
    # a multiprocess step outlives its killed run worker: it may still be writing. Each
    # process is judged against the event it wrote (a step's process starts after RUN_START).
    steps = instance.get_records_for_run(
        run.run_id, of_type=DagsterEventType.STEP_START, limit=_MAX_STEP_STARTS
    ).records
    writers = {(worker, run_started_at)} | {
        (r.event_log_entry.dagster_event.pid, r.event_log_entry.timestamp)
        for r in steps
        if r.event_log_entry.dagster_event and r.event_log_entry.dagster_event.pid
    }
    if all(worker_is_gone(process_started_at(pid), wrote_at) for pid, wrote_at in writers):
        return worker
    return None


def _reap_launched_runs(instance: DagsterInstance, by: str) -> list[str]:
    dead: list[str] = []
    if not launched_runs_are_local(instance):
        return dead
    records = instance.get_run_records(
        filters=RunsFilter(statuses=list(_UNFINISHED)), limit=_MAX_RUNS
    )
    for record in records:
        run = record.dagster_run
        if HOST_TAG in run.tags:
            continue  # a CLI run: judged by its tags (reap_dead_runs)
        worker = _dead_worker(instance, run)
        if worker is None:
            continue
        # its worker may have ended it just before exiting: judge the status as it is now
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.status not in _UNFINISHED:
            continue
        instance.report_run_failed(
            current,
            f"its run worker (pid {worker}) is gone: killed, out of memory or a reboot; "
            f"marked failed by {by}",
        )
        dead.append(f"{run.run_id[:8]} ({run.job_name})")
    return dead


@dataclass(frozen=True)
class Cleanup:
    dead_runs: list[str]  # "run id (job)" of runs marked failed
    freed_runs: list[str]  # run ids whose claimed pool slots were freed

    def describe(self) -> str:
        parts = []
        if self.dead_runs:
            parts.append(
                f"marked {len(self.dead_runs)} run(s) whose process died as failed: "
                + ", ".join(self.dead_runs)
            )
        if self.freed_runs:
            parts.append(f"freed the pool slots of {len(self.freed_runs)} ended run(s)")
        return "; ".join(parts)


def reap_dead_runs(
    instance: DagsterInstance, by: str = "the next sync-pipeline command"
) -> Cleanup:
    """Mark failed the runs whose process died: runs a CLI process started (by their tags), and
    runs the daemon or the UI launched on this machine (by their run worker's pid, see
    `launched_runs_are_local`); then free the pool slots every ended run still claims. Runs of
    live processes, and launched runs this machine cannot judge, are left alone. `by` names the
    caller in the failure message."""
    dead: list[str] = []
    for record in instance.get_run_records(
        filters=RunsFilter(statuses=list(_UNFINISHED), tags={HOST_TAG: socket.gethostname()})
    ):
        run = record.dagster_run
        if _process_is_gone(run.tags):
            instance.report_run_failed(
                run,
                f"the process running it ({run.tags.get(PID_TAG)}) is gone: killed, out of "
                f"memory or a reboot; marked failed by {by}",
            )
            dead.append(f"{run.run_id[:8]} ({run.job_name})")
    dead += _reap_launched_runs(instance, by)
    freed: list[str] = []
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        holders = storage.get_concurrency_run_ids()
        if holders:
            ended = instance.get_run_records(
                filters=RunsFilter(run_ids=list(holders), statuses=list(FINISHED_STATUSES))
            )
            for record in ended:
                storage.free_concurrency_slots_for_run(record.dagster_run.run_id)
                freed.append(record.dagster_run.run_id)
    return Cleanup(dead_runs=dead, freed_runs=freed)
