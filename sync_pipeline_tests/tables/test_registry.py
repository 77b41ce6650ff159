"""The table registry is the one declaration of every warehouse table: DDL, catalog comments,
frame typing and asset metadata follow it, and nothing else declares a table's Arrow schema."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pytest

import sync_pipeline
from sync_pipeline.tables import frames, registry
from sync_pipeline.tables.registry import TABLES, VIEW_DESCRIPTIONS, VIEWS
from sync_pipeline.tables.specs import COLUMN_SCHEMA
from sync_pipeline.warehouse import db

PACKAGE = Path(sync_pipeline.__file__).parent
REGISTRY = PACKAGE / "tables"


def _modules_outside_registry() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if REGISTRY not in p.parents]


def test_only_the_registry_builds_arrow_schemas() -> None:
    builds = re.compile(r"\b(pa|pyarrow)\.schema\(")
    offenders = [
        f"{path.relative_to(PACKAGE)}:{n}"
        for path in _modules_outside_registry()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if builds.search(line)
    ]
    assert offenders == []


def test_the_warehouse_does_not_import_the_normaliser() -> None:
    for path in (PACKAGE / "warehouse").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = [
            node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
        ] + [
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        ]
        assert not [m for m in imported if m.startswith("sync_pipeline.normalize")], path


@pytest.mark.parametrize(
    "module",
    [
        "sync_pipeline.tables.columns",
        "sync_pipeline.tables.registry",
        "sync_pipeline.normalize",
        "sync_pipeline.normalize.children",
        "sync_pipeline.warehouse.db",
        "sync_pipeline.intake.rows",
        "sync_pipeline.connect",
        "sync_pipeline.dictionary",
    ],
)
def test_imports_without_a_cycle(module: str) -> None:
    # each in a fresh interpreter: which module is imported first decides whether a cycle bites
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, timeout=120)


def test_every_table_is_described_and_keyed_by_its_own_columns() -> None:
    for name, declared in TABLES.items():
        assert declared.name == name
        assert declared.description, name
        assert set(declared.key) <= set(declared.column_names), name
        assert declared.schema.names == declared.column_names, name
    assert set(VIEWS) == set(VIEW_DESCRIPTIONS)


def test_child_tables_know_their_parents() -> None:
    assert registry.PARENT_OF == {
        "medical.test_result_components": "medical.test_results",
        "medical.vital_results": "medical.vitals",
    }
    codes = registry.table("medical.record_codes")
    medical = [t for t in registry.RECORD_TABLES if t.startswith("medical.")]
    assert set(codes.parents) == set(medical) and codes.parent is None
    assert codes.key == ("table_name", "human_id", "record_id", "position")
    assert [t.name for t in registry.children_of("medical.vitals")] == [
        "medical.record_codes",
        "medical.vital_results",
    ]
    assert registry.children_of("wellness.weight") == ()


def test_each_owner_is_the_asset_definition_that_materialises_the_table() -> None:
    from sync_pipeline.definitions import defs

    nodes = {}
    for assets_def in defs.resolve_asset_graph().assets_defs:
        if assets_def.is_executable:
            for key in assets_def.keys:
                nodes[key] = assets_def.node_def.name
    names = set(nodes.values())
    for name, declared in TABLES.items():
        assert declared.owner in names, name
        key = dg.AssetKey(declared.asset_path)
        if key in nodes:
            assert nodes[key] == declared.owner, name


def test_asset_specs_carry_the_declared_column_schema() -> None:
    from sync_pipeline.definitions import defs

    specs = {spec.key: spec for spec in defs.resolve_all_asset_specs()}
    for name, declared in TABLES.items():
        spec = specs.get(dg.AssetKey(declared.asset_path))
        if spec is None:
            continue  # bookkeeping tables written by a step are no asset of their own
        assert spec.description == declared.description, name
        schema = spec.metadata[COLUMN_SCHEMA].value
        assert [c.name for c in schema.columns] == declared.column_names, name
        assert [c.type for c in schema.columns] == [str(c.type) for c in declared.columns]


def test_a_fresh_warehouse_shows_every_description_in_its_catalog(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    with db.connect(path):
        pass
    with db.connect(path, read_only=True) as con:
        tables = {
            f"{s}.{n}": c
            for s, n, c in con.execute(
                "SELECT schema_name, table_name, comment FROM duckdb_tables()"
            ).fetchall()
        }
        views = {
            f"{s}.{n}": c
            for s, n, c in con.execute(
                "SELECT schema_name, view_name, comment FROM duckdb_views() WHERE NOT internal"
            ).fetchall()
        }
        columns = {
            (f"{s}.{t}", n): c
            for s, t, n, c in con.execute(
                "SELECT schema_name, table_name, column_name, comment FROM duckdb_columns()"
            ).fetchall()
        }
    for name, declared in TABLES.items():
        assert tables[name] == declared.description, name
        for column in declared.columns:
            assert columns[(name, column.name)] == (column.description or None), (name, column)
    for view, description in VIEW_DESCRIPTIONS.items():
        assert views[view] == description


def test_a_changed_description_reaches_the_catalog_on_the_next_writer(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    with db.connect(path) as con:
        con.execute("COMMENT ON TABLE ops.sync_state IS 'stale'")
        con.execute("COMMENT ON COLUMN ops.sync_state.endpoint IS 'stale'")
    with db.connect(path) as con:
        (table,) = con.execute(
            "SELECT comment FROM duckdb_tables() WHERE schema_name = 'ops' "
            "AND table_name = 'sync_state'"
        ).fetchone() or (None,)
        (column,) = con.execute(
            "SELECT comment FROM duckdb_columns() WHERE schema_name = 'ops' "
            "AND table_name = 'sync_state' AND column_name = 'endpoint'"
        ).fetchone() or (None,)
    declared = registry.table("ops.sync_state")
    assert table == declared.description
    assert column == declared.column("endpoint").description


@pytest.mark.parametrize("name", sorted(TABLES))
def test_typed_frames_convert_to_the_declared_schema(name: str) -> None:
    declared = registry.table(name)
    empty = frames.typed_frame(declared, [])
    assert list(empty.columns) == declared.column_names
    assert dict(empty.dtypes) == frames.pandas_dtypes(declared)
    arrow = frames.conform(declared, pa.Table.from_pandas(empty, preserve_index=False))
    assert arrow.schema == declared.schema


def test_typed_frame_fills_missing_columns_and_drops_unknown_ones() -> None:
    declared = registry.table("connect.token_refusals")
    frame = frames.typed_frame(declared, [{"human_id": "h", "status": 403, "extra": 1}])
    assert list(frame.columns) == declared.column_names
    row = frame.to_dict("records")[0]
    assert row["human_id"] == "h" and row["status"] == 403
    assert row["run_id"] is None and frame["refused_at"].isna().all()


def test_frames_keep_the_dtypes_intake_and_connect_were_written_against() -> None:
    # text: pandas' NA-backed strings (None in to_dict); instants: UTC microseconds (DuckDB's
    # TIMESTAMPTZ resolution); flags: plain bool
    dtypes = frames.pandas_dtypes(registry.table("connect.users"))
    assert dtypes["human_id"] == pd.StringDtype()
    assert str(dtypes["first_seen_at"]) == "datetime64[us, UTC]"
    assert dtypes["needs_reconnect"] == "bool"
    frame = frames.typed_frame(registry.table("connect.users"), [{"human_id": None}])
    assert frame.to_dict("records")[0]["human_id"] is None
