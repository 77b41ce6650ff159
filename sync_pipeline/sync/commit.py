"""Commit one sync run's staged batches into DuckDB in a single transaction.

Everything a run changes (records, children, deleted_at, rejects, cursors, notification
statuses, token refusals, request audit, load log) becomes visible together or not at all, so
a run killed at any point leaves the warehouse as it was and the next run redoes the work.

Only tables the record sync owns are written here (their registry owner is record_sync, and the
connection passed in refuses any other): notification statuses go to ops.notification_status
(the intake owns the items), refusals to connect.token_refusals (connection_state owns
connect.app_users; the view connect.users joins the two, so needs_reconnect changes with this
commit).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from sync_pipeline.sync.fetch import FetchResult
from sync_pipeline.sync.plan import SyncPlan
from sync_pipeline.tables.ops import REJECTED_UPSTREAM_RECORDS
from sync_pipeline.tables.registry import CHILD_TABLES, children_of, key_of
from sync_pipeline.upstream.endpoints import ENDPOINTS
from sync_pipeline.warehouse import db, lake


@dataclass(frozen=True)
class TableLoad:
    table: str
    received: int = 0
    loaded: int = 0
    rejected: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0


@dataclass
class CommitSummary:
    run_id: str
    tables: dict[str, TableLoad] = field(default_factory=dict)
    cursors_advanced: int = 0
    failed_items: list[tuple[str, str, str]] = field(default_factory=list)  # human, endpoint, why
    refused_users: list[str] = field(default_factory=list)
    requests: int = 0
    # loaded records flagged in ops.flagged_records by this run (text repaired, future stamps)
    flagged: int = 0


def commit_run(
    con: duckdb.DuckDBPyConnection,
    *,
    run_id: str,
    plan: SyncPlan,
    fetched: FetchResult,
    now: datetime | None = None,
    rewrite_identical: bool = False,
) -> CommitSummary:
    """`rewrite_identical`: a full re-pull rewrites every record it read, also one equal to the
    stored row, and so re-derives its children (db.upsert_latest); other modes leave such a
    record, and its children, as they are."""
    now = now or datetime.now(UTC)
    summary = CommitSummary(run_id=run_id, requests=fetched.requests)
    rejected_by_table = _rejects_per_table(fetched.rejected)
    gone: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for result in fetched.items:
        if result.gone_ids:
            gone[result.item.endpoint.table][result.item.user.human_id].extend(result.gone_ids)

    # Staged rows are scanned by DuckDB straight from the run's Parquet chunks, never loaded
    # into Python memory whole (a first sync of a big account is millions of rows).
    child_files = {child: files for child in CHILD_TABLES if (files := fetched.staged.get(child))}
    db.bound_memory(con)
    # (table's load, its lake files): ops.load_log's rows, written in one statement at the end
    loads: list[tuple[TableLoad, list[Path | str]]] = []
    with db.transaction(con):
        for endpoint in ENDPOINTS:
            table = endpoint.table
            files = fetched.staged.get(table, [])
            counts = db.UpsertCounts()
            if files:
                # a shared child's staged rows name their parent in table_name
                children: dict[str, db.Rows] = {
                    child.name: _scan(
                        con,
                        child_files[child.name],
                        table_name=None if child.parent == table else table,
                    )
                    for child in children_of(table)
                    if child.name in child_files
                }
                counts = db.upsert_latest(
                    con,
                    table,
                    _scan(con, files),
                    key_of(table),
                    children=children,
                    rewrite_identical=rewrite_identical,
                )
            deleted = sum(
                db.mark_deleted(con, table, human_id, ids, now)
                for human_id, ids in gone.get(table, {}).items()
            )
            received = fetched.received.get(table, 0)
            rejected = rejected_by_table.get(table, 0)
            if received or deleted:
                summary.tables[table] = TableLoad(
                    table=table,
                    received=received,
                    loaded=received - rejected,
                    rejected=rejected,
                    inserted=counts.inserted,
                    updated=counts.updated,
                    deleted=deleted,
                )
                loads.append((summary.tables[table], files))
        for child, files in child_files.items():
            # manifest rows for the child chunks, loaded with their parents above
            rows = db.row_count(_scan(con, files))
            loads.append((TableLoad(child, rows, rows), files))
        _log_loads(con, run_id, now, loads)
        db.store_rejects(con, REJECTED_UPSTREAM_RECORDS, fetched.rejected, run_id, now)
        summary.flagged = db.store_flags(con, fetched.flagged, run_id, now)
        summary.cursors_advanced = _advance_cursors(con, fetched, run_id, now)
        _mark_notifications(con, plan, fetched, run_id, now)
        _store_refusals(con, fetched.refused, run_id, now)
        _store_failures(con, fetched, run_id, now)
        if len(fetched.source_status):
            db.append(con, "connect.source_status", pa.Table.from_pandas(fetched.source_status))
        _store_audits(con, fetched, run_id)
    summary.failed_items = [
        (r.item.user.human_id, r.item.endpoint.path, r.error or "")
        for r in fetched.items
        if not r.ok
    ]
    summary.refused_users = sorted(fetched.refused)
    return summary


def _log_loads(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    now: datetime,
    loads: list[tuple[TableLoad, list[Path | str]]],
) -> None:
    """One ops.load_log row per table: its counts (`updated`: stored rows this run changed; a
    re-read equal to the stored row is neither inserted nor updated) and the lake files this
    run loaded into it (the manifest: an object-store lake has no rename, so readers list
    committed files here)."""
    rows = [
        {
            "run_id": run_id,
            "table_name": load.table,
            "received": load.received,
            "loaded": load.loaded,
            "rejected": load.rejected,
            "inserted": load.inserted,
            "updated": load.updated,
            "deleted": load.deleted,
            "lake_files": "\n".join(str(p) for p in files),
            "committed_at": now,
        }
        for load, files in loads
    ]
    if rows:
        db.append(con, "ops.load_log", pa.Table.from_pylist(rows))


def _scan(
    con: duckdb.DuckDBPyConnection, files: list[Path | str], *, table_name: str | None = None
) -> duckdb.DuckDBPyRelation:
    lake.register_filesystems(con, files)  # s3:// staged files are read through fsspec
    return db.staged_rows(con, [str(f) for f in files], table_name=table_name)


def _rejects_per_table(rejected: pd.DataFrame) -> dict[str, int]:
    if rejected.empty:
        return {}
    return {str(k): int(v) for k, v in rejected.groupby("table_name").size().items()}


def _advance_cursors(
    con: duckdb.DuckDBPyConnection, fetched: FetchResult, run_id: str, now: datetime
) -> int:
    """Advance a (user, endpoint) cursor only when its catch-up item finished without error and
    saw records; the new cursor is FetchResult.next_cursor (held to the upstream's clock, a
    trailing window behind the newest updatedAt seen)."""
    rows = [
        {
            "human_id": r.item.user.human_id,
            "endpoint": r.item.endpoint.path,
            "cursor_updated_since": fetched.next_cursor(r),
            "last_synced_at": now,
            "last_run_id": run_id,
        }
        for r in fetched.items
        if r.ok and r.item.advances_cursor
    ]
    if rows:
        db.upsert_by_key(
            con, "ops.sync_state", pa.Table.from_pylist(rows), ("human_id", "endpoint")
        )
    return sum(1 for r in rows if r["cursor_updated_since"] is not None)


def _mark_notifications(
    con: duckdb.DuckDBPyConnection,
    plan: SyncPlan,
    fetched: FetchResult,
    run_id: str,
    now: datetime,
) -> None:
    statuses: dict[str, str] = dict(plan.unactionable)
    for result in fetched.items:
        status = "synced" if result.ok else "failed"
        for notification_id in result.item.notification_ids:
            statuses[notification_id] = status
        if result.gone_ids and result.ok:
            gone = set(result.gone_ids)
            for notification_id, object_id in result.item.notified_objects:
                if object_id in gone:
                    statuses[notification_id] = "gone"
    if not statuses:
        return
    updates = pa.table(
        {
            "notification_id": pa.array(list(statuses), pa.string()),
            "status": pa.array(list(statuses.values()), pa.string()),
        }
    )
    db.store_notification_status(con, updates, run_id, now)


def _store_refusals(
    con: duckdb.DuckDBPyConnection, refused: dict[str, int], run_id: str, now: datetime
) -> None:
    if not refused:
        return
    rows = [
        {"human_id": h, "refused_at": now, "status": status, "run_id": run_id}
        for h, status in sorted(refused.items())
    ]
    db.append(con, "connect.token_refusals", pa.Table.from_pylist(rows))


def _store_failures(
    con: duckdb.DuckDBPyConnection, fetched: FetchResult, run_id: str, now: datetime
) -> None:
    """What this run could not sync, per (user, endpoint): ops reads it, the cursor stayed."""
    rows = [
        {
            "run_id": run_id,
            "human_id": r.item.user.human_id,
            "endpoint": r.item.endpoint.path,
            "reason": r.error,
            "failed_at": now,
        }
        for r in fetched.items
        if not r.ok
    ]
    if rows:
        db.append(con, "ops.sync_failures", pa.Table.from_pylist(rows))


def _store_audits(con: duckdb.DuckDBPyConnection, fetched: FetchResult, run_id: str) -> None:
    if not fetched.audits:
        return
    rows = [
        {
            "request_id": a.request_id,
            "run_id": run_id,
            "method": a.method,
            "path": a.path,
            "human_id": a.human_id,
            "status": a.status,
            "attempt": a.attempt,
            "duration_ms": a.duration_ms,
            "started_at": a.started_at,
            "rate_limit_limit": a.rate_limit_limit,
            "rate_limit_remaining": a.rate_limit_remaining,
            "rate_limit_reset": a.rate_limit_reset,
            "error": a.error,
        }
        for a in fetched.audits
    ]
    db.insert_absent(
        con, "ops.http_requests", pa.Table.from_pylist(rows), ("request_id", "attempt")
    )
