"""Materialisation metadata on a real sync, and a run that fails inside its commit: no table
is half-written, and re-running reaches the same tables a clean run reaches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest

from sync_pipeline.tables.registry import schema_of
from sync_pipeline_tests.e2e.harness import Stack, running_stack

pytestmark = pytest.mark.slow

RECORD_KEYS = {"received", "loaded", "rejected", "inserted", "updated", "deleted", "requests"}
TABLE_KEYS = {"dagster/row_count", "dagster/column_schema", "preview", "cursors_advanced"}


def test_materialisations_carry_counts_schema_preview_and_cursors(tmp_path: Path) -> None:
    with running_stack(tmp_path / "data", users=2, min_records=3, max_records=6) as stack:
        stack.sim.post_initial_sessions()
        intake = stack.intake()
        result = stack.sync("catchup")
        events = {
            "/".join(m.asset_key.path): m.metadata
            for m in result.asset_materializations_for_node("record_sync")
        }
        meta = events["medical/test_results"]
        assert set(meta) >= RECORD_KEYS | TABLE_KEYS
        rows = stack.query("SELECT count(*) FROM medical.test_results")[0][0]
        assert meta["dagster/row_count"].value == rows > 0
        assert meta["requests"].value > 0
        assert meta["cursors_advanced"].value == 2  # one per user
        columns = [c.name for c in meta["dagster/column_schema"].value.columns]
        assert columns == schema_of("medical.test_results").names
        preview = meta["preview"].value
        header = preview.splitlines()[0]
        assert "record_id" in header and "raw" not in header
        assert len(preview.splitlines()) == 2 + min(rows, 5)

        notifications = intake.asset_materializations_for_node("ops__notifications")[0].metadata
        assert {"dagster/row_count", "dagster/column_schema", "preview"} <= set(notifications)


def _tables(stack: Stack) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table: stack.query(f"SELECT * FROM {table} ORDER BY ALL")
        for table in (
            "medical.test_results",
            "medical.test_result_components",
            "wellness.activities",
        )
    }


def test_failed_commit_leaves_no_half_written_table_and_rerun_completes(tmp_path: Path) -> None:
    with running_stack(tmp_path / "data", users=2, min_records=3, max_records=6) as stack:
        stack.sim.post_initial_sessions()
        stack.intake()
        # sabotage the last write of the commit (the request audit): every record table has
        # been upserted inside the transaction by then
        stack.run("connection_state_job")
        with duckdb.connect(str(stack.settings.warehouse_path)) as con:
            con.execute("ALTER TABLE ops.http_requests ALTER COLUMN duration_ms TYPE DATE")
        failed = (
            stack.sync("catchup")
            if False
            else stack.run(
                "catchup_sync_job",
                config={"ops": {"record_sync": {"config": {"mode": "catchup"}}}},
                raise_on_failure=False,
            )
        )
        assert not failed.success
        retries = [e for e in failed.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        assert len(retries) == 2  # the RetryPolicy tried again, with its backoff
        for table in (
            "medical.test_results",
            "ops.load_log",
            "ops.sync_state",
            "ops.http_requests",
        ):
            assert stack.query(f"SELECT count(*) FROM {table}") == [(0,)], table

        with duckdb.connect(str(stack.settings.warehouse_path)) as con:
            con.execute("ALTER TABLE ops.http_requests ALTER COLUMN duration_ms TYPE DOUBLE")
        assert stack.sync("catchup").success
        first = _tables(stack)
        assert first["medical.test_results"]
        assert stack.sync("catchup").success
        assert _tables(stack) == first
