"""The user's path: `sync-pipeline sync` as its own process, timed end to end.

The in-process runs (scenarios.py) time the sync engine alone. What a user waits for also holds the
interpreter start, imports, the Dagster instance's set-up, the runs' start and end, every step
(intake, connection state, records, analytics; each evaluating its tables' checks) and the
commit. This module runs the CLI as a
subprocess against the bench's simulator and afterwards reads the Dagster instance the CLI wrote
to (its event log) to say where the wall time went. It uses only the public command line and the
instance's events, so it measures whatever the CLI does today, however it runs its jobs.

Cases, on the same simulator: a first sync of some users into a fresh data directory (their
Connect sessions copied into its landing log, as the receiver would have landed them), then on
that directory a no-op `sync --mode incremental` (nothing pending) and a no-op catch-up of a few
users (`--user` repeated; nothing new upstream).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dagster import DagsterEventType, DagsterInstance, EventLogEntry, RunsFilter
from dagster._core.instance.ref import InstanceRef

from benchmarks.simproc import SimProcess
from sync_pipeline.intake.landing import LandingLog, iter_landed, landed_days
from sync_pipeline.settings import Settings
from sync_pipeline.upstream.endpoints import ENDPOINTS
from sync_pipeline.warehouse import db

# generous: a first sync of the full preset's users at the limit takes well under a minute
_CLI_TIMEOUT_S = 1800.0
_STEP_ENDS = {DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE}
_STDERR_TAIL = 2000


@dataclass
class RunTimeline:
    """One Dagster run's events reduced to the timestamps the breakdown needs (epoch seconds)."""

    run_id: str
    job: str
    status: str
    first_event: float
    last_event: float
    steps: dict[str, tuple[float, float]] = field(default_factory=dict)  # key → (start, end)
    first_materialization: dict[str, float] = field(default_factory=dict)  # step → timestamp
    last_materialization: dict[str, float] = field(default_factory=dict)  # step → timestamp
    last_check: dict[str, float] = field(default_factory=dict)  # step → last check evaluation
    # RUN_START: before it, the run writes one *_PLANNED event per asset and check it selects
    run_started: float | None = None

    @property
    def first_step_start(self) -> float | None:
        return min((start for start, _ in self.steps.values()), default=None)

    @property
    def last_step_end(self) -> float | None:
        return max((end for _, end in self.steps.values()), default=None)


def timeline_of(run_id: str, job: str, status: str, events: Sequence[EventLogEntry]) -> RunTimeline:
    """Step windows from STEP_START to the step's last STEP_SUCCESS/STEP_FAILURE (a retried
    step's window spans its retries)."""
    stamps = [e.timestamp for e in events]
    timeline = RunTimeline(run_id, job, status, min(stamps), max(stamps))
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    for entry in events:
        event = entry.dagster_event
        if event is not None and event.event_type == DagsterEventType.RUN_START:
            timeline.run_started = entry.timestamp
        if event is None or event.step_key is None:
            continue
        key = event.step_key
        if event.event_type == DagsterEventType.STEP_START:
            starts.setdefault(key, entry.timestamp)
        elif event.event_type in _STEP_ENDS:
            ends[key] = max(ends.get(key, 0.0), entry.timestamp)
        elif event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            timeline.first_materialization.setdefault(key, entry.timestamp)
            timeline.last_materialization[key] = entry.timestamp
        elif event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            timeline.last_check[key] = entry.timestamp
    for key, start in starts.items():
        timeline.steps[key] = (start, ends.get(key, timeline.last_event))
    return timeline


def read_timelines(dagster_home: Path, since: float) -> list[RunTimeline]:
    """Every run created in the instance at `dagster_home` since `since`, oldest first."""
    instance = DagsterInstance.from_ref(InstanceRef.from_dir(str(dagster_home)))
    try:
        after = dt.datetime.fromtimestamp(since - 1.0, dt.UTC)
        records = instance.get_run_records(
            filters=RunsFilter(created_after=after), order_by="create_timestamp", ascending=True
        )
        timelines = []
        for record in records:
            run = record.dagster_run
            events = instance.all_logs(run.run_id)
            if events:
                timelines.append(timeline_of(run.run_id, run.job_name, run.status.value, events))
        return timelines
    finally:
        instance.dispose()


def breakdown(
    timelines: list[RunTimeline], started: float, ended: float, committed_at: float | None
) -> dict[str, Any]:
    """Where the wall time went, in seconds; the parts add up to the wall time:
    - process_start: interpreter, imports, settings, instance set-up, run creation (up to the
      first event of the first run);
    - per run: run_start (its first event → its first step start; of which `planning`, first
      event → RUN_START, is the planned-materialisation and planned-check events), steps,
      between_steps, run_end (last step end → last event);
    - between_runs, and exit (last event → process exit: the outcome printed, teardown).
    `checks` and `commit` are parts of `steps`. Each step evaluates the checks of the tables it
    writes and reports them after its materialisations, so a step's checks are the time from
    its last materialisation to its last check evaluation: the evaluations' events, and the
    check queries of a step that runs them after materialising (record_sync); a step that
    reads its checks inside its commit unit (intake, connection state, analytics) counts
    those few queries in its step time, not here."""
    out: dict[str, Any] = {
        # no run at all (a no-op the CLI recognised before launching one): all of it is start
        "process_start": (timelines[0].first_event if timelines else ended) - started,
        "run_start": 0.0,
        "planning": 0.0,
        "steps": 0.0,
        "between_steps": 0.0,
        "run_end": 0.0,
        "between_runs": 0.0,
        "exit": ended - max(t.last_event for t in timelines) if timelines else 0.0,
        "checks": 0.0,
        "commit": None,
        "dagster_runs": len(timelines),
        "runs": [],
    }
    previous_end: float | None = None
    for timeline in timelines:
        if previous_end is not None:
            out["between_runs"] += max(0.0, timeline.first_event - previous_end)
        previous_end = timeline.last_event
        first, last = timeline.first_step_start, timeline.last_step_end
        steps = {k: end - start for k, (start, end) in timeline.steps.items()}
        step_total = sum(steps.values())
        if first is not None and last is not None:
            out["run_start"] += first - timeline.first_event
            out["between_steps"] += max(0.0, (last - first) - step_total)
            out["run_end"] += timeline.last_event - last
        else:
            out["run_start"] += timeline.last_event - timeline.first_event
        out["steps"] += step_total
        if timeline.run_started is not None:
            out["planning"] += timeline.run_started - timeline.first_event
        checks = checks_by_step(timeline)
        out["checks"] += sum(checks.values())
        if committed_at is not None and "record_sync" in timeline.steps:
            # from the commit's timestamp to the step's first materialisation: the commit
            # transaction plus the step's read-only look at the tables it then reports
            done = timeline.first_materialization.get(
                "record_sync", timeline.steps["record_sync"][1]
            )
            out["commit"] = max(0.0, done - committed_at)
        out["runs"].append(
            {
                "job": timeline.job,
                "status": timeline.status,
                "seconds": timeline.last_event - timeline.first_event,
                "steps_s": dict(sorted(steps.items(), key=lambda kv: timeline.steps[kv[0]][0])),
                "checks_s": checks,
            }
        )
    return out


def checks_by_step(timeline: RunTimeline) -> dict[str, float]:
    """Per step with check evaluations: seconds from its last materialisation to its last check
    evaluation."""
    return {
        step: max(0.0, last_check - timeline.last_materialization.get(step, last_check))
        for step, last_check in timeline.last_check.items()
    }


def _committed(settings: Settings, run_ids: list[str]) -> tuple[float | None, int]:
    """When the sync run's commit started (ops.load_log.committed_at) and the records it
    received on the endpoint tables; (None, 0) when it committed nothing."""
    if not run_ids or not settings.warehouse.exists():
        return None, 0
    tables = [e.table for e in ENDPOINTS]
    marks = ", ".join("?" for _ in run_ids)
    with db.connect(settings.warehouse, read_only=True) as con:
        row = con.execute(
            f"SELECT min(committed_at), sum(received) FILTER (WHERE table_name IN "
            f"({', '.join('?' for _ in tables)})) FROM ops.load_log WHERE run_id IN ({marks})",
            [*tables, *run_ids],
        ).fetchone()
    if row is None or row[0] is None:
        return None, 0
    committed: dt.datetime = row[0]
    if committed.tzinfo is None:
        committed = committed.replace(tzinfo=dt.UTC)
    return committed.timestamp(), int(row[1] or 0)


def cli_environment(settings: Settings) -> dict[str, str]:
    """What the user's shell would hold: the data dir, the upstream's URLs, the client's
    credentials and the session key. DAGSTER_HOME is left to the CLI (the bench's own
    process set it to its instance)."""
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update(
        SYNC_DATA_DIR=str(settings.data_dir),
        SYNC_API_URL=settings.api_url,
        SYNC_AUTH_URL=settings.auth_url,
        SYNC_CLIENT_ID=settings.client_id,
        SYNC_CLIENT_SECRET=settings.client_secret,
    )
    if settings.session_public_key:
        env["SYNC_SESSION_PUBLIC_KEY"] = settings.session_public_key
    return env


def cli_command() -> list[str]:
    """The installed `sync-pipeline` script next to this interpreter (what users run), else
    the module."""
    script = Path(sys.executable).with_name("sync-pipeline")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sync_pipeline.cli"]


def land_sessions_of(source: Path, target: Path, client_user_ids: set[str]) -> int:
    """Copy the landed Connect sessions of `client_user_ids` from one data dir's landing log
    into another's, through the landing log's own writer (as the receiver lands them)."""
    log = LandingLog(target, "sessions")
    landed = 0
    try:
        for day in landed_days(source, "sessions"):
            for delivery in iter_landed(source, "sessions", day):
                claims = delivery.claims or {}
                if claims.get("client_user_id") in client_user_ids and log.land_sync(delivery):
                    landed += 1
    finally:
        log.close()
    return landed


def cli_sync(
    settings: Settings, sim: SimProcess, sync_args: list[str], *, limit: float | None
) -> dict[str, Any]:
    """`sync-pipeline sync <sync_args>` in its own process; wall time, requests, breakdown."""
    sim.reset_stats()
    command = [*cli_command(), "sync", *sync_args]
    started = time.time()
    clock = time.perf_counter()
    done = subprocess.run(
        command,
        env=cli_environment(settings),
        capture_output=True,
        text=True,
        timeout=_CLI_TIMEOUT_S,
        check=False,
    )
    wall = time.perf_counter() - clock
    ended = started + wall
    stats = sim.stats()
    requests = int(stats["total"])
    tokens = int(stats["by_path"].get("connect/token", 0))
    timelines = read_timelines(settings.dagster_home, started)
    committed_at, records = _committed(settings, [t.run_id for t in timelines])
    bound = requests / limit if limit else 0.0
    result: dict[str, Any] = {
        "command": "sync-pipeline sync " + " ".join(sync_args),
        "exit_code": done.returncode,
        "records": records,
        "wall_s": wall,
        "requests": requests,
        "data_requests": requests - tokens,
        "rate_limited_429": int(stats["rate_limited"]),
        "requests_per_s": requests / wall if wall > 0 else None,
        "requests_per_s_over_limit": requests / wall / limit if wall > 0 and limit else None,
        "bound_s": bound,
        "share_of_bound": bound / wall if wall > 0 else None,
        "fixed_overhead_s": wall - bound,
        "breakdown_s": breakdown(timelines, started, ended, committed_at),
    }
    if done.returncode != 0:
        result["stderr_tail"] = (done.stderr or done.stdout)[-_STDERR_TAIL:]
    return result


def user_path_runs(
    settings: Settings,
    sim: SimProcess,
    landed_from: Path,
    data_dir: Path,
    *,
    users: int,
    catchup_users: int,
    limit: float | None,
) -> dict[str, dict[str, Any]]:
    """The three CLI cases on a fresh data dir holding the sessions of the first `users` users."""
    chosen = [u["client_user_id"] for u in sim.users_list()][:users]
    settings = replace(settings, data_dir=data_dir.resolve())
    data_dir.mkdir(parents=True, exist_ok=True)
    sessions = land_sessions_of(landed_from, data_dir, set(chosen))
    first = cli_sync(settings, sim, [], limit=limit)
    first.update(users=len(chosen), sessions_landed=sessions)
    nothing = cli_sync(settings, sim, ["--mode", "incremental"], limit=limit)
    few = chosen[:catchup_users]
    catchup_args = [arg for user in few for arg in ("--user", user)]
    catchup = cli_sync(settings, sim, catchup_args, limit=limit)
    catchup.update(users=len(few))
    return {
        "cli_first_sync": first,
        "cli_nothing_pending": nothing,
        "cli_catchup_nothing_new": catchup,
    }
