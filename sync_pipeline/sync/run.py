"""One sync run end to end: read the plan's inputs, fetch and stage, commit.

DuckDB is opened twice, briefly: to read the inputs, then to commit. The long network phase
holds no database handle. The record-sync asset calls `run_sync` with a `SyncTarget` built from
its resources; benchmarks and tests may pass `Settings` instead.

Staged Parquet holds PHI, so none outlives the run that wrote it unless that run committed
it: a run that fails (fetch, staging or commit) deletes its own chunks on the way out, and
each run first deletes chunks of runs that never committed (ops.load_log names every run that
did) once older than SYNC_STAGED_MAX_AGE_S (left by a run killed outright).

What failed is in the returned report, never only in a log: `summary.failed_items` names each
(user, endpoint) that did not sync, with its reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

import httpx
import pandas as pd

from sync_pipeline.settings import LakeLocation, Settings
from sync_pipeline.sync import heap
from sync_pipeline.sync.commit import CommitSummary, commit_run
from sync_pipeline.sync.fetch import FetchResult, fetch_plan
from sync_pipeline.sync.interrupt import StopSignals
from sync_pipeline.sync.plan import EVERYONE, Shard, SyncMode, SyncPlan, plan_sync
from sync_pipeline.sync.progress import ProgressReporter
from sync_pipeline.sync.stage import Stager
from sync_pipeline.upstream.client import RequestAudit, UpstreamClient, UserRef
from sync_pipeline.upstream.options import SyncLimits
from sync_pipeline.warehouse import db, lake
from sync_pipeline.warehouse.conflicts import retrying
from sync_pipeline.warehouse.location import WarehouseLocation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncTarget:
    """Everything one sync run talks to: the upstream (where, who, and the limits its requests
    and records keep), the warehouse and the lake. `transport` replaces the network (tests give
    an httpx.MockTransport); None is real HTTP."""

    upstream: SyncLimits
    warehouse: WarehouseLocation
    lake: LakeLocation
    transport: httpx.AsyncBaseTransport | None = None

    @classmethod
    def of(cls, settings: Settings) -> SyncTarget:
        return cls(upstream=settings, warehouse=settings.warehouse, lake=settings.lake)


@dataclass(frozen=True)
class SyncInputs:
    users: list[UserRef]
    needs_reconnect: set[str]
    connected: set[str]
    notifications: pd.DataFrame
    cursors: dict[tuple[str, str], datetime]
    committed_runs: set[str]  # runs that committed (their staged files are the lake's)


@dataclass(frozen=True)
class SyncReport:
    plan: SyncPlan
    fetched: FetchResult
    summary: CommitSummary


def read_inputs(warehouse: WarehouseLocation) -> SyncInputs:
    # reads only (a writer connection so that a fresh warehouse gets its tables)
    with db.connect(warehouse, writes=()) as con:
        users = db.query_arrow(con, "connect.users").to_pandas()
        connected = db.query_arrow(con, "connect.current_connections").to_pandas()
        pending = db.query_arrow(con, "ops.notifications", db.PENDING).to_pandas()
        state = db.query_arrow(con, "ops.sync_state").to_pandas()
        committed_runs = db.committed_run_ids(con)
    cursors = {
        (str(h), str(e)): pd.Timestamp(c).to_pydatetime()
        for h, e, c in zip(
            state["human_id"], state["endpoint"], state["cursor_updated_since"], strict=True
        )
        if not pd.isna(c)
    }
    return SyncInputs(
        users=[
            UserRef(client_user_id=str(c), human_id=str(h))
            for c, h in zip(users["client_user_id"], users["human_id"], strict=True)
        ],
        needs_reconnect={str(h) for h in users.loc[users["needs_reconnect"], "human_id"]},
        connected={str(h) for h in connected["human_id"]},
        notifications=pending,
        cursors=cursors,
        committed_runs=committed_runs,
    )


def _plan(
    inputs: SyncInputs, mode: SyncMode, only_users: set[str] | None, shard: Shard
) -> SyncPlan:
    return plan_sync(
        mode=mode,
        users=inputs.users,
        needs_reconnect=inputs.needs_reconnect,
        connected=inputs.connected,
        notifications=inputs.notifications,
        cursors=inputs.cursors,
        only_users=only_users,
        shard=shard,
    )


def plan_for(
    warehouse: WarehouseLocation,
    mode: SyncMode,
    *,
    only_users: set[str] | None = None,
    shard: Shard = EVERYONE,
) -> SyncPlan:
    """What a run of `mode` would fetch now, from the warehouse's notifications and cursors."""
    return _plan(read_inputs(warehouse), mode, only_users, shard)


def run_sync(
    target: SyncTarget | Settings,
    *,
    run_id: str,
    mode: SyncMode,
    only_users: set[str] | None = None,
    shard: Shard = EVERYONE,
    writes: Collection[str] | None = None,
) -> SyncReport:
    """`writes`: the tables the calling asset owns (registry.written_by); the commit may write
    no other.

    Raises UpstreamUnreachable or ClientCredentialsRejected when the probe shows nothing can
    succeed, SyncInterrupted on SIGINT/SIGTERM; either way nothing is committed and the run's
    staged files are gone."""
    if isinstance(target, Settings):
        target = SyncTarget.of(target)
    heap.return_large_blocks_promptly()
    limits, warehouse, lake_at = target.upstream, target.warehouse, target.lake
    with StopSignals() as stop:
        inputs = read_inputs(warehouse)
        plan = _plan(inputs, mode, only_users, shard)
        if plan.skipped_reconnect:
            log.warning(
                "skipping %d user(s) waiting to reconnect: %s",
                len(plan.skipped_reconnect),
                ", ".join(plan.skipped_reconnect),
            )
        progress = ProgressReporter(plan)
        lake.remove_stray_temp_files(lake_at.local_dir)
        lake.remove_uncommitted(
            lake_at.local_dir, inputs.committed_runs, older_than_s=lake_at.staged_max_age_s
        )
        stager = Stager(lake_at, run_id)
        snapshot_users = (
            sorted({i.user for i in plan.items}, key=lambda u: u.human_id)
            if mode != "incremental"
            else []
        )

        async def fetch() -> FetchResult:
            stop.watch()
            audits: list[RequestAudit] = []
            async with UpstreamClient(
                limits, transport=target.transport, on_request=audits.append
            ) as client:
                if plan.items:
                    # one quick token request first: a dead upstream or wrong credentials stop
                    # the run here, in seconds, instead of failing every item after retries
                    await client.probe(plan.items[0].user)
                return await fetch_plan(
                    client,
                    plan,
                    stager,
                    audits,
                    workers=limits.http_concurrency,
                    snapshot_sources_for=snapshot_users,
                    progress=progress.item_done,
                    max_record_bytes=limits.max_record_bytes,
                    future_tolerance_s=limits.future_tolerance_s,
                    cursor_lag_s=limits.cursor_lag_s,
                )

        committed = False
        try:
            try:
                fetched = asyncio.run(fetch())
            except asyncio.CancelledError:
                stop.raise_if_received(committed=False)
                raise
            stop.raise_if_received(committed=False)

            def commit() -> CommitSummary:
                # the whole unit again on a DuckLake commit conflict: nothing of it committed
                with db.connect(warehouse, writes=writes) as con:
                    # an object-store lake: the commit reads the staged chunks through the
                    # store (a DuckLake's connection reads them with its own httpfs)
                    lake.register_filesystems(con, [lake_at.base], stager.store)
                    return commit_run(
                        con,
                        run_id=run_id,
                        plan=plan,
                        fetched=fetched,
                        rewrite_identical=mode == "full",
                    )

            summary = retrying(commit, what=f"the commit of run {run_id}")
            committed = True
        except BaseException:
            if not committed:
                removed = stager.discard()
                log.warning("run %s did not commit: removed its %d staged file(s)", run_id, removed)
            raise
        stop.raise_if_received(committed=True)
    return SyncReport(plan=plan, fetched=fetched, summary=summary)
