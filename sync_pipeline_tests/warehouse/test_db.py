"""The warehouse SQL against real DuckDB files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from sync_pipeline.normalize.schemas import TABLE_SCHEMAS
from sync_pipeline.sync.commit import commit_run
from sync_pipeline.sync.fetch import FetchResult
from sync_pipeline.sync.plan import SyncPlan
from sync_pipeline.tables.registry import TABLES
from sync_pipeline.warehouse import db, lake
from sync_pipeline.warehouse.location import WarehouseLocation
from sync_pipeline_tests.resources import settings_for

T0 = dt.datetime(2020, 3, 9, 16, 52, tzinfo=dt.UTC)


def _results(*rows: tuple[str, str, dt.datetime, str]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "human_id": h,
                "record_id": r,
                "updated_at": u,
                "created_at": T0,
                "name": n,
                "raw": "{}",
            }
            for h, r, u, n in rows
        ]
    )


def _components(*rows: tuple[str, str, int, str]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"human_id": h, "record_id": r, "position": p, "name": n} for h, r, p, n in rows]
    )


def warehouse_at(tmp_path: Path, kind: str) -> Path | WarehouseLocation:
    """The single file, or a DuckLake with a local catalog (the same code path must hold)."""
    if kind == "file":
        return tmp_path / "warehouse.duckdb"
    return settings_for(
        tmp_path, SYNC_WAREHOUSE=f"ducklake:{tmp_path / 'catalog.ducklake'}"
    ).warehouse


@pytest.fixture(params=["file", "ducklake"])
def con(tmp_path: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    with db.connect(warehouse_at(tmp_path, request.param)) as connection:
        yield connection


def _names(con, table: str) -> list[tuple]:  # type: ignore[no-untyped-def]
    return con.execute(f"SELECT * EXCLUDE (raw) FROM {db.quoted(table)} ORDER BY ALL").fetchall()


def test_every_contract_table_exists(con) -> None:  # type: ignore[no-untyped-def]
    tables = {
        f"{s}.{t}"
        for s, t in con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_catalog = current_database()"
        ).fetchall()
    }
    for required in (
        "medical.test_results",
        "medical.test_result_components",
        "medical.vital_results",
        "medical.record_codes",
        "wellness.activities",
        "wellness.blood_pressure",
        "connect.users",
        "connect.connection_history",
        "connect.current_connections",
        "ops.notifications",
        "ops.rejected_records",
    ):
        assert required in tables
    assert set(TABLE_SCHEMAS) <= tables


def test_last_updated_at_wins_and_rerun_is_a_no_op(con) -> None:  # type: ignore[no-untyped-def]
    later = T0 + dt.timedelta(hours=1)
    first = db.upsert_latest(
        con,
        "medical.test_results",
        _results(("h", "a", later, "new"), ("h", "b", T0, "b")),
        ("human_id", "record_id"),
    )
    assert (first.inserted, first.updated) == (2, 0)
    # an older version arriving late loses; a duplicate inside one batch keeps the newest
    second = db.upsert_latest(
        con,
        "medical.test_results",
        _results(("h", "a", T0, "old"), ("h", "b", later, "b1"), ("h", "b", T0, "b0")),
        ("human_id", "record_id"),
    )
    assert (second.inserted, second.updated, second.unchanged) == (0, 1, 1)
    rows = con.execute("SELECT record_id, name FROM medical.test_results ORDER BY 1").fetchall()
    assert rows == [("a", "new"), ("b", "b1")]
    before = _names(con, "medical.test_results")
    db.upsert_latest(
        con,
        "medical.test_results",
        _results(("h", "a", later, "new"), ("h", "b", later, "b1")),
        ("human_id", "record_id"),
    )
    assert _names(con, "medical.test_results") == before


RESULTS = "medical.test_results"
COMPONENTS = "medical.test_result_components"


def _commit(
    con: duckdb.DuckDBPyConnection,
    lake_dir: Path,
    run_id: str,
    results: pa.Table,
    components: pa.Table,
    *,
    rewrite_identical: bool = False,
) -> dict[str, int]:
    """A sync run's commit of staged test results and their components (as the fetch stages
    them: Parquet chunks in the lake); returns its ops.load_log row of the results table."""
    staged = {
        table: [lake.write_chunk(lake_dir, table, db.conform(table, rows), f"run={run_id}/p0")]
        for table, rows in ((RESULTS, results), (COMPONENTS, components))
    }
    fetched = FetchResult(
        staged=staged,
        items=[],
        received={RESULTS: results.num_rows},
        rejected=pd.DataFrame(),
        refused={},
        source_status=pd.DataFrame(),
        audits=[],
        requests=0,
    )
    commit_run(
        con,
        run_id=run_id,
        plan=SyncPlan(items=()),
        fetched=fetched,
        rewrite_identical=rewrite_identical,
    )
    row = con.execute(
        "SELECT received, inserted, updated FROM ops.load_log WHERE run_id = ? AND table_name = ?",
        [run_id, RESULTS],
    ).fetchone()
    assert row is not None
    return dict(zip(("received", "inserted", "updated"), row, strict=True))


def _stored(con: duckdb.DuckDBPyConnection, table: str) -> dict[tuple[str, ...], tuple]:  # type: ignore[type-arg]
    """Each row's DuckDB rowid and a value, by key: a row deleted and inserted again (even
    equal) gets a new rowid."""
    position = ", position" if table == COMPONENTS else ""
    rows = con.execute(
        f"SELECT record_id{position}, rowid, name FROM {db.quoted(table)} ORDER BY ALL"
    ).fetchall()
    return {tuple(str(k) for k in r[:-2]): tuple(r[-2:]) for r in rows}


def test_a_reread_equal_to_the_stored_row_writes_nothing(con, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A catch-up re-reads the records at its cursor's second: equal to what is stored, they
    (and their children) are left in place, and ops.load_log counts no update."""
    results = _results(("h", "a", T0, "x"), ("h", "b", T0, "y"))
    components = _components(("h", "a", 0, "a0"), ("h", "b", 0, "b0"), ("h", "b", 1, "b1"))
    first = _commit(con, tmp_path / "lake", "run-1", results, components)
    assert (first["inserted"], first["updated"]) == (2, 0)
    parents, children = _stored(con, RESULTS), _stored(con, COMPONENTS)
    again = _commit(con, tmp_path / "lake", "run-2", results, components)
    assert again == {"received": 2, "inserted": 0, "updated": 0}
    assert _stored(con, RESULTS) == parents
    assert _stored(con, COMPONENTS) == children


def test_a_changed_record_in_a_batch_of_equal_ones_is_still_updated(con, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    results = _results(("h", "a", T0, "x"), ("h", "b", T0, "y"))
    components = _components(("h", "a", 0, "a0"), ("h", "b", 0, "b0"), ("h", "b", 1, "b1"))
    _commit(con, tmp_path / "lake", "run-1", results, components)
    parents, children = _stored(con, RESULTS), _stored(con, COMPONENTS)
    # b changed upstream (a later updatedAt, one component fewer); a is re-read as it was, and a
    # tie that differs in any column (c's name) replaces the stored row as well
    later = T0 + dt.timedelta(minutes=1)
    changed = _results(("h", "a", T0, "x"), ("h", "b", later, "y2"))
    fewer = _components(("h", "a", 0, "a0"), ("h", "b", 0, "b0-new"))
    assert _commit(con, tmp_path / "lake", "run-2", changed, fewer)["updated"] == 1
    after = _stored(con, RESULTS)
    assert after[("a",)] == parents[("a",)]
    assert after[("b",)][1] == "y2"
    components_after = _stored(con, COMPONENTS)
    assert sorted(components_after) == [("a", "0"), ("b", "0")]
    assert components_after[("a", "0")] == children[("a", "0")]  # a's left in place
    assert components_after[("b", "0")][1] == "b0-new"  # b's replaced wholesale
    tie = _results(("h", "a", T0, "x-renamed"), ("h", "b", later, "y2"))
    assert _commit(con, tmp_path / "lake", "run-3", tie, fewer)["updated"] == 1
    assert _stored(con, RESULTS)[("a",)][1] == "x-renamed"


def test_a_full_repull_rewrites_equal_rows_and_counts_them_unchanged(con, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`sync --full` rewrites every record it reads (re-deriving its children from raw), and
    an equal one is still not an update."""
    results = _results(("h", "a", T0, "x"))
    components = _components(("h", "a", 0, "a0"))
    _commit(con, tmp_path / "lake", "run-1", results, components)
    parents, children = _stored(con, RESULTS), _stored(con, COMPONENTS)
    full = _commit(con, tmp_path / "lake", "run-2", results, components, rewrite_identical=True)
    assert (full["inserted"], full["updated"]) == (0, 0)
    assert _stored(con, RESULTS)[("a",)] != parents[("a",)]  # a new rowid, the same name
    assert _stored(con, RESULTS)[("a",)][1] == "x"
    assert _stored(con, COMPONENTS)[("a", "0")] != children[("a", "0")]


def test_an_equal_row_is_told_apart_by_any_column_nulls_included(con) -> None:  # type: ignore[no-untyped-def]
    """Equality is over every stored column, NULL equal to NULL and unequal to a value."""
    keys = ("human_id", "record_id")
    row = {"human_id": "h", "record_id": "a", "updated_at": T0, "raw": "{}", "status": None}
    db.upsert_latest(con, RESULTS, pa.Table.from_pylist([row]), keys)
    same = db.upsert_latest(con, RESULTS, pa.Table.from_pylist([row]), keys)
    assert (same.updated, same.unchanged) == (0, 1)
    for column, value in (("status", "final"), ("deleted_at", T0), ("raw", '{"a": 1}')):
        changed = db.upsert_latest(
            con, RESULTS, pa.Table.from_pylist([{**row, column: value}]), keys
        )
        assert (changed.updated, changed.unchanged) == (1, 0), column
        db.upsert_latest(con, RESULTS, pa.Table.from_pylist([row]), keys)  # back as it was


class _Statements:
    """A connection that counts the statements run through it."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con, self.executed = con, 0

    def execute(self, *args: object) -> duckdb.DuckDBPyConnection:
        self.executed += 1
        return self.con.execute(*args)  # type: ignore[arg-type]

    def sql(self, *args: object, **kwargs: object) -> duckdb.DuckDBPyRelation:
        self.executed += 1
        return self.con.sql(*args, **kwargs)  # type: ignore[arg-type]


def test_row_counts_of_many_tables_in_one_statement_match_each_count(con) -> None:  # type: ignore[no-untyped-def]
    db.upsert_latest(
        con,
        RESULTS,
        _results(("h", "a", T0, "x"), ("h", "b", T0, "y")),
        ("human_id", "record_id"),
        children={COMPONENTS: _components(("h", "a", 0, "a0"), ("h", "a", 1, "a1"))},
    )
    db.insert_absent(
        con,
        "connect.session_responses",
        pa.table({"delivery_digest": ["d1"]}),
        ("delivery_digest",),
    )
    tables = sorted(TABLES)
    counting = _Statements(con)
    counts = db.row_counts(counting, tables)  # type: ignore[arg-type]
    assert counting.executed == 1
    assert counts == {
        t: con.execute(f"SELECT count(*) FROM {db.quoted(t)}").fetchone()[0] for t in tables
    }
    assert (counts[RESULTS], counts[COMPONENTS], counts["connect.session_responses"]) == (2, 2, 1)
    assert db.row_counts(con, []) == {}


def test_heads_of_many_tables_in_one_statement_match_each_head(con) -> None:  # type: ignore[no-untyped-def]
    """Newest first, the columns asked for that each table has, their own types (`status` is
    text in ops.notification_status and an integer in ops.http_requests)."""
    db.upsert_latest(
        con,
        RESULTS,
        _results(*((f"h{i % 2}", f"r{i}", T0 + dt.timedelta(hours=i), f"n{i}") for i in range(8))),
        ("human_id", "record_id"),
    )
    db.append(
        con,
        "ops.http_requests",
        pa.table({"request_id": ["q1", "q2"], "status": [200, 429], "attempt": [0, 1]}),
    )
    db.append(
        con,
        "ops.notification_status",
        pa.table({"notification_id": ["n1"], "status": ["synced"], "synced_at": [T0]}),
    )
    tables = [RESULTS, "ops.http_requests", "ops.notification_status", COMPONENTS]
    columns = ["record_id", "status", "updated_at", "notification_id", "attempt", "position"]
    counting = _Statements(con)
    heads = db.table_heads(counting, tables, columns, limit=5)  # type: ignore[arg-type]
    assert counting.executed == 1
    assert heads[RESULTS].column_names == ["record_id", "status", "updated_at"]
    assert heads[RESULTS].column("record_id").to_pylist() == ["r7", "r6", "r5", "r4", "r3"]
    requests = heads["ops.http_requests"]
    assert requests.schema.field("status").type == pa.int32()
    assert sorted(requests.column("status").to_pylist()) == [200, 429]
    assert heads["ops.notification_status"].to_pylist() == [
        {"notification_id": "n1", "status": "synced"}
    ]
    assert heads[COMPONENTS].num_rows == 0
    assert heads[COMPONENTS].column_names == ["record_id", "position"]
    assert db.table_heads(con, [], columns) == {}


def test_a_batch_of_wide_records_far_above_the_memory_bound_commits(tmp_path: Path) -> None:
    """A first sync of a million records put ~1 GB of record text through one upsert, under
    COMMIT_MEMORY_LIMIT (256 MB): DuckDB 1.4 failed out of memory where it picked the newest copy
    per key with a window over whole rows. Scaled down: 160 MB of rows under a 64 MB bound."""
    wide = "x" * 4000
    later = T0 + dt.timedelta(hours=1)
    records = [("h", f"r{i}", T0, wide) for i in range(40_000)]
    records += [("h", f"r{i}", later, "newest") for i in range(0, 40_000, 1000)]
    with db.connect(tmp_path / "warehouse.duckdb") as con:
        db.bound_memory(con, "64MB")
        counts = db.upsert_latest(
            con, "medical.test_results", _results(*records), ("human_id", "record_id")
        )
        # landed deliveries go in first-write-wins through the same narrow window
        sessions = pa.Table.from_pylist(
            [
                {"delivery_digest": f"d{i % 39_000}", "received_at": T0, "payload": wide}
                for i in range(40_000)
            ]
        )
        taken = db.insert_absent(con, "connect.session_responses", sessions, ("delivery_digest",))
        assert taken == 39_000
        assert (counts.inserted, counts.updated) == (40_000, 0)
        newest = con.execute(
            "SELECT count(*) FROM medical.test_results WHERE name = 'newest'"
        ).fetchone()
        assert newest == (40,)


def test_first_load_into_an_empty_table_keeps_the_newest_copy_and_its_children(con) -> None:  # type: ignore[no-untyped-def]
    # an empty target takes the insert-only path: in-batch duplicates still collapse to the
    # newest copy, and only that copy's children land
    later = T0 + dt.timedelta(hours=1)
    counts = db.upsert_latest(
        con,
        "medical.test_results",
        _results(("h", "a", T0, "old"), ("h", "a", later, "new"), ("h", "b", T0, "b")),
        ("human_id", "record_id"),
        children={
            "medical.test_result_components": _components(("h", "a", 0, "c0"), ("h", "b", 0, "d"))
        },
    )
    assert (counts.inserted, counts.updated, counts.unchanged) == (2, 0, 0)
    rows = con.execute("SELECT record_id, name FROM medical.test_results ORDER BY 1").fetchall()
    assert rows == [("a", "new"), ("b", "b")]
    children = con.execute(
        "SELECT record_id, name FROM medical.test_result_components ORDER BY 1"
    ).fetchall()
    assert children == [("a", "c0"), ("b", "d")]


def test_children_of_winning_parents_are_replaced_wholesale(con) -> None:  # type: ignore[no-untyped-def]
    keys = ("human_id", "record_id")
    db.upsert_latest(
        con,
        "medical.test_results",
        _results(("h", "a", T0, "x")),
        keys,
        children={
            "medical.test_result_components": _components(("h", "a", 0, "c0"), ("h", "a", 1, "c1"))
        },
    )
    later = T0 + dt.timedelta(minutes=1)
    db.upsert_latest(
        con,
        "medical.test_results",
        _results(("h", "a", later, "x")),
        keys,
        children={"medical.test_result_components": _components(("h", "a", 0, "only"))},
    )
    assert con.execute("SELECT position, name FROM medical.test_result_components").fetchall() == [
        (0, "only")
    ]
    # a losing (older) parent does not touch the children
    db.upsert_latest(
        con,
        "medical.test_results",
        _results(("h", "a", T0, "x")),
        keys,
        children={"medical.test_result_components": _components(("h", "a", 5, "stale"))},
    )
    assert con.execute("SELECT name FROM medical.test_result_components").fetchall() == [("only",)]


def test_mark_deleted_keeps_the_row(con) -> None:  # type: ignore[no-untyped-def]
    db.upsert_latest(
        con, "medical.test_results", _results(("h", "a", T0, "x")), ("human_id", "record_id")
    )
    gone_at = T0 + dt.timedelta(days=1)
    assert db.mark_deleted(con, "medical.test_results", "h", ["a", "missing"], gone_at) == 1
    assert con.execute("SELECT record_id, deleted_at FROM medical.test_results").fetchall() == [
        ("a", gone_at)
    ]


def test_insert_absent_is_first_write_wins(con) -> None:  # type: ignore[no-untyped-def]
    rows = pa.Table.from_pylist(
        [{"delivery_digest": "d1", "status": "SUCCESS"}, {"delivery_digest": "d1", "status": "X"}]
    )
    assert db.insert_absent(con, "connect.session_responses", rows, ("delivery_digest",)) == 1
    assert db.insert_absent(con, "connect.session_responses", rows, ("delivery_digest",)) == 0
    assert con.execute("SELECT count(*) FROM connect.session_responses").fetchone() == (1,)


def test_hostile_values_are_bound_not_interpolated(con) -> None:  # type: ignore[no-untyped-def]
    hostile = "x'); DROP TABLE medical.test_results;--"
    db.upsert_latest(
        con,
        "medical.test_results",
        _results((hostile, hostile, T0, hostile)),
        ("human_id", "record_id"),
    )
    db.mark_deleted(con, "medical.test_results", hostile, [hostile], T0)
    assert con.execute("SELECT human_id, record_id FROM medical.test_results").fetchall() == [
        (hostile, hostile)
    ]


def test_unknown_table_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown table"):
        db.quoted('medical.x"; DROP TABLE y; --')


def test_lake_chunks_are_atomic_and_readable(tmp_path: Path) -> None:
    data = _results(("h", "a", T0, "x"))
    path = lake.write_chunk(tmp_path, "medical.test_results", data, "run=r1/part-00000")
    assert path == tmp_path / "medical" / "test_results" / "run=r1" / "part-00000.parquet"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    # a writer killed mid-write leaves only a temp file, which readers never match and the next
    # run removes
    (path.parent / "part-00001.parquet.tmp-dead").write_bytes(b"PAR1 partial")
    rows = (
        duckdb.connect()
        .execute("SELECT count(*) FROM read_parquet(?)", [f"{tmp_path}/**/*.parquet"])
        .fetchone()
    )
    assert rows == (1,)
    assert lake.remove_stray_temp_files(tmp_path) == 1
