"""Retention and compaction of a DuckLake warehouse (the single file needs neither).

Every commit into a DuckLake is a snapshot, and small commits leave small Parquet files. Once a
day (assets/maintenance.py) this merges adjacent small files, expires snapshots older than the
retention (SYNC_LAKE_SNAPSHOT_RETENTION_DAYS: time travel reaches back that far, no further),
and deletes the data files no remaining snapshot needs, once they have been unreferenced for
SYNC_LAKE_FILE_GRACE_HOURS (a reader that began on an expired snapshot may still be scanning
them). All three are DuckLake's own functions; each is its own catalog transaction, and a
conflict with a concurrent sync commit is retried like any other commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb

from sync_pipeline.warehouse.conflicts import retrying


@dataclass(frozen=True)
class MaintenanceReport:
    snapshots_before: int
    snapshots_expired: int
    files_before: int
    files_deleted: int
    files_after: int


def _data_files(con: duckdb.DuckDBPyConnection) -> int:
    """Parquet files the current snapshot of every warehouse table reads."""
    tables = con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = 'warehouse'"
    ).fetchall()
    return sum(
        int(
            con.execute(
                "SELECT count(*) FROM ducklake_list_files('warehouse', ?, schema => ?)",
                [table, schema],
            ).fetchall()[0][0]
        )
        for schema, table in tables
    )


def maintain_lake(
    con: duckdb.DuckDBPyConnection,
    *,
    retention: timedelta,
    file_grace: timedelta,
    now: datetime | None = None,
) -> MaintenanceReport:
    """Compact, expire and clean the DuckLake attached as `warehouse` on `con`."""
    now = now or datetime.now(UTC)
    snapshots = int(con.execute("SELECT count(*) FROM warehouse.snapshots()").fetchall()[0][0])
    files_before = _data_files(con)

    def merge() -> None:
        con.execute("CALL ducklake_merge_adjacent_files('warehouse')").fetchall()

    def expire() -> int:
        rows = con.execute(
            "CALL ducklake_expire_snapshots('warehouse', older_than => ?)", [now - retention]
        ).fetchall()
        return len(rows)

    def clean() -> int:
        rows = con.execute(
            "CALL ducklake_cleanup_old_files('warehouse', older_than => ?)", [now - file_grace]
        ).fetchall()
        return len(rows)

    retrying(merge, what="merging the lake's small files")
    expired = retrying(expire, what="expiring the lake's old snapshots")
    deleted = retrying(clean, what="deleting the lake's unreferenced files")
    return MaintenanceReport(
        snapshots_before=snapshots,
        snapshots_expired=expired,
        files_before=files_before,
        files_deleted=deleted,
        files_after=_data_files(con),
    )
