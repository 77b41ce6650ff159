"""The analytics build on the real fixture records (the upstream's recorded responses), loaded
through the real normalisers into a real DuckDB file: pinned rows, conversions, sentinels,
unmapped names, incremental = full, and the checks' queries."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from sync_pipeline.analytics.mapping import load_mapping
from sync_pipeline.tables.analytics import ANALYTICS_TABLES, STATE
from sync_pipeline.upstream.endpoints import READING_TYPES
from sync_pipeline.warehouse import analytics, db
from sync_pipeline_tests.analytics.warehouse import (
    HUMAN_ID,
    fixture_records,
    fixture_warehouse,
    load,
)

MAPPING = load_mapping()
TODAY = dt.date(2026, 11, 30)
NOW = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
OTHER = "fedcba9876543210fedcba9876543210"
COLUMNS = (
    "category, code, code_system, display, value_numeric, value_text, unit, source_name, "
    "source_value, source_unit, source_code, mapping, observed_at"
)


def _build(con: duckdb.DuckDBPyConnection, full: bool = False) -> analytics.BuildCounts:
    return analytics.build_analytics(con, MAPPING, today=TODAY, now=NOW, full=full)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = fixture_warehouse(tmp_path_factory.mktemp("analytics") / "warehouse.duckdb")
    with db.connect(path) as con:
        _build(con)
    return path


@pytest.fixture
def con(built: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    with db.connect(built, read_only=True) as connection:
        yield connection


def _row(
    con: duckdb.DuckDBPyConnection, table: str, record_id: str, position: int
) -> dict[str, Any]:
    rows = con.execute(
        f"SELECT {COLUMNS} FROM analytics.observations "
        "WHERE record_table = ? AND record_id = ? AND position = ?",
        [table, record_id, position],
    ).fetchall()
    assert len(rows) == 1, rows
    return dict(zip([c.strip() for c in COLUMNS.split(",")], rows[0], strict=True))


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("table", "record_id", "position", "expected"),
    [
        pytest.param(
            "medical.vital_results",
            "5e6674695ee4bff601a2f7a4",
            0,
            {
                "category": "vital",
                "code": "8480-6",
                "code_system": "LOINC",
                "display": "Systolic blood pressure",
                "value_numeric": 136.0,
                "unit": "mm[Hg]",
                "source_value": "136",
                "source_unit": "mm[Hg]",
                "source_code": "8480-6",
                "mapping": "source_code",
                "observed_at": _utc("2019-12-31T13:53:00"),
            },
            id="systolic-vital",
        ),
        pytest.param(
            "medical.vital_results",
            "5e6674695ee4bff601a2f7a4",
            2,
            # the fixture's heart-rate code names no code system, so the name maps it
            {"code": "8867-4", "value_numeric": 61.0, "unit": "/min", "mapping": "by_name"},
            id="heart-rate-vital-by-name",
        ),
        pytest.param(
            "wellness.height",
            "543437119af644ab4b30199d",
            0,
            {
                "category": "device",
                "code": "8302-2",
                "display": "Body height",
                "value_numeric": 172.7,
                "unit": "cm",
                "source_name": "height",
                "source_value": "1727",
                "source_unit": "mm",
                "source_code": None,
                "mapping": "by_endpoint",
                "observed_at": _utc("2014-10-07T18:54:59"),
            },
            id="height-mm-to-cm",
        ),
        pytest.param(
            "wellness.blood_oxygen",
            "54296ef2ff9b2c4d2efd6b5a",
            0,
            {"code": "59408-5", "value_numeric": 98.0, "unit": "%", "source_unit": "SpO2"},
            id="spo2",
        ),
        pytest.param(
            "wellness.body_fat",
            "542d47be8c8e5ac03a204dd3",
            0,
            {"code": "41982-0", "value_numeric": 16.321, "unit": "%", "source_unit": "percent"},
            id="body-fat-percent",
        ),
        pytest.param(
            "wellness.blood_pressure",
            "542d392c0fae797f0202d945",
            2,
            {"code": "8867-4", "value_numeric": 77.0, "unit": "/min", "source_unit": None},
            id="blood-pressure-heart-rate",
        ),
        pytest.param(
            "wellness.blood_glucose",
            "53d2137609d003f717000360",
            0,
            {"code": "2339-0", "value_numeric": 500.0, "unit": "mg/dL"},
            id="device-glucose-mass",
        ),
        pytest.param(
            "medical.test_result_components",
            "5e6674605ee4bf3295a2f5db",
            8,
            {
                "category": "lab",
                "code": "2345-7",
                "display": "Glucose [Mass/volume] in Serum or Plasma",
                "value_numeric": 83.0,
                "unit": "mg/dL",
                "source_name": "Glucose",
                "source_value": "83",
                "source_code": "2345-7",
                "mapping": "source_code",
                "observed_at": _utc("2019-11-12T12:33:00"),
            },
            id="lab-glucose-loinc",
        ),
        pytest.param(
            "medical.test_result_components",
            "5e6674655ee4bf2c39a2f688",
            3,
            # no `unit`: the unit is written after the number in the value
            {"code": "777-3", "value_numeric": 207.0, "unit": "10*3/uL", "source_unit": "THO/uL"},
            id="lab-inline-unit",
        ),
    ],
)
def test_pinned_rows_from_the_real_fixtures(
    con: duckdb.DuckDBPyConnection,
    table: str,
    record_id: str,
    position: int,
    expected: dict[str, Any],
) -> None:
    row = _row(con, table, record_id, position)
    assert {k: row[k] for k in expected} == expected


def test_every_measured_value_becomes_one_row_with_lineage(con: duckdb.DuckDBPyConnection) -> None:
    def count(sql: str) -> int:
        return int(con.execute(sql).fetchall()[0][0])

    expected = (
        count("SELECT count(*) FROM medical.vital_results")
        + count("SELECT count(*) FROM medical.test_result_components")
        + sum(count(f"SELECT count(*) FROM wellness.{kind}") for kind in READING_TYPES)
        + 2 * count("SELECT count(*) FROM wellness.blood_pressure")
    )
    assert count("SELECT count(*) FROM analytics.observations") == expected
    assert analytics.untraceable_observations(con) == 0
    assert analytics.coded_values_without_ucum(con, MAPPING.ucum_units()) == 0
    assert analytics.out_of_bounds(con, MAPPING.loinc) == {}
    # every vital and device reading is coded and in UCUM; labs that are numbers have units
    assert (
        count(
            "SELECT count(*) FROM analytics.observations WHERE category IN ('vital', 'device') "
            "AND (code IS NULL OR unit IS NULL OR value_numeric IS NULL)"
        )
        == 0
    )
    assert count("SELECT count(DISTINCT code) FROM analytics.observations") >= 20


def test_unmapped_codes_lists_only_lab_names_the_mapping_cannot_code(
    con: duckdb.DuckDBPyConnection,
) -> None:
    rows = con.execute(
        "SELECT kind, record_table, value, observations, example_record_id FROM ops.unmapped_codes"
    ).fetchall()
    assert rows
    assert {(kind, table) for kind, table, *_ in rows} == {
        ("name", "medical.test_result_components")
    }
    by_value = {value: (n, example) for _, _, value, n, example in rows}
    # Epic-coded echo measurements and report text carry no LOINC code
    assert "AORTIC ROOT DIAMETER" in by_value
    assert by_value["Narrative"][0] == 4
    example = by_value["AORTIC ROOT DIAMETER"][1]
    assert con.execute(
        "SELECT count(*) FROM medical.test_result_components WHERE record_id = ? "
        "AND name = 'AORTIC ROOT DIAMETER'",
        [example],
    ).fetchall() == [(1,)]


def test_latest_observation_is_the_newest_per_user_and_code(
    con: duckdb.DuckDBPyConnection,
) -> None:
    newest = con.execute(
        "SELECT max(observed_at) FROM analytics.observations WHERE code = '8480-6'"
    ).fetchall()[0][0]
    rows = con.execute(
        "SELECT human_id, observed_at, unit, record_table FROM analytics.latest_observations "
        "WHERE code = '8480-6'"
    ).fetchall()
    assert rows == [(HUMAN_ID, newest, "mm[Hg]", "medical.vital_results")]
    keys = con.execute(
        "SELECT count(*), count(DISTINCT (human_id, code)) FROM analytics.latest_observations"
    ).fetchall()[0]
    assert keys[0] == keys[1] > 20


def test_descriptions_reach_duckdb_comments(con: duckdb.DuckDBPyConnection) -> None:
    comment = con.execute(
        "SELECT comment FROM duckdb_tables() "
        "WHERE schema_name = 'analytics' AND table_name = 'observations'"
    ).fetchall()[0][0]
    assert comment.startswith("One row per measured value")
    column = con.execute(
        "SELECT comment FROM duckdb_columns() WHERE schema_name = 'analytics' "
        "AND table_name = 'observations' AND column_name = 'mapping'"
    ).fetchall()[0][0]
    assert "by_endpoint" in column


# --- variants of the fixtures: conversions, sentinels, unknown units --------------------------


def _variant(path: str, record_id: str, **changes: Any) -> dict[str, Any]:
    record = fixture_records(path)[0]
    record.update(id=record_id, **changes)
    return record


@pytest.fixture
def variants(tmp_path: Path) -> Path:
    path = tmp_path / "warehouse.duckdb"
    with db.connect(path) as con:
        load(
            con,
            "blood_pressure/readings",
            [_variant("blood_pressure/readings", "a" * 24, heartRate=0)],
        )
        load(
            con,
            "blood_glucose/readings",
            [_variant("blood_glucose/readings", "b" * 24, value=5.5, unit="mmol/L")],
        )
        load(con, "weight/readings", [_variant("weight/readings", "c" * 24, value=150, unit="lb")])
        load(
            con, "height/readings", [_variant("height/readings", "d" * 24, value=3, unit="furlong")]
        )
        load(con, "height/readings", [_variant("height/readings", "e" * 24, value=67, unit="in")])
        _build(con)
    return path


@pytest.mark.parametrize(
    ("table", "record_id", "position", "expected"),
    [
        pytest.param(
            "wellness.blood_pressure",
            "a" * 24,
            2,
            {"code": "8867-4", "value_numeric": None, "value_text": None, "source_value": "0"},
            id="heart-rate-0-is-not-measured",
        ),
        pytest.param(
            "wellness.blood_pressure",
            "a" * 24,
            0,
            {"code": "8480-6", "value_numeric": 119.0},
            id="pressures-of-that-reading-stay",
        ),
        pytest.param(
            "wellness.blood_glucose",
            "b" * 24,
            0,
            {"code": "15074-8", "value_numeric": 5.5, "unit": "mmol/L"},
            id="glucose-mmol-keeps-unit-and-gets-its-code",
        ),
        pytest.param(
            "wellness.weight",
            "c" * 24,
            0,
            {"value_numeric": 68.0388555, "unit": "kg", "source_unit": "lb", "source_value": "150"},
            id="lb-to-kg",
        ),
        pytest.param(
            "wellness.height",
            "e" * 24,
            0,
            {"value_numeric": 170.18, "unit": "cm", "source_unit": "in"},
            id="in-to-cm",
        ),
        pytest.param(
            "wellness.height",
            "d" * 24,
            0,
            {"code": "8302-2", "value_numeric": None, "value_text": "3", "unit": None},
            id="unknown-unit-keeps-the-text",
        ),
    ],
)
def test_conversions_sentinels_and_unknown_units(
    variants: Path, table: str, record_id: str, position: int, expected: dict[str, Any]
) -> None:
    with db.connect(variants, read_only=True) as con:
        row = _row(con, table, record_id, position)
    assert {k: row[k] for k in expected} == expected


def test_an_unknown_unit_is_listed_and_never_passes_as_ucum(variants: Path) -> None:
    with db.connect(variants, read_only=True) as con:
        rows = con.execute(
            "SELECT kind, record_table, value, observations, example_record_id "
            "FROM ops.unmapped_codes"
        ).fetchall()
        assert rows == [("unit", "wellness.height", "furlong", 1, "d" * 24)]
        assert analytics.coded_values_without_ucum(con, MAPPING.ucum_units()) == 0


# --- incremental = full -----------------------------------------------------------------------


def _snapshot(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for declared in ANALYTICS_TABLES:
        table = declared.name
        columns = [c for c in declared.column_names if c != "built_at"]
        order = ", ".join(declared.key)
        out[table] = con.execute(
            f"SELECT {', '.join(columns)} FROM {db.quoted(table)} ORDER BY {order}"
        ).fetchall()
    return out


def test_incremental_builds_equal_a_full_rebuild(tmp_path: Path) -> None:
    path = fixture_warehouse(tmp_path / "warehouse.duckdb", human_ids=(HUMAN_ID, OTHER))
    with db.connect(path) as con:
        assert _build(con).users_rebuilt == 2
        assert _build(con).users_rebuilt == 0  # nothing changed, nothing rebuilt
        # a newer version of one vitals record for the first user ...
        vitals = fixture_records("medical/vitals")[:1]
        vitals[0]["updatedAt"] = "2024-05-01T00:00:00.000Z"
        vitals[0]["results"][0]["value"] = 151
        load(con, "medical/vitals", vitals)
        # ... a deleted reading for the second ...
        con.execute("BEGIN TRANSACTION")
        db.mark_deleted(con, "wellness.height", OTHER, ["543437119af644ab4b30199d"], NOW)
        con.execute("COMMIT")
        # ... and a third user with one weight
        third = "0" * 32
        load(con, "weight/readings", fixture_records("weight/readings"), third)
        assert _build(con).users_rebuilt == 3
        incremental = _snapshot(con)
        _build(con, full=True)
        assert _snapshot(con) == incremental

    observations = incremental["analytics.observations"]
    assert not any(row[1] == OTHER and row[-3] == "wellness.height" for row in observations), (
        "a deleted record gives no observations"
    )
    with db.connect(path, read_only=True) as con:
        assert con.execute(
            "SELECT value_numeric FROM analytics.observations WHERE human_id = ? "
            "AND record_id = ? AND position = 0",
            [HUMAN_ID, vitals[0]["id"]],
        ).fetchall() == [(151.0,)]
        state = con.execute(f"SELECT count(*) FROM {db.quoted(STATE)}").fetchall()
        assert state == [(3,)]


def test_a_new_mapping_version_rebuilds_everyone(tmp_path: Path) -> None:
    path = fixture_warehouse(tmp_path / "warehouse.duckdb", human_ids=(HUMAN_ID, OTHER))
    with db.connect(path) as con:
        _build(con)
        con.execute(f"UPDATE {db.quoted(STATE)} SET mapping_version = 'older'")
        assert _build(con).users_rebuilt == 2


# --- the checks' queries can fail -------------------------------------------------------------


def test_checks_see_broken_lineage_units_and_bounds(tmp_path: Path) -> None:
    path = fixture_warehouse(tmp_path / "warehouse.duckdb")
    with db.connect(path) as con:
        load(con, "weight/readings", [_variant("weight/readings", "f" * 24, value=900)])
        _build(con)
        assert analytics.out_of_bounds(con, MAPPING.loinc) == {"29463-7": 1}
        con.execute(
            "DELETE FROM medical.test_result_components "
            "WHERE record_id = '5e6674605ee4bf3295a2f5db' AND position = 8"
        )
        assert analytics.untraceable_observations(con) == 1
        con.execute(
            "UPDATE analytics.observations SET unit = 'mmHg' WHERE code = '8480-6' "
            "AND record_id = '5e6674695ee4bff601a2f7a4'"
        )
        assert analytics.coded_values_without_ucum(con, MAPPING.ucum_units()) == 1


# --- coverage ---------------------------------------------------------------------------------

SOURCE = "5d41b6c8e2f04a7b9c3d1e32"  # Withings
D0 = dt.date(2026, 11, 1)


def _at(day: int, hour: int = 12) -> dt.datetime:
    return dt.datetime.combine(D0 + dt.timedelta(days=day), dt.time(hour), tzinfo=dt.UTC)


def test_coverage_explains_every_empty_day(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    reconnecting = "1" * 32
    with db.connect(path) as con:
        weight = _variant("weight/readings", "9" * 24, source=SOURCE)
        weight["createdAt"] = weight["updatedAt"] = _at(1).isoformat().replace("+00:00", "Z")
        load(con, "weight/readings", [weight])
        history = [
            # connected days 0-4, disconnected 5-9, connected again from day 10
            (HUMAN_ID, _at(0), _at(5, 0)),
            (HUMAN_ID, _at(10), None),
            (reconnecting, _at(0), None),
        ]
        db.append(
            con,
            "connect.connection_history",
            pa.Table.from_pylist(
                [
                    {
                        "human_id": h,
                        "source_id": SOURCE,
                        "source_name": "Withings",
                        "valid_from": f,
                        "valid_to": t,
                    }
                    for h, f, t in history
                ]
            ),
        )
        db.append(
            con,
            "connect.users",
            pa.Table.from_pylist(
                [
                    {
                        "client_user_id": "a",
                        "human_id": HUMAN_ID,
                        "needs_reconnect": False,
                        "last_seen_at": _at(10),
                    },
                    {
                        "client_user_id": "b",
                        "human_id": reconnecting,
                        "needs_reconnect": True,
                        "last_seen_at": _at(0),
                    },
                ]
            ),
        )
        db.append(
            con,
            "connect.token_refusals",
            pa.Table.from_pylist(
                [{"human_id": reconnecting, "refused_at": _at(12), "status": 403}]
            ),
        )
        db.append(
            con,
            "ops.sync_state",
            pa.Table.from_pylist(
                [{"human_id": HUMAN_ID, "endpoint": "weight/readings", "last_synced_at": _at(14)}]
            ),
        )
        db.append(
            con,
            "ops.sync_failures",
            pa.Table.from_pylist(
                [
                    {"human_id": HUMAN_ID, "endpoint": "weight/readings", "failed_at": _at(3)},
                    {"human_id": HUMAN_ID, "endpoint": "weight/readings", "failed_at": _at(16)},
                    {"human_id": HUMAN_ID, "endpoint": "weight/readings", "failed_at": _at(17)},
                ]
            ),
        )
        analytics.build_analytics(
            con, MAPPING, today=D0 + dt.timedelta(days=19), now=NOW, full=True
        )
        rows = con.execute(
            "SELECT human_id, day, connected, records, reason, needs_reconnect, last_synced_at, "
            "last_failed_at, source_name FROM analytics.coverage "
            "WHERE data_type = 'wellness.weight' ORDER BY human_id, day"
        ).fetchall()
    mine = {r[1]: r for r in rows if r[0] == HUMAN_ID}
    theirs = {r[1]: r for r in rows if r[0] == reconnecting}
    assert min(mine) == D0 and max(mine) == D0 + dt.timedelta(days=19) and len(mine) == 20

    def reason(rows: dict[dt.date, tuple[Any, ...]], day: int) -> Any:
        return rows[D0 + dt.timedelta(days=day)][4]

    assert mine[D0 + dt.timedelta(days=1)][2:5] == (True, 1, None)
    assert [reason(mine, d) for d in (0, 4, 5, 9, 10, 15, 16, 19)] == [
        "no_data",
        "no_data",
        "not_connected",
        "not_connected",
        "no_data",
        "no_data",  # synced fine on day 14; failing only from day 16
        "sync_failing",
        "sync_failing",
    ]
    assert mine[D0][6:9] == (_at(14), _at(17), "Withings")
    assert [reason(theirs, d) for d in (0, 11, 12, 19)] == [
        "no_data",
        "no_data",
        "needs_reconnect",
        "needs_reconnect",
    ]
    assert theirs[D0][5] is True


def test_coverage_counts_the_upstreams_connected_since_as_connected(tmp_path: Path) -> None:
    # a Connect session told us about the connection on day 2, but the upstream's /sources
    # snapshot says it has been connected since day -3: those days are not "not connected"
    path = tmp_path / "warehouse.duckdb"
    with db.connect(path) as con:
        weight = _variant("weight/readings", "9" * 24, source=SOURCE)
        weight["createdAt"] = weight["updatedAt"] = _at(1).isoformat().replace("+00:00", "Z")
        load(con, "weight/readings", [weight])
        db.append(
            con,
            "connect.connection_history",
            pa.Table.from_pylist(
                [{"human_id": HUMAN_ID, "source_id": SOURCE, "valid_from": _at(2)}]
            ),
        )
        raw = f'{{"id": "{SOURCE}", "name": "Withings", "connectedSince": "..."}}'
        db.append(
            con,
            "connect.source_status",
            pa.Table.from_pylist(
                [
                    {
                        "human_id": HUMAN_ID,
                        "snapshot_at": _at(2),
                        "source": "withings",
                        "connected_since": _at(-3),
                        "raw": raw,
                    }
                ]
            ),
        )
        analytics.build_analytics(con, MAPPING, today=D0 + dt.timedelta(days=4), now=NOW)
        rows = con.execute(
            "SELECT day, connected, records, reason, source_name FROM analytics.coverage "
            "WHERE data_type = 'wellness.weight' ORDER BY day"
        ).fetchall()
    assert [(r[0] - D0).days for r in rows] == list(range(-3, 5))
    assert all(r[1] for r in rows)
    assert [r[3] for r in rows] == ["no_data"] * 4 + [None] + ["no_data"] * 3
    assert {r[4] for r in rows} == {"Withings"}
