"""The check evaluation the writing steps run after their commit, on a real DuckDB file: one
key-health scan answers both key checks, only the selected checks are answered, and a check
that cannot be evaluated fails itself with the error's type instead of failing the step."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from sync_pipeline.assets.checks import (
    FRESH,
    LEDGER,
    NON_NULL,
    UNIQUE,
    contained,
    key_results,
    record_results,
    record_specs,
)
from sync_pipeline.warehouse import db

ALLERGIES = dg.AssetKey(["medical", "allergies"])
ITEMS = dg.AssetKey(["ops", "notification_items"])


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    with db.connect(tmp_path / "warehouse.duckdb") as writer:
        writer.execute(
            "INSERT INTO medical.allergies (human_id, record_id) "
            "VALUES ('h', 'r'), ('h', 'r'), ('h', 's'), ('h', NULL)"
        )
    with db.connect(tmp_path / "warehouse.duckdb", read_only=True) as connection:
        yield connection


def _by_key(results: list[dg.AssetCheckResult]) -> dict[str, dg.AssetCheckResult]:
    return {f"{r.asset_key.to_user_string()}:{r.check_name}": r for r in results}


def test_key_checks_of_a_table_with_a_duplicate_and_a_null_key(
    con: duckdb.DuckDBPyConnection,
) -> None:
    selected = {dg.AssetCheckKey(ALLERGIES, UNIQUE), dg.AssetCheckKey(ALLERGIES, NON_NULL)}
    results = _by_key(key_results(con, ["medical.allergies", "ops.notification_items"], selected))
    assert set(results) == {f"medical/allergies:{UNIQUE}", f"medical/allergies:{NON_NULL}"}
    unique, non_null = (
        results[f"medical/allergies:{UNIQUE}"],
        results[f"medical/allergies:{NON_NULL}"],
    )
    assert not unique.passed and unique.severity == dg.AssetCheckSeverity.ERROR
    assert unique.description == "1 key(s) of medical.allergies held by more than one row"
    assert not non_null.passed and non_null.description == "1 row(s) with a NULL key"
    # both from the same scan
    assert unique.metadata == non_null.metadata
    assert unique.metadata["rows"].value == 4
    assert unique.metadata["duplicate_rows"].value == 1


def test_only_selected_checks_are_answered(con: duckdb.DuckDBPyConnection) -> None:
    selected = {dg.AssetCheckKey(ITEMS, NON_NULL)}
    results = key_results(con, ["medical.allergies", "ops.notification_items"], selected)
    assert [(r.asset_key, r.check_name, r.passed) for r in results] == [(ITEMS, NON_NULL, True)]


def test_record_checks_answer_every_selected_record_check(con: duckdb.DuckDBPyConnection) -> None:
    selected = {spec.key for spec in record_specs()}
    now = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    results = _by_key(record_results(con, selected, freshness_hours=26, now=now))
    assert set(results) == {k.to_user_string() for k in selected}
    # nothing loaded yet: the ledger holds, nothing is fresh
    assert results[f"medical/allergies:{LEDGER}"].passed
    assert not results[f"medical/allergies:{FRESH}"].passed
    assert results[f"medical/allergies:{FRESH}"].severity == dg.AssetCheckSeverity.WARN


def test_a_table_that_cannot_be_read_fails_its_own_checks() -> None:
    selected = {dg.AssetCheckKey(ALLERGIES, UNIQUE), dg.AssetCheckKey(ITEMS, UNIQUE)}
    with duckdb.connect() as empty:  # a connection whose catalog lacks medical.allergies
        empty.execute("CREATE SCHEMA ops")
        empty.execute("CREATE TABLE ops.notification_items (notification_id TEXT)")
        empty.execute("INSERT INTO ops.notification_items VALUES ('n1'), ('n2')")
        results = _by_key(
            key_results(empty, ["medical.allergies", "ops.notification_items"], selected)
        )
    failed = results[f"medical/allergies:{UNIQUE}"]
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
    assert failed.description == "could not read medical.allergies: CatalogException"
    # the other table is still judged
    assert results[f"ops/notification_items:{UNIQUE}"].passed


def test_contained_turns_an_exception_into_failed_checks() -> None:
    checks = [dg.AssetCheckKey(ALLERGIES, UNIQUE), dg.AssetCheckKey(ITEMS, NON_NULL)]

    def explode() -> list[dg.AssetCheckResult]:
        raise KeyError("a value that must not be shown")

    results = contained(checks, explode)
    assert [(r.asset_key, r.check_name, r.passed) for r in results] == [
        (ALLERGIES, UNIQUE, False),
        (ITEMS, NON_NULL, False),
    ]
    assert all(r.description == "could not read the check's tables: KeyError" for r in results)
    assert "must not be shown" not in repr(results)
