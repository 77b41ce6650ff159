"""Every recorded upstream body normalises completely, with the values it really holds."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from sync_pipeline.normalize import NormalizedBatch, normalize_records, to_arrow
from sync_pipeline.normalize.schemas import TABLE_SCHEMAS
from sync_pipeline.upstream.endpoints import BY_PATH, ENDPOINTS

from .fixtures import (
    FIXTURES,
    HUMAN_ID,
    fixture_endpoint,
    load_records,
    record_fixture_files,
)


def normalized(relative: str, path: str | None = None) -> NormalizedBatch:
    endpoint = BY_PATH[path] if path else fixture_endpoint(FIXTURES / relative)
    return normalize_records(endpoint, HUMAN_ID, load_records(relative))


def only_row(frame: pd.DataFrame, **where: Any) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for column, value in where.items():
        mask &= frame[column] == value
    rows = frame[mask.fillna(False)]
    assert len(rows) == 1, f"{where} matched {len(rows)} rows"
    return rows.iloc[0]


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text).tz_convert("UTC")


@pytest.mark.parametrize("path", record_fixture_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fixture_loads_every_record(path: Path) -> None:
    endpoint = fixture_endpoint(path)
    records = load_records(f"{path.parent.name}/{path.name}")
    batch = normalize_records(endpoint, HUMAN_ID, records)

    assert batch.rejected.empty, batch.rejected[["record_id", "reason"]].to_dict("records")
    main = batch.tables[endpoint.table]
    assert batch.received == len(records) == len(main)
    assert set(main["record_id"]) == {r["id"] for r in records}
    assert (main["human_id"] == HUMAN_ID).all()  # the caller's id, not the record's userId
    assert main["updated_at"].notna().all()
    assert main["deleted_at"].isna().all()
    for table, frame in batch.tables.items():
        assert list(frame.columns) == TABLE_SCHEMAS[table].names
        assert to_arrow(table, frame).schema == TABLE_SCHEMAS[table]


def test_every_endpoint_has_a_table_schema() -> None:
    assert {e.table for e in ENDPOINTS} <= set(TABLE_SCHEMAS)


# human.json embeds the latest heart-rate reading and activity summary; they are the only
# real samples of those two endpoints (they lack createdAt/updatedAt there, so add one).
@pytest.mark.parametrize(
    ("key", "path", "column", "expected"),
    [
        ("heartRate", "heart_rate/readings", "value", 77.0),
        ("activitySummary", "activities/summaries", "date", dt.date(2014, 6, 27)),
    ],
)
def test_endpoints_only_sampled_in_human_json(
    key: str, path: str, column: str, expected: object
) -> None:
    record = {**load_records("wellness/human.json")[0][key], "updatedAt": "2014-10-08T00:00:00Z"}
    batch = normalize_records(BY_PATH[path], HUMAN_ID, [record])
    assert batch.rejected.empty
    assert batch.tables[BY_PATH[path].table][column].tolist() == [expected]


def test_raw_is_the_record_as_received() -> None:
    records = load_records("medical/medications.json")
    main = normalized("medical/medications.json").tables["medical.medications"]
    assert [json.loads(raw) for raw in main["raw"]] == records
    assert ", " not in main["raw"].iloc[0][:40]  # compact separators


def test_test_result_components() -> None:
    batch = normalized("medical/test_results.json")
    components = batch.tables["medical.test_result_components"]
    ptt = only_row(components, name="PTT")
    assert (ptt["value"], ptt["value_numeric"]) == ("26.3 second(s)", 26.3)
    assert (ptt["ref_low"], ptt["ref_high"], ptt["ref_range"]) == (20.8, 34.4, "20.8 - 34.4")
    assert ptt["position"] == 0
    assert ptt["loinc_code"] == "14979-9"
    alt = only_row(components, name="ALT", ref_range="> 14 U/L; < 54 U/L")
    assert (alt["value_numeric"], alt["ref_low"], alt["ref_high"]) == (18.0, 14.0, 54.0)
    assert (alt["unit"], alt["value"]) == ("U/L", "18")
    narrative = components[components["name"] == "Impression"]
    assert narrative["value_numeric"].isna().all()
    parents = set(batch.tables["medical.test_results"]["record_id"])
    assert set(components["record_id"]) <= parents


def test_test_results_columns() -> None:
    main = normalized("medical/test_results.json").tables["medical.test_results"]
    row = only_row(main, record_id="5e6674665ee4bfd6dba2f6cc")
    assert row["result_at"] == utc("2019-12-31T09:14:46Z")
    assert row["status"] == "completed"
    assert row["organization_name"] == "Starfleet Medical"
    assert row["source_id"] == "55a83bdc8d1eb1420aa1a71b"


def test_vital_results_carry_loinc_codes() -> None:
    batch = normalized("medical/vitals.json")
    results = batch.tables["medical.vital_results"]
    first = results[results["record_id"] == "5e6674695ee4bff601a2f7a4"].set_index("position")
    assert first.loc[0, "name"] == "Systolic blood pressure"
    assert first.loc[0, "loinc_code"] == "8480-6"
    assert first.loc[0, "value"] == 136.0
    assert first.loc[0, "unit"] == "mm[Hg]"
    assert first.loc[1, "loinc_code"] == "8462-4"
    # the heart-rate code carries no codeSystemName, so it is not known to be LOINC
    assert first["loinc_code"].isna().tolist()[2]
    assert first.loc[4, "value"] == 62.143
    vitals = batch.tables["medical.vitals"]
    assert only_row(vitals, record_id="5e6674695ee4bff601a2f7a4")["recorded_at"] == utc(
        "2019-12-31T13:53:00Z"
    )


def test_medication_fields_typed_from_strings() -> None:
    main = normalized("medical/medications.json").tables["medical.medications"]
    row = only_row(main, record_id="5e6674585ee4bf8389a2f52e")
    assert row["name"] == "acetaminophen 500 mg tablet"
    assert row["refills_total"] == 30  # sent as "30"
    assert row["frequency_number"] == 3.0  # sent as "3.0"
    assert (row["strength_value"], row["strength_unit"]) == (500.0, "mg")
    assert (row["route"], row["dosage_form"], row["dosage_value"]) == (
        "enteral_oral",
        "tablet",
        2.0,
    )
    assert row["end_at"] == utc("2019-12-08T03:59:00Z")
    assert str(main["refills_total"].dtype) == "Int64"


def test_record_codes_name_their_table() -> None:
    codes = normalized("medical/medications.json").tables["medical.record_codes"]
    rows = codes[codes["record_id"] == "5e6674585ee4bf8389a2f52e"].set_index("position")
    assert (codes["table_name"] == "medical.medications").all()
    assert list(rows.loc[0, ["code", "code_system_name", "name"]]) == [
        "198440",
        "RxNorm",
        "acetaminophen 500 mg tablet",
    ]
    assert rows.loc[0, "code_system"] == "2.16.840.1.113883.6.88"
    assert list(rows.index) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("relative", "table"),
    [
        ("medical/demographics.json", "medical.demographics"),
        ("medical/profile.json", "medical.profile"),
    ],
)
def test_demographics_and_profile(relative: str, table: str) -> None:
    row = normalized(relative).tables[table].iloc[0]
    assert row["dob"] == dt.date(1958, 1, 27)  # sent as "01/27/1958"
    assert (row["gender"], row["marital_status"], row["family_name"]) == (
        "female",
        "single",
        "Plasty",
    )
    assert list(row["given_names"]) == ["Arthuretta"]
    assert (row["address_city"], row["address_state"], row["address_zip"]) == (
        "Anytown",
        "CA",
        "98765",
    )
    assert pd.isna(row["source_id"])  # these records carry no `source`


def test_activity() -> None:
    main = normalized("wellness/activities.json").tables["wellness.activities"]
    row = only_row(main, record_id="54344d6e03c5de2509ff9b8c")
    assert row["steps"] == 131
    assert (row["duration_s"], row["distance_m"], row["calories"]) == (60.0, 65.0, 0.0)
    assert row["start_at"] == utc("2014-10-07T19:22:50Z")
    assert (row["type"], row["source_id"], row["manual"]) == ("walking", "moves", False)


@pytest.mark.parametrize(
    ("relative", "table", "value", "unit"),
    [
        ("wellness/weight.json", "wellness.weight", 72.1, "kg"),
        ("wellness/height.json", "wellness.height", 1727.0, "mm"),
        ("wellness/bmi.json", "wellness.bmi", 28.17, "kg/m2"),
        ("wellness/body_fat.json", "wellness.body_fat", 16.321, "percent"),
        ("wellness/blood_oxygen.json", "wellness.blood_oxygen", 98.0, "SpO2"),
        ("wellness/blood_glucose.json", "wellness.blood_glucose", 500.0, "mg/dL"),
    ],
)
def test_readings(relative: str, table: str, value: float, unit: str) -> None:
    row = normalized(relative).tables[table].iloc[0]
    assert (row["value"], row["unit"]) == (value, unit)
    assert row["measured_at"].tzinfo is not None
    assert row["measured_at"] == utc(load_records(relative)[0]["timestamp"])


def test_weight_measured_at_in_utc() -> None:
    row = normalized("wellness/weight.json").tables["wellness.weight"].iloc[0]
    assert row["measured_at"] == pd.Timestamp("2014-10-07 23:59:59", tz="UTC")


def test_blood_pressure() -> None:
    row = normalized("wellness/blood_pressure.json").tables["wellness.blood_pressure"].iloc[0]
    assert (row["systolic"], row["diastolic"], row["heart_rate"]) == (119, 79, 77)
    assert row["unit"] == "mmHg"
    assert row["measured_at"] == utc("2014-10-02T13:38:17Z")


def test_sleeps_summaries_meals_locations() -> None:
    sleeps = normalized("wellness/sleep.json").tables["wellness.sleeps"]
    sleep = only_row(sleeps, record_id="5433cd69f49c47fe575e791c")
    assert sleep["day"] == dt.date(2014, 10, 7)
    assert (sleep["main_sleep"], sleep["time_asleep_min"], sleep["efficiency"]) == (
        True,
        458.0,
        87.0,
    )

    summaries = normalized("wellness/sleepsummary.json").tables["wellness.sleep_summaries"]
    assert summaries["date"].notna().all()
    assert summaries["time_asleep_min"].notna().all()

    meals = normalized("wellness/meals.json").tables["wellness.meals"]
    meal = only_row(meals, record_id="5433cbeff49c47fe575e5e27")
    assert (meal["type"], meal["calories"], meal["cholesterol"]) == ("lunch", 273.0, 212.0)
    assert meal["saturated_fat"] == 2.4335

    locations = normalized("wellness/locations.json").tables["wellness.locations"]
    place = only_row(locations, record_id="54344afd03c5de2509ff9b62")
    assert (place["lat"], place["lon"]) == (43.0012517198, -78.7895543748)
    assert place["end_at"] == utc("2014-10-07T20:15:01Z")


def test_encounters_flatten_provider_and_lists() -> None:
    main = normalized("medical/encounters.json").tables["medical.encounters"]
    assert main["visit_type"].notna().all()
    assert (main["provider_name"] == "Susan Stethoscope").all()
    assert main["recorded_at"].notna().all()
    assert main["reasons"].map(len).sum() > 0
