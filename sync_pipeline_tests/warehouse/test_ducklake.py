"""The warehouse as a DuckLake (SYNC_WAREHOUSE=ducklake:…), with a local catalog file: the
setting, the no-op reopen, a real commit conflict retried, time travel, encrypted data files.
The PostgreSQL catalog with concurrent worker processes is distributed/test_ducklake.py."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import replace
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
import yaml

from sync_pipeline import deploy
from sync_pipeline.settings import SettingsError, load_settings
from sync_pipeline.tables.registry import schema_of
from sync_pipeline.warehouse import db
from sync_pipeline.warehouse.conflicts import CONFLICT_ATTEMPTS, is_conflict, retrying
from sync_pipeline.warehouse.location import WarehouseLocation, pool_limit
from sync_pipeline.warehouse.maintenance import maintain_lake
from sync_pipeline_tests.resources import settings_for

T0 = dt.datetime(2020, 3, 9, 16, 52, tzinfo=dt.UTC)
PASSWORD = "s3cr3t-Catalog-pw"
PHI = "Plasty-Hemoglobin-4711"


def _lake(tmp_path: Path) -> WarehouseLocation:
    settings = load_settings(
        {"SYNC_DATA_DIR": str(tmp_path), "SYNC_WAREHOUSE": f"ducklake:{tmp_path}/c.ducklake"}
    )
    return settings.warehouse


def _snapshots(con: duckdb.DuckDBPyConnection) -> int:
    return int(con.execute("SELECT max(snapshot_id) FROM warehouse.snapshots()").fetchall()[0][0])


# --- the setting --------------------------------------------------------------------------------


def test_unset_keeps_the_single_file(tmp_path: Path) -> None:
    settings = load_settings({"SYNC_DATA_DIR": str(tmp_path)})
    assert settings.warehouse == WarehouseLocation(path=tmp_path / "warehouse.duckdb")
    assert not settings.warehouse.is_lake and pool_limit({}) == 1


def test_a_local_catalog_keeps_its_data_beside_the_lake(tmp_path: Path) -> None:
    target = _lake(tmp_path)
    assert target.is_lake and not target.many_writers
    assert target.catalog == str(tmp_path / "c.ducklake")
    assert target.data_path == f"{tmp_path}/lake/ducklake/"
    # a DuckDB catalog file takes one writing process: the pool of one slot stays
    assert pool_limit({"SYNC_WAREHOUSE": "ducklake:c.ducklake"}) == 1


def test_a_postgres_catalog_takes_many_writers_and_hides_its_password(tmp_path: Path) -> None:
    raw = f"ducklake:postgres:dbname=lake host=db user=sync password={PASSWORD}"
    settings = load_settings(
        {
            "SYNC_DATA_DIR": str(tmp_path),
            "SYNC_WAREHOUSE": raw,
            "SYNC_LAKE_URL": "s3://bucket/prefix/",
        }
    )
    target = settings.warehouse
    assert target.many_writers and target.data_path == "s3://bucket/prefix/ducklake/"
    assert pool_limit({"SYNC_WAREHOUSE": raw}) == 4  # no pool of one
    assert pool_limit({"SYNC_WAREHOUSE": raw, "SYNC_WAREHOUSE_WRITERS": "8"}) == 8
    for text in (repr(settings), repr(target), str(target), target.shown):
        assert PASSWORD not in text
    assert "dbname=lake" in target.shown and "password=***" in target.shown


@pytest.mark.parametrize(
    ("env", "limit"),
    [
        ({}, 1),
        ({"SYNC_WAREHOUSE": "ducklake:/x/c.ducklake"}, 1),
        ({"SYNC_WAREHOUSE": "ducklake:postgres:dbname=lake"}, 4),
        ({"SYNC_WAREHOUSE": "ducklake:postgres:dbname=lake", "SYNC_WAREHOUSE_WRITERS": "2"}, 2),
    ],
)
@pytest.mark.parametrize("storage", ["sqlite", "postgres"])
def test_the_instance_gives_the_warehouse_pool_one_slot_per_allowed_writer(
    env: dict[str, str], limit: int, storage: str, tmp_path: Path
) -> None:
    pg = {name: "x" for name in deploy.POSTGRES_ENV}
    text = deploy.instance_yaml({**env, **pg, "SYNC_DAGSTER_STORAGE": storage}, tmp_path)
    assert yaml.safe_load(text)["concurrency"]["pools"]["default_limit"] == limit


def test_a_bad_writer_count_is_refused(tmp_path: Path) -> None:
    with pytest.raises(deploy.DeployError, match="SYNC_WAREHOUSE_WRITERS"):
        deploy.instance_yaml(
            {"SYNC_WAREHOUSE": "ducklake:postgres:dbname=l", "SYNC_WAREHOUSE_WRITERS": "0"},
            tmp_path,
        )


@pytest.mark.parametrize(
    "value",
    [
        f"postgres:dbname=lake password={PASSWORD}",  # no ducklake: prefix
        "ducklake:",
        "ducklake:postgres:",
        f"sqlite:password={PASSWORD}",
    ],
)
def test_a_malformed_warehouse_is_refused_without_quoting_a_password(value: str) -> None:
    with pytest.raises(SettingsError, match="SYNC_WAREHOUSE") as caught:
        load_settings({"SYNC_WAREHOUSE": value})
    assert PASSWORD not in str(caught.value)


def test_a_failed_attach_does_not_quote_the_password(tmp_path: Path) -> None:
    target = WarehouseLocation(
        catalog=f"postgres:host=127.0.0.1 port=1 dbname=none password={PASSWORD}",
        data_path=f"{tmp_path}/data/",
    )
    with pytest.raises(duckdb.Error) as caught, db.connect(target):
        pass
    assert PASSWORD not in str(caught.value)


def test_the_warehouse_resource_has_the_settings_location_and_binds_the_catalog_by_name(
    tmp_path: Path,
) -> None:
    import dagster as dg

    from sync_pipeline.resources import WAREHOUSE, WarehouseResource, build_resources

    env = {
        "SYNC_DATA_DIR": str(tmp_path),
        "SYNC_WAREHOUSE": f"ducklake:postgres:dbname=lake password={PASSWORD}",
    }
    settings = load_settings(env)
    built = build_resources(settings)[WAREHOUSE]
    assert isinstance(built, WarehouseResource)
    assert built.location == settings.warehouse  # one type: catalog, data path, key
    assert built.location.data_path == f"{tmp_path}/lake/ducklake/"
    assert PASSWORD not in repr(built)
    # from the environment: the instance stores the variable's name, never the catalog
    bound = build_resources(settings, env)[WAREHOUSE]
    assert isinstance(bound, WarehouseResource) and isinstance(bound.lake, dg.EnvVar)
    assert PASSWORD not in repr(bound) and PASSWORD not in str(bound.model_dump())


# --- one code path, DuckLake semantics -----------------------------------------------------------


def test_reopening_a_current_lake_writes_no_snapshot(tmp_path: Path) -> None:
    target = _lake(tmp_path)
    with db.connect(target) as con:
        first = _snapshots(con)
    with db.connect(target) as con:  # ensure_tables again: tables and views are current
        assert _snapshots(con) == first
    with db.connect(target, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM connect.current_connections").fetchall()


def test_an_earlier_version_reads_the_earlier_values(tmp_path: Path) -> None:
    table = "ops.rejected_upstream_records"
    target = _lake(tmp_path)
    with db.connect(target) as con, db.transaction(con):
        db.upsert_by_key(con, table, _reject("r1", "before"), ("reject_id",))
    with db.connect(target) as con:
        version = _snapshots(con)
        with db.transaction(con):
            db.upsert_by_key(con, table, _reject("r1", "after"), ("reject_id",))
        assert con.execute(f"SELECT raw FROM {db.quoted(table)}").fetchall() == [("after",)]
        earlier = con.execute(
            f"SELECT raw FROM {db.quoted(table)} AT (VERSION => {version})"
        ).fetchall()
        assert earlier == [("before",)]


def test_a_commit_conflict_is_retried_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A real DuckLake conflict: a second connection commits a delete from the same data file
    while the first attempt's transaction is open; its COMMIT fails, the retry wins."""
    table = "ops.rejected_upstream_records"
    target = _lake(tmp_path)
    with db.connect(target) as con:
        with db.transaction(con):
            db.append(con, table, pa.concat_tables([_reject("r1", "a"), _reject("r2", "b")]))
        other = con.cursor()
        other.execute("USE warehouse")
        attempts: list[int] = []

        def work() -> None:
            attempts.append(1)
            with db.transaction(con):
                con.execute(f"DELETE FROM {db.quoted(table)} WHERE reject_id = 'r1'")
                if len(attempts) == 1:  # the concurrent writer commits first, once
                    other.execute("BEGIN")
                    other.execute(f"DELETE FROM {db.quoted(table)} WHERE reject_id = 'r2'")
                    other.execute("COMMIT")

        with caplog.at_level(logging.WARNING, "sync_pipeline.warehouse.conflicts"):
            retrying(work, what="the test's commit")
        assert len(attempts) == 2
        assert con.execute(f"SELECT count(*) FROM {db.quoted(table)}").fetchall() == [(0,)]
    assert any("commit conflict in the test's commit" in r.getMessage() for r in caplog.records)


def test_other_errors_and_endless_conflicts_are_not_retried_forever() -> None:
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise duckdb.CatalogException("no such table")

    with pytest.raises(duckdb.CatalogException):
        retrying(broken, what="x")
    assert len(calls) == 1
    conflict = duckdb.TransactionException("Transaction conflict - attempting to delete")
    assert is_conflict(conflict) and not is_conflict(duckdb.TransactionException("other"))

    def conflicting() -> None:
        calls.append(1)
        raise conflict

    calls.clear()
    import stamina

    with (
        stamina.set_testing(True, attempts=CONFLICT_ATTEMPTS),
        pytest.raises(duckdb.TransactionException),
    ):
        retrying(conflicting, what="x")
    assert len(calls) == CONFLICT_ATTEMPTS


def test_a_key_encrypts_the_lakes_data_files(tmp_path: Path) -> None:
    target = replace(_lake(tmp_path), key="k")
    with db.connect(target) as con, db.transaction(con):
        db.append(con, "ops.rejected_upstream_records", _reject("r1", PHI))
    files = list(Path(str(target.data_path)).rglob("*.parquet"))
    assert files
    assert all(PHI.encode() not in f.read_bytes() for f in files)
    with db.connect(target, read_only=True) as con:
        assert con.execute("SELECT raw FROM ops.rejected_upstream_records").fetchall() == [(PHI,)]


def _reject(reject_id: str, raw: str) -> pa.Table:
    schema = schema_of("ops.rejected_upstream_records")
    values = {f.name: pa.nulls(1, f.type) for f in schema}
    values["reject_id"] = pa.array([reject_id], pa.string())
    values["raw"] = pa.array([raw], schema.field("raw").type)
    return pa.table(values, schema=schema)


# --- maintenance ---------------------------------------------------------------------------------


def test_maintenance_compacts_expires_and_deletes_unreferenced_files(tmp_path: Path) -> None:
    table = "ops.rejected_upstream_records"
    target = _lake(tmp_path)
    with db.connect(target) as con:
        for n in range(4):  # four commits: four small files, four snapshots
            with db.transaction(con):
                db.append(con, table, _reject(f"r{n}", f"v{n}"))
        old = _snapshots(con)
        report = maintain_lake(
            con,
            retention=dt.timedelta(0),
            file_grace=dt.timedelta(0),
            now=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1),
        )
        assert report.files_before == 4 and report.files_after == 1
        assert report.snapshots_expired > 0 and report.files_deleted >= 4
        rows = con.execute(f"SELECT reject_id, raw FROM {db.quoted(table)} ORDER BY 1").fetchall()
        assert rows == [(f"r{n}", f"v{n}") for n in range(4)]  # the data is all still there
        with pytest.raises(duckdb.Error):  # the expired snapshot is gone
            con.execute(f"SELECT * FROM {db.quoted(table)} AT (VERSION => {old - 1})").fetchall()
    on_disk = list(Path(str(target.data_path)).rglob("*.parquet"))
    assert len(on_disk) == 1 + sum(1 for f in on_disk if "rejected" not in str(f))


def test_maintenance_keeps_snapshots_within_the_retention(tmp_path: Path) -> None:
    target = _lake(tmp_path)
    with db.connect(target) as con:
        with db.transaction(con):
            db.append(con, "ops.rejected_upstream_records", _reject("r1", "v1"))
        before = int(con.execute("SELECT count(*) FROM warehouse.snapshots()").fetchall()[0][0])
        report = maintain_lake(con, retention=dt.timedelta(days=7), file_grace=dt.timedelta(0))
        assert report.snapshots_expired == 0
        after = int(con.execute("SELECT count(*) FROM warehouse.snapshots()").fetchall()[0][0])
        assert after >= before


def test_the_maintenance_job_runs_on_a_lake_and_on_the_file(tmp_path: Path) -> None:
    from sync_pipeline.assets.maintenance import lake_maintenance_job
    from sync_pipeline.resources import run_resources

    for warehouse in ("", f"ducklake:{tmp_path}/c.ducklake"):
        settings = settings_for(tmp_path, SYNC_WAREHOUSE=warehouse)
        result = lake_maintenance_job.execute_in_process(resources=run_resources(settings))
        assert result.success
    assert (tmp_path / "c.ducklake").exists()
    assert not (tmp_path / "warehouse.duckdb").exists()  # nothing to maintain: not even opened


def test_the_analytics_build_gives_the_same_tables_in_a_lake(tmp_path: Path) -> None:
    """The analyst layer on the same code path: built in a lake, equal to the file's build."""
    from sync_pipeline_tests.analytics.test_build import NOW, OTHER, _build, _snapshot
    from sync_pipeline_tests.analytics.test_incremental import COVERAGE_STATE
    from sync_pipeline_tests.analytics.warehouse import HUMAN_ID, fixture_warehouse

    users = (HUMAN_ID, OTHER)
    file = fixture_warehouse(tmp_path / "warehouse.duckdb", human_ids=users)
    lake = _lake(tmp_path)
    fixture_warehouse(lake, human_ids=users)  # type: ignore[arg-type]
    synced = pa.Table.from_pylist(
        [{"human_id": OTHER, "endpoint": "weight/readings", "last_synced_at": NOW}]
    )
    want = []
    for target in (file, lake):
        with db.connect(target) as con:
            _build(con)
            want.append(_snapshot(con))
            snapshots = _snapshots(con) if target is lake else 0
            # incremental, nothing changed: nothing rebuilt, nothing written (no new snapshot)
            counts = _build(con)
            assert (counts.users_rebuilt, counts.coverage_users_rebuilt) == (0, 0)
            assert (_snapshots(con) if target is lake else 0) == snapshots
            # one user synced: that user's coverage alone is rebuilt
            db.append(con, "ops.sync_state", synced)
            assert _build(con).coverage_users_rebuilt == 1
            want.append(_snapshot(con))
    assert want[2:] == want[:2]
    # a lake from before the coverage fingerprints: opening a writer adds the columns back
    with db.connect(lake) as con:
        for column in COVERAGE_STATE:
            con.execute(f"ALTER TABLE ops.analytics_state DROP COLUMN {column}")
    with db.connect(lake) as con:
        assert _build(con).coverage_users_rebuilt == 2
        assert _snapshot(con) == want[1]


def test_a_lake_has_the_files_tables_columns_and_types(tmp_path: Path) -> None:
    """Same schema.table names, columns and DuckDB types: the data dictionary rendered from a
    fresh lake is the one rendered from a fresh file."""
    from sync_pipeline.dictionary import render_dictionary

    file = tmp_path / "warehouse.duckdb"
    lake = _lake(tmp_path)
    for target in (file, lake):
        with db.connect(target):
            pass
    assert render_dictionary(lake) == render_dictionary(file)
