"""The local Dagster instance under the data directory (runs recorded there show in `dagster dev`
started with the same DAGSTER_HOME)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.storage.dagster_run import FINISHED_STATUSES

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


def reap_dead_runs(instance: DagsterInstance) -> Cleanup:
    """Mark failed the runs a CLI process started and then died in, and free the pool slots
    every ended run still claims. Runs of live processes, and runs started elsewhere (the daemon,
    the UI: Dagster's run monitoring covers those), are left alone."""
    dead: list[str] = []
    for record in instance.get_run_records(
        filters=RunsFilter(statuses=list(_UNFINISHED), tags={HOST_TAG: socket.gethostname()})
    ):
        run = record.dagster_run
        if _process_is_gone(run.tags):
            instance.report_run_failed(
                run,
                f"the process running it ({run.tags.get(PID_TAG)}) is gone: killed, out of "
                "memory or a reboot; marked failed by the next sync-pipeline command",
            )
            dead.append(f"{run.run_id[:8]} ({run.job_name})")
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
