"""After a real sync (simulator, receiver, Dagster runs), the DuckDB file holds exactly the
declared tables, with the declared columns and types: nothing creates a table or a column
behind the registry's back."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from sync_pipeline.tables.registry import TABLES, VIEWS
from sync_pipeline_tests.e2e.harness import running_stack

pytestmark = pytest.mark.slow

SCHEMAS = sorted({t.split(".", 1)[0] for t in TABLES})


def _duckdb_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    schema, name = table.split(".", 1)
    return [
        (str(c), str(t))
        for c, t in con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            [schema, name],
        ).fetchall()
    ]


def _declared_columns(table: str) -> list[tuple[str, str]]:
    """What DuckDB makes of the declared Arrow schema, asked of DuckDB itself."""
    with duckdb.connect() as con:
        empty = TABLES[table].schema.empty_table()  # noqa: F841 - DuckDB's replacement scan
        return [
            (str(r[0]), str(r[1])) for r in con.execute("DESCRIBE SELECT * FROM empty").fetchall()
        ]


def test_every_table_after_a_sync_is_declared_with_its_columns_and_types(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_stack(data_dir, users=2, seed=7, min_records=4, max_records=8) as stack:
        stack.sim.post_initial_sessions()
        stack.intake()
        stack.sync("catchup")
        loaded = stack.query("SELECT count(*) FROM medical.test_results")[0][0]
        warehouse = stack.settings.warehouse_path
    assert loaded > 0  # the sync really wrote records
    with duckdb.connect(str(warehouse), read_only=True) as con:
        found = {
            (f"{s}.{n}", kind)
            for s, n, kind in con.execute(
                "SELECT table_schema, table_name, table_type FROM information_schema.tables "
                "WHERE table_schema IN (SELECT unnest(?::VARCHAR[]))",
                [SCHEMAS],
            ).fetchall()
        }
        tables = {name for name, kind in found if kind == "BASE TABLE"}
        views = {name for name, kind in found if kind == "VIEW"}
        assert tables == set(TABLES)
        assert views == set(VIEWS)
        for table in sorted(tables):
            assert _duckdb_columns(con, table) == _declared_columns(table), table
