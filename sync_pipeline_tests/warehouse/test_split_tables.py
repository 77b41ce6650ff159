"""A warehouse made before one writer per table (ops.notifications, connect.users and
ops.rejected_records as tables two assets wrote) opens as the new layout with its data: the
views show what the old tables held."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb

from sync_pipeline.warehouse import db

T0 = dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC)

# the three tables as the previous release created them (before the split)
OLD_LAYOUT = [
    "CREATE SCHEMA ops",
    "CREATE SCHEMA connect",
    """CREATE TABLE ops.notifications (
        notification_id VARCHAR, delivery_digest VARCHAR, human_id VARCHAR, endpoint VARCHAR,
        table_name VARCHAR, object_id VARCHAR, action VARCHAR, model VARCHAR, type VARCHAR,
        updated_at TIMESTAMPTZ, received_at TIMESTAMPTZ, status VARCHAR,
        synced_at TIMESTAMPTZ, sync_run_id VARCHAR)""",
    """CREATE TABLE connect.users (
        client_user_id VARCHAR, human_id VARCHAR, first_seen_at TIMESTAMPTZ,
        last_seen_at TIMESTAMPTZ, last_session_status VARCHAR, needs_reconnect BOOLEAN)""",
    """CREATE TABLE connect.token_refusals (
        human_id VARCHAR, refused_at TIMESTAMPTZ, status INTEGER, run_id VARCHAR)""",
    """CREATE TABLE ops.rejected_records (
        reject_id VARCHAR, table_name VARCHAR, human_id VARCHAR, record_id VARCHAR,
        reason VARCHAR, raw VARCHAR, rejected_at TIMESTAMPTZ, run_id VARCHAR)""",
]


def _old_warehouse(path: Path) -> None:
    with duckdb.connect(str(path)) as con:
        for statement in OLD_LAYOUT:
            con.execute(statement)
        con.executemany(
            "INSERT INTO ops.notifications (notification_id, human_id, object_id, received_at, "
            "status, synced_at, sync_run_id) VALUES (?, 'h', ?, ?, ?, ?, ?)",
            [
                ["n1", "o1", T0, "received", None, None],
                ["n2", "o2", T0, "synced", T0, "run-1"],
                ["n3", "o3", T0, "failed", T0, "run-1"],
            ],
        )
        con.executemany(
            "INSERT INTO connect.users VALUES (?, ?, ?, ?, 'SUCCESS', ?)",
            [["a", "ha", T0, T0, False], ["b", "hb", T0, T0, True]],
        )
        # both refused once; a reconnected since (needs_reconnect false), b did not
        con.executemany(
            "INSERT INTO connect.token_refusals VALUES (?, ?, 403, 'run-1')",
            [["ha", T0 - dt.timedelta(hours=1)], ["hb", T0 + dt.timedelta(hours=1)]],
        )
        con.executemany(
            "INSERT INTO ops.rejected_records (reject_id, table_name, reason) VALUES (?, ?, ?)",
            [
                ["r1", "ops.notifications", "bad item"],
                ["r2", "connect.session_responses", "bad session"],
                ["r3", "medical.allergies", "bad record"],
                ["r4", None, "no table"],
            ],
        )


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[object, ...]]:
    return con.execute(sql).fetchall()


def test_an_old_warehouse_opens_as_views_over_one_writer_tables(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    _old_warehouse(path)

    with db.connect(path) as con:
        kinds = dict(
            _rows(
                con,
                "SELECT table_schema || '.' || table_name, table_type "
                "FROM information_schema.tables",
            )
        )
        notifications = _rows(
            con,
            "SELECT notification_id, status, sync_run_id FROM ops.notifications ORDER BY ALL",
        )
        statuses = _rows(con, "SELECT notification_id FROM ops.notification_status ORDER BY 1")
        users = _rows(con, "SELECT client_user_id, needs_reconnect FROM connect.users ORDER BY 1")
        rejects = {
            table: _rows(con, f"SELECT reject_id FROM {table} ORDER BY 1")
            for table in (
                "ops.rejected_notification_items",
                "ops.rejected_session_responses",
                "ops.rejected_upstream_records",
                "ops.rejected_records",
            )
        }

    for view in ("ops.notifications", "connect.users", "ops.rejected_records"):
        assert kinds[view] == "VIEW"
    assert notifications == [
        ("n1", "received", None),
        ("n2", "synced", "run-1"),
        ("n3", "failed", "run-1"),
    ]
    assert statuses == [("n2",), ("n3",)]  # no row for an item no sync handled
    assert users == [("a", False), ("b", True)]  # as the old table said, until the next rebuild
    assert rejects == {
        "ops.rejected_notification_items": [("r1",)],
        "ops.rejected_session_responses": [("r2",)],
        "ops.rejected_upstream_records": [("r3",), ("r4",)],
        "ops.rejected_records": [("r1",), ("r2",), ("r3",), ("r4",)],
    }

    with db.connect(path) as con:  # a second open finds the new layout: nothing to move
        assert _rows(con, "SELECT count(*) FROM ops.notifications") == [(3,)]
