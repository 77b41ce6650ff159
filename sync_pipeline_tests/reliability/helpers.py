"""Shared pieces of the reliability tests: a stack with connected users, truth from the
simulator, table fingerprints, and a sync run with overridden settings."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb

from starfleet.config import SimFaults
from starfleet.server import SimulatorHandle
from sync_pipeline.normalize.schemas import TABLE_SCHEMAS
from sync_pipeline.settings import Settings
from sync_pipeline.sync.connection_state import rebuild_connection_state
from sync_pipeline.sync.plan import SyncMode
from sync_pipeline.sync.run import SyncReport, run_sync
from sync_pipeline.tables.registry import CHILD_TABLES, RECORD_TABLES, key_of, schema_of
from sync_pipeline.upstream.endpoints import ENDPOINTS
from sync_pipeline.warehouse import db
from sync_pipeline_tests.e2e.harness import Stack, running_stack

# Columns that differ between two correct runs (run ids, wall-clock stamps of this machine).
RUN_SPECIFIC = {
    "run_id",
    "sync_run_id",
    "last_run_id",
    "synced_at",
    "last_synced_at",
    "received_at",
    "rejected_at",
    "refused_at",
    "committed_at",
    "snapshot_at",
    "first_seen_at",
    "last_seen_at",
}

# Record and child tables plus connection tables: what must be identical after any re-run.
COMPARED_TABLES = sorted(
    [*TABLE_SCHEMAS, "connect.users", "connect.connection_history", "connect.connection_events"]
)


@contextmanager
def connected_stack(data_dir: Path, **kwargs: Any) -> Iterator[Stack]:
    """A stack whose users have all connected (sessions landed and loaded): ready to sync."""
    kwargs.setdefault("users", 2)
    kwargs.setdefault("min_records", 3)
    kwargs.setdefault("max_records", 8)
    with running_stack(data_dir, **kwargs) as stack:
        stack.sim.post_initial_sessions()
        stack.intake()
        with db.connect(stack.settings.warehouse_path) as con:
            rebuild_connection_state(con)  # what the sync jobs' connection_state step does
        # kept aside: a test that syncs into the stack's own data dir must not change what
        # the next test's fresh_warehouse starts from
        shutil.copyfile(stack.settings.warehouse_path, _connected_copy(stack))
        yield stack


def _connected_copy(stack: Stack) -> Path:
    data_dir = stack.settings.data_dir
    return data_dir.parent / f"{data_dir.name}-connected.duckdb"


def fresh_warehouse(stack: Stack, data_dir: Path) -> Settings:
    """The stack's settings on a new data dir holding a copy of the stack's warehouse as it
    was once users connected (nothing synced): many tests can share one running stack, each
    with its own warehouse."""
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_connected_copy(stack), data_dir / "warehouse.duckdb")
    return replace(stack.settings, data_dir=data_dir)


def query(settings: Settings, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def sync_once(
    stack: Stack,
    mode: SyncMode = "catchup",
    faults: SimFaults | None = None,
    settings: Settings | None = None,
    **overrides: Any,
) -> SyncReport:
    """One real sync run (run_sync, no Dagster) with settings overrides, under `faults`."""
    if faults is not None:
        stack.sim.app_config.faults = faults
    settings = replace(settings or stack.settings, **overrides)
    try:
        return run_sync(settings, run_id=f"test-{uuid.uuid4().hex[:12]}", mode=mode)
    finally:
        stack.sim.app_config.faults = SimFaults()


def truth_keys(sim: SimulatorHandle, table: str | None = None) -> set[tuple[str, str, str]]:
    """(table, human_id, record_id) of every record the simulator holds now."""
    keys = set()
    for user in sim.world.users:
        for endpoint in ENDPOINTS:
            if table is not None and endpoint.table != table:
                continue
            for record in sim.world.records(user.human_id, endpoint.path):
                keys.add((endpoint.table, user.human_id, str(record["id"])))
    return keys


def truth_by_key(sim: SimulatorHandle) -> dict[tuple[str, str, str], dict[str, Any]]:
    out = {}
    for user in sim.world.users:
        for endpoint in ENDPOINTS:
            for record in sim.world.records(user.human_id, endpoint.path):
                out[(endpoint.table, user.human_id, str(record["id"]))] = record
    return out


def loaded_keys(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str]]:
    """Every stored (table, human_id, record_id), duplicates kept (so a test can count them)."""
    keys: list[tuple[str, str, str]] = []
    for endpoint in ENDPOINTS:
        rows = con.execute(
            f"SELECT human_id, record_id FROM {endpoint.table} WHERE deleted_at IS NULL"
        ).fetchall()
        keys += [(endpoint.table, str(h), str(r)) for h, r in rows]
    return keys


def duplicate_keys(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Per record/child table: rows minus distinct keys (0 everywhere when nothing duplicated)."""
    out = {}
    for table in (*RECORD_TABLES, *CHILD_TABLES):
        cols = ", ".join(key_of(table))
        row = con.execute(
            f"SELECT count(*) - (SELECT count(*) FROM (SELECT DISTINCT {cols} FROM {table})) "
            f"FROM {table}"
        ).fetchone()
        assert row is not None
        if row[0]:
            out[table] = int(row[0])
    return out


def fingerprint(db_path: Path) -> dict[str, tuple[int, int]]:
    """(row count, order-independent checksum of every non-run-specific column) per compared
    table."""
    schemas = {
        **TABLE_SCHEMAS,
        **{t: schema_of(t) for t in COMPARED_TABLES if t.startswith("connect.")},
    }
    out = {}
    with duckdb.connect(str(db_path), read_only=True) as con:
        for table in COMPARED_TABLES:
            cols = [f.name for f in schemas[table] if f.name not in RUN_SPECIFIC]
            row_expr = "hash(" + ", ".join(f'"{c}"' for c in cols) + ")"
            row = con.execute(
                f"SELECT count(*), coalesce(sum({row_expr}::HUGEINT), 0) FROM {table}"
            ).fetchone()
            assert row is not None
            out[table] = (int(row[0]), int(row[1]))
    return out
