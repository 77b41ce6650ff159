"""The incremental analytics build against a full rebuild, on a real DuckDB file: after every
kind of change the build can see (a new record, a changed one, a deletion, a new user, a sync,
a failure, a token refusal, a new Connect session, a second app user of a human, a data type
new to a source, a new mapping, a new day) the tables the incremental build leaves are the
ones a full rebuild makes, and only the users concerned were rebuilt."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from sync_pipeline.analytics.mapping import ObservationMapping, load_mapping
from sync_pipeline.tables.analytics import COVERAGE, LATEST, OBSERVATIONS, STATE, UNMAPPED
from sync_pipeline.warehouse import analytics, db
from sync_pipeline_tests.analytics.warehouse import (
    HUMAN_ID,
    fixture_records,
    fixture_warehouse,
    load,
)

OTHER = "fedcba9876543210fedcba9876543210"
THIRD = "0" * 32
# connected by Connect sessions, nothing landed from it until "new data type"
SOURCE = "5d41b6c8e2f04a7b9c3d1e32"
TODAY = dt.date(2026, 11, 30)
NOW = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
TABLES = (OBSERVATIONS, LATEST, COVERAGE, UNMAPPED)
# the columns of ops.analytics_state that coverage's change detection added
COVERAGE_STATE = (
    "landed_fingerprint",
    "connection_fingerprint",
    "status_fingerprint",
    "types_fingerprint",
    "coverage_through",
)


def _at(days: int) -> dt.datetime:
    return NOW + dt.timedelta(days=days)


def _stamp(at: dt.datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _snapshot(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[Any, ...]]]:
    return {t: con.execute(f"SELECT * FROM {db.quoted(t)} ORDER BY ALL").fetchall() for t in TABLES}


def _full_rebuild(path: Path, mapping: ObservationMapping, today: dt.date) -> dict[str, Any]:
    """The tables a full rebuild makes of the same records (on a copy: the incremental
    warehouse goes on from its own state)."""
    copy = path.with_name("full.duckdb")
    shutil.copy(path, copy)
    with db.connect(copy) as con:
        analytics.build_analytics(con, mapping, today=today, now=NOW, full=True)
        return _snapshot(con)


def _weight(record_id: str, *, created: dt.datetime) -> dict[str, Any]:
    """A weight from the fixture's source (which every user has weights from already)."""
    record = fixture_records("weight/readings")[0]
    record.update(id=record_id, createdAt=_stamp(created), updatedAt=_stamp(created))
    return record


def _append(con: duckdb.DuckDBPyConnection, table: str, rows: list[dict[str, Any]]) -> None:
    db.append(con, table, pa.Table.from_pylist(rows))


def _connect_state(con: duckdb.DuckDBPyConnection) -> None:
    """Both users connected to SOURCE, synced, seen by a Connect session."""
    _append(
        con,
        "connect.connection_history",
        [
            {"human_id": h, "source_id": SOURCE, "source_name": "Withings", "valid_from": _at(-20)}
            for h in (HUMAN_ID, OTHER)
        ],
    )
    _append(
        con,
        "connect.app_users",
        [
            {
                "client_user_id": c,
                "human_id": h,
                "last_seen_at": _at(-20),
                "reconnected_at": _at(-20),
            }
            for c, h in (("a", HUMAN_ID), ("b", OTHER))
        ],
    )
    _append(
        con,
        "ops.sync_state",
        [
            {"human_id": h, "endpoint": "weight/readings", "last_synced_at": _at(-1)}
            for h in (HUMAN_ID, OTHER)
        ],
    )


def _new_record(con: duckdb.DuckDBPyConnection) -> None:
    load(con, "weight/readings", [_weight("1" * 24, created=_at(-3))], HUMAN_ID)


def _changed_record(con: duckdb.DuckDBPyConnection) -> None:
    vitals = fixture_records("medical/vitals")[:1]
    vitals[0]["updatedAt"] = "2024-05-01T00:00:00.000Z"
    vitals[0]["results"][0]["value"] = 151
    load(con, "medical/vitals", vitals, OTHER)


def _deleted_record(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("BEGIN TRANSACTION")
    db.mark_deleted(con, "wellness.weight", HUMAN_ID, ["1" * 24], NOW)
    con.execute("COMMIT")


def _new_user(con: duckdb.DuckDBPyConnection) -> None:
    load(con, "weight/readings", [_weight("2" * 24, created=_at(-2))], THIRD)


def _synced(con: duckdb.DuckDBPyConnection) -> None:
    # what a catch-up with nothing new leaves: only the user's last sync moves
    db.upsert_by_key(
        con,
        "ops.sync_state",
        pa.Table.from_pylist(
            [{"human_id": OTHER, "endpoint": "weight/readings", "last_synced_at": NOW}]
        ),
        ("human_id", "endpoint"),
    )


def _failed(con: duckdb.DuckDBPyConnection) -> None:
    _append(
        con,
        "ops.sync_failures",
        [{"human_id": OTHER, "endpoint": "weight/readings", "failed_at": _at(0)}],
    )


def _refused(con: duckdb.DuckDBPyConnection) -> None:
    _append(con, "connect.token_refusals", [{"human_id": HUMAN_ID, "refused_at": _at(-5)}])


def _new_session(con: duckdb.DuckDBPyConnection) -> None:
    # a Connect session closed the first user's connection and opened another source; the
    # upstream's /sources snapshot says since when that one has been connected
    con.execute(
        "UPDATE connect.connection_history SET valid_to = ? WHERE human_id = ?",
        [_at(-4), HUMAN_ID],
    )
    other_source = "6" * 24
    _append(
        con,
        "connect.connection_history",
        [{"human_id": HUMAN_ID, "source_id": other_source, "valid_from": _at(-4)}],
    )
    raw = f'{{"id": "{other_source}", "name": "Fitbit"}}'
    _append(
        con,
        "connect.source_status",
        [{"human_id": HUMAN_ID, "snapshot_at": NOW, "connected_since": _at(-9), "raw": raw}],
    )


def _second_app_user(con: duckdb.DuckDBPyConnection) -> None:
    # an app user of the same human: connect.users has two rows for HUMAN_ID now
    _append(
        con,
        "connect.app_users",
        [{"client_user_id": "c", "human_id": HUMAN_ID, "last_seen_at": _at(-1)}],
    )


def _new_data_type(con: duckdb.DuckDBPyConnection) -> None:
    # the third user's height from SOURCE: every user connected to SOURCE gains its rows
    height = fixture_records("height/readings")[0]
    height.update(id="3" * 24, source=SOURCE, createdAt=_stamp(_at(-1)), updatedAt=_stamp(_at(-1)))
    load(con, "height/readings", [height], THIRD)


CHANGES = {
    "new record": (_new_record, {HUMAN_ID}, {HUMAN_ID}),
    "changed record": (_changed_record, {OTHER}, set()),
    "deleted record": (_deleted_record, {HUMAN_ID}, {HUMAN_ID}),
    "new user": (_new_user, {THIRD}, {THIRD}),
    "sync": (_synced, set(), {OTHER}),
    "sync failure": (_failed, set(), {OTHER}),
    "token refusal": (_refused, set(), {HUMAN_ID}),
    "new data type": (_new_data_type, {THIRD}, {HUMAN_ID, OTHER, THIRD}),
    "new Connect session": (_new_session, set(), {HUMAN_ID}),
    "second app user": (_second_app_user, set(), {HUMAN_ID}),
}


_TICK = {change: dt.timedelta(seconds=i + 1) for i, change in enumerate(CHANGES)}


@pytest.mark.parametrize("threshold", [analytics.LANDED_FILTER_USERS, 0])
def test_every_kind_of_change_equals_a_full_rebuild(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threshold: int
) -> None:
    # threshold 0: every change takes the whole-table path; the default: the per-user filter
    monkeypatch.setattr(analytics, "LANDED_FILTER_USERS", threshold)
    mapping = load_mapping()
    path = fixture_warehouse(tmp_path / "warehouse.duckdb", human_ids=(HUMAN_ID, OTHER))
    with db.connect(path) as con:
        _connect_state(con)
        first = analytics.build_analytics(con, mapping, today=TODAY, now=NOW)
        assert (first.users_rebuilt, first.coverage_users_rebuilt) == (2, 2)
    assert _full_rebuild(path, mapping, TODAY) == _incremental(path)

    for change, (apply, observed, covered) in CHANGES.items():
        at = NOW + _TICK[change]
        with db.connect(path) as con:
            apply(con)
            counts = analytics.build_analytics(con, mapping, today=TODAY, now=at)
            rebuilt = _rebuilt_at(con, at)
        assert (counts.users_rebuilt, counts.coverage_users_rebuilt) == (
            len(observed),
            len(covered),
        ), change
        assert rebuilt == observed | covered, change
        assert _incremental(path) == _full_rebuild(path, mapping, TODAY), change

    with db.connect(path, read_only=True) as con:
        # two app users of one human do not repeat the human's coverage rows
        assert con.execute(
            f"SELECT count(*) = count(DISTINCT (human_id, source_id, data_type, day)) "
            f"FROM {db.quoted(COVERAGE)}"
        ).fetchall() == [(True,)]

    # a mapping with one name less (and so a new version) rebuilds everyone's observations
    names = mapping.names
    fewer = dataclasses.replace(
        mapping,
        names=names.filter(pc.not_equal(names.column("name"), names.column("name")[0])),
        version=mapping.version + "-next",
    )
    with db.connect(path) as con:
        counts = analytics.build_analytics(con, fewer, today=TODAY, now=NOW)
    assert (counts.users_rebuilt, counts.coverage_users_rebuilt) == (3, 0)
    assert _incremental(path) == _full_rebuild(path, fewer, TODAY)

    # the next day every user's coverage grows a row per source and type
    tomorrow = TODAY + dt.timedelta(days=1)
    with db.connect(path) as con:
        counts = analytics.build_analytics(con, fewer, today=tomorrow, now=NOW)
    assert (counts.users_rebuilt, counts.coverage_users_rebuilt) == (0, 3)
    assert _incremental(path) == _full_rebuild(path, fewer, tomorrow)


def _incremental(path: Path) -> dict[str, Any]:
    with db.connect(path, read_only=True) as con:
        return _snapshot(con)


def _rebuilt_at(con: duckdb.DuckDBPyConnection, at: dt.datetime) -> set[str]:
    """The users whose state row the build at `at` rewrote."""
    rows = con.execute(
        f"SELECT human_id FROM {db.quoted(STATE)} WHERE built_at = ?", [at]
    ).fetchall()
    return {str(h) for (h,) in rows}


def test_nothing_changed_writes_nothing(tmp_path: Path) -> None:
    mapping = load_mapping()
    path = fixture_warehouse(tmp_path / "warehouse.duckdb", human_ids=(HUMAN_ID, OTHER))
    with db.connect(path) as con:
        _connect_state(con)
        analytics.build_analytics(con, mapping, today=TODAY, now=NOW)
    before = path.read_bytes()
    with db.connect(path) as con:
        counts = analytics.build_analytics(con, mapping, today=TODAY, now=_at(1))
    assert (counts.users_rebuilt, counts.coverage_users_rebuilt) == (0, 0)
    assert path.read_bytes() == before


def test_an_existing_warehouse_gains_the_state_columns_and_rebuilds_coverage_once(
    tmp_path: Path,
) -> None:
    # a warehouse built before the coverage fingerprints existed: its state table lacks them
    mapping = load_mapping()
    path = fixture_warehouse(tmp_path / "warehouse.duckdb", human_ids=(HUMAN_ID, OTHER))
    with db.connect(path) as con:
        _connect_state(con)
        analytics.build_analytics(con, mapping, today=TODAY, now=NOW)
        for column in COVERAGE_STATE:
            con.execute(f"ALTER TABLE {db.quoted(STATE)} DROP COLUMN {column}")
    with db.connect(path) as con:  # ensure_tables adds the columns back, empty
        counts = analytics.build_analytics(con, mapping, today=TODAY, now=NOW)
        assert (counts.users_rebuilt, counts.coverage_users_rebuilt) == (0, 2)
        counts = analytics.build_analytics(con, mapping, today=TODAY, now=NOW)
        assert (counts.users_rebuilt, counts.coverage_users_rebuilt) == (0, 0)
    assert _incremental(path) == _full_rebuild(path, mapping, TODAY)
