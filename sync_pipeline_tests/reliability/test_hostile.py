"""Issue 8, hostile input through the receiver and the sync: SQL-looking identifiers are
stored literally or rejected and harm no table; a notification naming another host never
makes the pipeline send that host anything (least of all a token).

The deliveries are posted, loaded and synced by the shared `flow` fixture (flow.py); these
tests read what it left."""

from __future__ import annotations

from typing import Any

import duckdb
import pytest

from sync_pipeline.tables.registry import TABLES
from sync_pipeline_tests.reliability.flow import EVIL, Flow

pytestmark = pytest.mark.slow


def query(flow: Flow, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(flow.warehouse_path), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def test_a_notification_naming_another_host_sends_that_host_nothing(flow: Flow) -> None:
    assert flow.evil_seen == []  # the foreign host received nothing at all
    rejected = query(flow, "SELECT raw FROM ops.rejected_records")
    assert any(flow.evil_url in raw for (raw,) in rejected), rejected


def test_hostile_identifiers_are_stored_literally_or_rejected_and_harm_no_table(
    flow: Flow,
) -> None:
    tables = {
        r[0]
        for r in query(
            flow, "SELECT table_schema || '.' || table_name FROM information_schema.tables"
        )
    }
    assert set(TABLES) <= tables  # every table still exists
    rejected = query(flow, "SELECT raw, reason FROM ops.rejected_records")
    # the SQL-looking values are stored literally (as data) or rejected with a reason
    stored = query(
        flow,
        "SELECT count(*) FROM ops.notifications WHERE human_id = ? OR object_id = ? "
        "OR endpoint LIKE '%' || ? || '%'",
        [EVIL, EVIL, EVIL],
    )[0][0]
    rejected_evil = sum(1 for raw, _ in rejected if EVIL.replace("'", "") in raw.replace("'", ""))
    assert stored + rejected_evil >= 3
    users = query(flow, "SELECT client_user_id FROM connect.users")
    sessions = query(flow, "SELECT client_user_id FROM connect.session_responses")
    assert (EVIL,) in users or (EVIL,) in sessions or any(EVIL in raw for raw, _ in rejected)
    # the real user's record is still there and unharmed
    assert query(
        flow, "SELECT count(*) FROM medical.test_results WHERE record_id = ?", [flow.real_record_id]
    ) == [(1,)]
