"""Sensors that start runs when new data lands, so nothing waits for the next schedule tick.

- `landing_sensor`: a day of the receiver's landing log changed → `intake_job` for that day.
- `sync_after_intake`: an intake run succeeded → `incremental_sync_job` (it rebuilds connection
  state and fetches what the new notifications name). A follow-up run, not a second request in
  the landing sensor's evaluation: two requests of one tick may start in any order, and a sync
  that started before the intake committed would miss the new rows.
- `new_connection_sensor`: a session response in connect.session_responses opened a connection
  → `catchup_sync_job` for that user only.
- `dead_run_sensor` (assets/dead_runs.py, every 60 s): starts no run; marks failed the runs
  whose run worker died and frees their warehouse pool slot.

Why the connection sensor reads connect.session_responses (DuckDB) and not the landing log: the
catch-up it starts builds its user list from that table, so a connection seen in the landing log
before the intake ran would start a catch-up that does not know the user yet. Reading the table
means "the catch-up will see it". The file has one writer, so the read is read-only and brief,
and a tick that finds the file locked by a writing run is skipped (the next tick sees the rows).

Every RunRequest carries a run_key derived from what it answers (a day's landing fingerprint, a
run id, a delivery digest): Dagster never launches two runs with one key, and the cursors make
a re-evaluation return nothing new in the first place.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd

from sync_pipeline import connect as state
from sync_pipeline.assets.automation import SENSOR_STATUS
from sync_pipeline.assets.dead_runs import dead_run_sensor
from sync_pipeline.assets.schedules import (
    catchup_sync_job,
    incremental_sync_job,
    intake_job,
    sync_config,
)
from sync_pipeline.intake.landing import KINDS, day_fingerprint, landed_days
from sync_pipeline.resources import WarehouseResource
from sync_pipeline.warehouse import db
from sync_pipeline.warehouse.location import WarehouseLocation

TRIGGER_TAG = "sync_pipeline/trigger"
# Sessions inserted into the table later than others received after them (a delivery still being
# written while an intake read the day) are caught by re-reading this window before the
# watermark; digests already handled inside it are kept in the cursor. Anything later still (a
# backfill of an old day) is left to the daily catch-up.
CONNECTION_LOOKBACK = dt.timedelta(days=2)


# --- landing log -----------------------------------------------------------------------------


def landing_fingerprints(data_dir: Path) -> dict[str, str]:
    days = sorted({day for kind in KINDS for day in landed_days(data_dir, kind)})
    return {day.isoformat(): day_fingerprint(data_dir, day) for day in days}


def _partitions_start(context: dg.SensorEvaluationContext) -> str:
    """The first landing day intake_job can run: its partitions are built from the settings
    when the definitions load, so they are read from the definitions, not recomputed here."""
    if context.repository_def is None:
        raise dg.DagsterInvariantViolationError("the landing sensor needs its definitions")
    partitions = context.repository_def.get_job(intake_job.name).partitions_def
    if not isinstance(partitions, dg.TimeWindowPartitionsDefinition):
        raise dg.DagsterInvariantViolationError("intake_job is not partitioned by day")
    return partitions.start.date().isoformat()


def _in_partitions(day: str, start: str) -> bool:
    # today is a partition (end_offset=1); days before the partitions' start cannot be run
    return start <= day <= dt.datetime.now(dt.UTC).date().isoformat()


@dg.sensor(
    job=intake_job,
    minimum_interval_seconds=30,
    default_status=SENSOR_STATUS,
    description="Starts intake_job for every landing-log day that gained deliveries since the "
    "last evaluation (run_key = day + fingerprint of the day's files).",
)
def landing_sensor(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource
) -> dg.SensorResult | dg.SkipReason:
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    now = landing_fingerprints(warehouse.data_path)
    start = _partitions_start(context)
    changed = {
        day: fp for day, fp in now.items() if seen.get(day) != fp and _in_partitions(day, start)
    }
    if not changed:
        return dg.SkipReason("no new deliveries in the landing log")
    requests = [
        dg.RunRequest(
            run_key=f"landing:{day}:{fp}",
            partition_key=day,
            tags={TRIGGER_TAG: "landing"},
        )
        for day, fp in sorted(changed.items())
    ]
    context.log.info("new deliveries on %s", ", ".join(sorted(changed)))
    return dg.SensorResult(run_requests=requests, cursor=json.dumps({**seen, **changed}))


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[intake_job],
    request_job=incremental_sync_job,
    minimum_interval_seconds=30,
    default_status=SENSOR_STATUS,
    description="After each successful intake run, the incremental sync: connection state is "
    "rebuilt and the newly landed notifications are fetched.",
)
def sync_after_intake(context: dg.RunStatusSensorContext) -> dg.RunRequest:
    intake_run = context.dagster_run.run_id
    return dg.RunRequest(
        run_key=f"after-intake:{intake_run}",
        tags={TRIGGER_TAG: "intake", "sync_pipeline/intake_run": intake_run},
    )


# --- new connections -------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionCursor:
    """Sessions received after `watermark - CONNECTION_LOOKBACK` are (re)read; `handled` maps the
    ones among them already looked at to their received_at (to forget them once out of the
    window, which keeps the cursor small)."""

    watermark: dt.datetime | None
    handled: dict[str, dt.datetime]

    @classmethod
    def parse(cls, text: str | None) -> ConnectionCursor:
        if not text:
            return cls(None, {})
        raw: dict[str, Any] = json.loads(text)
        mark = raw.get("watermark")
        handled = {d: dt.datetime.fromisoformat(at) for d, at in raw["handled"].items()}
        return cls(dt.datetime.fromisoformat(mark) if mark else None, handled)

    def dump(self) -> str:
        mark = self.watermark.isoformat() if self.watermark else None
        handled = {d: at.isoformat() for d, at in sorted(self.handled.items())}
        return json.dumps({"watermark": mark, "handled": handled})

    @property
    def since(self) -> dt.datetime:
        # A sensor turned on for the first time looks back one window from now, not at the
        # whole history: a catch-up run per user ever connected would be a burst the daily
        # catch-up already covers.
        mark = self.watermark or dt.datetime.now(dt.UTC)
        return mark - CONNECTION_LOOKBACK

    def advanced(self, seen: dict[str, dt.datetime]) -> ConnectionCursor:
        """This cursor once the sessions `seen` (digest → received_at) are handled."""
        handled = {**self.handled, **seen}
        instants = [*handled.values(), *([self.watermark] if self.watermark else [])]
        if not instants:
            return self
        watermark = max(instants)
        floor = watermark - CONNECTION_LOOKBACK
        return ConnectionCursor(watermark, {d: at for d, at in handled.items() if at > floor})


def connections_opened(sessions: pd.DataFrame, digests: set[str]) -> dict[str, list[str]]:
    """human_id → the deliveries among `digests` that opened a connection still open now.

    `sessions` must hold every session of the humans concerned: whether a callback opened a
    connection (rather than repeating an open one) depends on what came before it.
    """
    history = state.current_connections(state.connection_history(sessions))
    opened = history[history["opened_by"].isin(digests)]
    by_human: dict[str, list[str]] = {}
    for human_id, digest in zip(opened["human_id"], opened["opened_by"], strict=True):
        by_human.setdefault(str(human_id), [])
        if digest not in by_human[str(human_id)]:
            by_human[str(human_id)].append(str(digest))
    return {h: sorted(d) for h, d in sorted(by_human.items())}


def _read_new_sessions(
    location: WarehouseLocation, cursor: ConnectionCursor
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(sessions received since the cursor and not handled, every session of their humans)."""
    with db.connect(location, read_only=True) as con:
        recent = db.query_arrow(
            con, "connect.session_responses", "received_at > ?", [cursor.since]
        ).to_pandas()
        recent = recent[~recent["delivery_digest"].isin(list(cursor.handled))]
        humans = sorted({str(h) for h in recent["human_id"].dropna()})
        everything = db.query_arrow(
            con, "connect.session_responses", "list_contains(?, human_id)", [humans]
        ).to_pandas()
    return recent, everything


@dg.sensor(
    job=catchup_sync_job,
    minimum_interval_seconds=30,
    default_status=SENSOR_STATUS,
    description="Starts a catch-up sync for one user when a Connect session in "
    "connect.session_responses connected a source (run_key = user + opening deliveries).",
)
def new_connection_sensor(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource
) -> dg.SensorResult | dg.SkipReason:
    cursor = ConnectionCursor.parse(context.cursor)
    location = warehouse.location
    if not location.exists():
        return dg.SkipReason("no warehouse yet")
    try:
        recent, everything = _read_new_sessions(location, cursor)
    except (duckdb.IOException, duckdb.ConnectionException) as error:
        # a run holds the write lock: this tick is skipped, the next one reads the same rows
        return dg.SkipReason(f"warehouse busy, retrying next tick: {error}")
    if recent.empty:
        return dg.SkipReason("no new session responses")
    opened = connections_opened(everything, set(recent["delivery_digest"]))
    requests = [
        dg.RunRequest(
            run_key=f"connect:{human_id}:{_digest_key(digests)}",
            run_config=sync_config("catchup", [human_id]),
            tags={TRIGGER_TAG: "new_connection", "sync_pipeline/human_id": human_id},
        )
        for human_id, digests in opened.items()
    ]
    received = pd.to_datetime(recent["received_at"], utc=True)
    seen = {
        str(d): at.to_pydatetime()
        for d, at in zip(recent["delivery_digest"], received, strict=True)
    }
    new_cursor = cursor.advanced(seen)
    if requests:
        context.log.info("new connections for %s", ", ".join(opened))
    return dg.SensorResult(run_requests=requests, cursor=new_cursor.dump())


def _digest_key(digests: list[str]) -> str:
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


SENSORS: list[dg.SensorDefinition] = [
    landing_sensor,
    sync_after_intake,
    new_connection_sensor,
    dead_run_sensor,
]
