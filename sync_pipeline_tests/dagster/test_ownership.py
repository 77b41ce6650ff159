"""One writer per table (ARCHITECTURE rule 2): every SQL write in the package goes through the
check that enforces the registry's owners, every writer connection names what it may write, and
the graph shows what the code reads. (That each table's owner is the asset definition that
materialises it is tables/test_registry.py's.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

import sync_pipeline
from sync_pipeline.assets.analytics import analytics_build
from sync_pipeline.assets.connect import connection_state
from sync_pipeline.assets.records import record_sync
from sync_pipeline.definitions import defs
from sync_pipeline.tables.registry import DECLARED_VIEWS, written_by
from sync_pipeline.upstream.endpoints import ENDPOINTS
from sync_pipeline.warehouse import db

PACKAGE = Path(sync_pipeline.__file__).parent
# the receiver's dedup store is its own SQLite file, not the warehouse
NOT_WAREHOUSE = {PACKAGE / "intake" / "dedup.py"}
WRITE = re.compile(
    r"\b(INSERT INTO|MERGE INTO|UPDATE|DELETE FROM|CREATE OR REPLACE TABLE)\s+([{\"\w][^\s]*)"
)
TABLE_REF = re.compile(r"\b(?:FROM|JOIN)\s+((?:ops|connect|medical|wellness|analytics)\.\w+)")


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p not in NOT_WAREHOUSE)


def table_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(table.split("."))


def test_views_are_external_assets_that_depend_on_what_they_read() -> None:
    views = {
        ".".join(spec.key.path): spec
        for assets_def in defs.resolve_asset_graph().assets_defs
        if not assets_def.is_executable
        for spec in assets_def.specs
    }

    assert set(views) == set(DECLARED_VIEWS)
    for name, view in DECLARED_VIEWS.items():
        read = set(TABLE_REF.findall(view.sql))
        assert set(view.reads) == read, name
        assert {dep.asset_key for dep in views[name].deps} == {table_key(t) for t in read}, name


def test_every_sql_write_names_its_target_through_the_ownership_check() -> None:
    """db.written() raises when a step writes a table its asset does not declare; a write
    naming its target any other way would go around that."""
    writes = [
        (f"{path.relative_to(PACKAGE)}: {match.group(0)}", match.group(2))
        for path in _sources()
        for match in WRITE.finditer(path.read_text(encoding="utf-8"))
    ]
    assert len(writes) >= 15  # db.py's helpers, the analyst layer's statements

    unchecked = [
        where
        for where, target in writes
        if not target.startswith(("{written(con,", "{db.written(con,"))
    ]
    assert unchecked == []


def _connect_calls() -> list[tuple[str, ast.Call]]:
    calls = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "connect"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "db"
            ):
                calls.append((f"{path.relative_to(PACKAGE)}:{node.lineno}", node))
    return calls


def test_every_writer_connection_names_the_tables_it_may_write() -> None:
    calls = _connect_calls()
    assert calls  # the assets and the sync open the warehouse this way

    def read_only(call: ast.Call) -> bool:
        return any(
            k.arg == "read_only" and isinstance(k.value, ast.Constant) and k.value.value is True
            for k in call.keywords
        )

    unrestricted = [
        where
        for where, call in calls
        if not read_only(call) and not any(k.arg == "writes" for k in call.keywords)
    ]
    assert unrestricted == []


def test_a_connection_refuses_a_table_its_step_does_not_declare(tmp_path: Path) -> None:
    row = pa.Table.from_pylist([{"run_id": "r", "table_name": "t", "received": 1}])
    with db.connect(tmp_path / "w.duckdb", writes={"ops.load_log"}) as con:
        db.append(con, "ops.load_log", row)
        with pytest.raises(db.UndeclaredWrite, match=r"ops\.sync_failures"):
            db.append(con, "ops.sync_failures", pa.Table.from_pylist([{"run_id": "r"}]))
        assert con.execute("SELECT count(*) FROM ops.sync_failures").fetchone() == (0,)
    # a connection opened without `writes` (tests, tools) is not restricted, and the
    # restriction left with the connection that had it
    with db.connect(tmp_path / "w.duckdb") as con:
        db.append(con, "ops.sync_failures", pa.Table.from_pylist([{"run_id": "r"}]))


def _deps(assets_def: dg.AssetsDefinition, key: dg.AssetKey) -> set[str]:
    return {".".join(d.asset_key.path) for d in assets_def.specs_by_key[key].deps}


@pytest.mark.parametrize(
    ("module", "assets_def"),
    [
        # read_inputs: what the record sync reads before it fetches
        ("sync/run.py", record_sync),
        # the rebuild reads the sessions only (not the sync's refusals: that would be a cycle)
        ("sync/connection_state.py", connection_state),
    ],
)
def test_a_step_depends_on_every_table_it_reads(
    module: str, assets_def: dg.AssetsDefinition
) -> None:
    source = (PACKAGE / module).read_text(encoding="utf-8")
    read = set(re.findall(r'db\.query_arrow\(con, "([\w.]+)"', source))
    own = written_by(assets_def.node_def.name)
    assert read - own  # it reads other assets' tables

    # the record tables (children follow their parents), or every table connection_state writes
    endpoints = {table_key(e.table) for e in ENDPOINTS}
    for spec in assets_def.specs:
        if spec.key in endpoints or assets_def is connection_state:
            assert read - own <= _deps(assets_def, spec.key), spec.key


def test_the_analyst_layer_depends_on_every_table_its_sql_reads() -> None:
    source = (PACKAGE / "warehouse" / "analytics.py").read_text(encoding="utf-8")
    read = set(TABLE_REF.findall(source))
    own = written_by(analytics_build.node_def.name)
    declared = set().union(*(_deps(analytics_build, s.key) for s in analytics_build.specs))
    assert read  # connections, refusals, cursors, failures, snapshots

    assert read - own <= declared
