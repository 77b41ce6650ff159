"""Schema drift and bad input: every case has one defined outcome, and the count adds up."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest

from sync_pipeline.normalize import DUPLICATE_REASON, NormalizedBatch, normalize_records
from sync_pipeline.upstream.endpoints import BY_PATH

from .fixtures import HUMAN_ID, load_records

TEST_RESULTS = BY_PATH["medical/test_results"]
WEIGHT = BY_PATH["weight/readings"]
MEDICATIONS = BY_PATH["medical/medications"]


def base_test_result() -> dict[str, Any]:
    return load_records("medical/test_results.json")[0]


def run(endpoint_path: str, records: list[Any]) -> NormalizedBatch:
    batch = normalize_records(BY_PATH[endpoint_path], HUMAN_ID, records)
    main = batch.tables[BY_PATH[endpoint_path].table]
    assert batch.received == len(records) == len(main) + len(batch.rejected)
    return batch


def single_medication(**changes: Any) -> pd.Series:
    record = {**load_records("medical/medications.json")[0], **changes}
    batch = run("medical/medications", [record])
    assert batch.rejected.empty, batch.rejected["reason"].tolist()
    row: pd.Series = batch.tables["medical.medications"].iloc[0]
    assert json.loads(row["raw"]) == record  # raw keeps whatever was sent
    return row


def test_unknown_fields_are_kept_in_raw_only() -> None:
    row = single_medication(brandNewField={"nested": [1, 2]}, anotherOne="x")
    assert "brand_new_field" not in row.index


def test_missing_optional_fields_are_null() -> None:
    record = {"id": "a" * 24, "updatedAt": "2020-03-09T16:52:37.248Z"}
    batch = run("medical/medications", [record])
    row = batch.tables["medical.medications"].iloc[0]
    typed = row.drop(["human_id", "record_id", "updated_at", "raw"])
    assert typed.isna().all(), typed[typed.notna()]
    assert batch.tables["medical.record_codes"].empty


@pytest.mark.parametrize(
    ("changes", "column"),
    [
        ({"refillsTotal": "abc"}, "refills_total"),
        ({"refillsTotal": 2.5}, "refills_total"),
        ({"refillsTotal": True}, "refills_total"),
        ({"refillsTotal": 10**30}, "refills_total"),
        ({"name": {"text": "aspirin"}}, "name"),
        ({"name": ["aspirin"]}, "name"),
        ({"name": None}, "name"),
        ({"name": 42}, "name"),
        ({"startDate": "next tuesday"}, "start_at"),
        ({"startDate": 1577836800}, "start_at"),
        ({"organization": "Starfleet Medical"}, "organization_name"),
        ({"details": {"strength": {"number": "abc", "unit": "mg"}}}, "strength_value"),
        ({"details": {"strength": {"number": "inf", "unit": "mg"}}}, "strength_value"),
    ],
)
def test_wrong_types_in_optional_fields_become_null(changes: dict[str, Any], column: str) -> None:
    assert pd.isna(single_medication(**changes)[column])


def test_unicode_survives_in_text_and_raw() -> None:
    row = single_medication(name="Paracétamol 500 mg — 对乙酰氨基酚 💊")
    assert row["name"] == "Paracétamol 500 mg — 对乙酰氨基酚 💊"
    assert "对乙酰氨基酚" in row["raw"]  # not \u-escaped


def test_huge_nested_field_does_not_break_the_load() -> None:
    deep: Any = "bottom"
    for _ in range(200):
        deep = {"level": deep}
    row = single_medication(details=deep, extra=["x" * 1000] * 1000)
    assert pd.isna(row["route"])
    assert len(row["raw"]) > 1_000_000


def test_numbers_sent_as_strings_and_as_numbers_agree() -> None:
    as_text = single_medication(refillsTotal=" 12 ")
    as_number = single_medication(refillsTotal=12.0)
    assert as_text["refills_total"] == as_number["refills_total"] == 12


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ("not a record", "record is not a JSON object (got str)"),
        (None, "record is not a JSON object (got NoneType)"),
        ([{"id": "x"}], "record is not a JSON object (got list)"),
        ({"updatedAt": "2020-03-09T16:52:37Z"}, "missing id"),
        ({"id": None, "updatedAt": "2020-03-09T16:52:37Z"}, "missing id"),
        ({"id": "", "updatedAt": "2020-03-09T16:52:37Z"}, "id is empty"),
        ({"id": "  ", "updatedAt": "2020-03-09T16:52:37Z"}, "id is empty"),
        ({"id": 12345, "updatedAt": "2020-03-09T16:52:37Z"}, "id is not a string"),
        ({"id": "r1"}, "missing updatedAt; missing createdAt"),
        (
            {"id": "r1", "updatedAt": "yesterday"},
            "updatedAt is not an ISO-8601 instant; missing createdAt",
        ),
        (
            {"id": "r1", "updatedAt": 1583772757, "createdAt": "soon"},
            "updatedAt is not an ISO-8601 instant; createdAt is not an ISO-8601 instant",
        ),
        (
            {"id": None, "updatedAt": "never"},
            "missing id; updatedAt is not an ISO-8601 instant; missing createdAt",
        ),
    ],
)
def test_invalid_records_are_rejected_while_the_page_loads(record: Any, reason: str) -> None:
    good = load_records("medical/test_results.json")[:3]
    batch = run("medical/test_results", [good[0], record, good[1], good[2]])
    assert len(batch.tables["medical.test_results"]) == 3
    rejected = batch.rejected.iloc[0]
    assert rejected["reason"] == reason
    assert (rejected["table_name"], rejected["human_id"]) == ("medical.test_results", HUMAN_ID)
    assert json.loads(rejected["raw"]) == record
    # children only for loaded records
    components = batch.tables["medical.test_result_components"]
    assert set(components["record_id"]) <= {r["id"] for r in good}


def test_rejected_record_id_is_kept_when_it_was_usable() -> None:
    batch = run("weight/readings", [{"id": "w1", "updatedAt": "x"}, {"id": 7, "updatedAt": "x"}])
    assert batch.rejected["record_id"].tolist() == ["w1", "7"]


def test_created_at_stands_in_for_an_unusable_updated_at() -> None:
    record = {"id": "r1", "updatedAt": "garbage", "createdAt": "2020-01-01T00:00:00Z"}
    main = run("medical/issues", [record]).tables["medical.issues"]
    assert main["updated_at"].tolist() == [pd.Timestamp("2020-01-01", tz="UTC")]


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"id": "w1", "updatedAt": "2014-10-07T14:55:29Z", "value": 70}, "missing timestamp"),
        (
            {"id": "w1", "updatedAt": "2014-10-07T14:55:29Z", "timestamp": "noon", "value": 70},
            "timestamp is not an ISO-8601 instant",
        ),
    ],
)
def test_wellness_required_fields(record: dict[str, Any], reason: str) -> None:
    batch = run("weight/readings", [record, *load_records("wellness/weight.json")])
    assert batch.rejected["reason"].tolist() == [reason]
    assert len(batch.tables["wellness.weight"]) == 1


def test_duplicate_ids_keep_the_latest_update() -> None:
    first = {
        "id": "w1",
        "timestamp": "2014-10-07T00:00:00Z",
        "value": 1,
        "updatedAt": "2014-10-08T00:00:00Z",
    }
    newest = {**first, "value": 3, "updatedAt": "2014-10-09T00:00:00+02:00"}
    older = {**first, "value": 2, "updatedAt": "2014-10-08T12:00:00Z"}
    batch = run("weight/readings", [first, newest, older])
    assert batch.tables["wellness.weight"]["value"].tolist() == [3.0]
    assert batch.rejected["reason"].tolist() == [DUPLICATE_REASON, DUPLICATE_REASON]
    assert sorted(json.loads(r)["value"] for r in batch.rejected["raw"]) == [1, 2]


def test_duplicate_ids_with_equal_updates_keep_the_later_one_in_the_page() -> None:
    a = {
        "id": "w1",
        "timestamp": "2014-10-07T00:00:00Z",
        "value": 1,
        "updatedAt": "2014-10-08T00:00:00Z",
    }
    b = {**a, "value": 2}
    batch = run("weight/readings", [a, b])
    assert batch.tables["wellness.weight"]["value"].tolist() == [2.0]


def test_duplicate_children_follow_the_kept_parent() -> None:
    record = base_test_result()
    newer = {**record, "updatedAt": "2030-01-01T00:00:00Z", "components": record["components"][:1]}
    batch = run("medical/test_results", [newer, record])
    components = batch.tables["medical.test_result_components"]
    assert len(components) == 1
    assert len(batch.tables["medical.record_codes"]) == len(record["codes"])


@pytest.mark.parametrize(
    "stamp",
    [
        "2014-10-07T15:08:03Z",
        "2014-10-07T15:08:03.000Z",
        "2014-10-07T15:08:03",  # naive means UTC
        "2014-10-07 15:08:03",
        "2014-10-07T17:08:03+02:00",
        "2014-10-07T10:08:03-0500",
    ],
)
def test_instant_forms_collapse_to_one_utc_value(stamp: str) -> None:
    record = {"id": "w1", "timestamp": stamp, "value": 1, "updatedAt": stamp}
    row = run("weight/readings", [record]).tables["wellness.weight"].iloc[0]
    expected = pd.Timestamp("2014-10-07T15:08:03", tz="UTC")
    assert row["measured_at"] == row["updated_at"] == expected
    assert str(row["measured_at"].tz) == "UTC"


def test_mixed_instant_forms_in_one_page() -> None:
    stamps = ["2014-10-07T15:08:03Z", "2014-10-07T15:08:03", "2014-10-07T17:08:03+02:00"]
    records = [
        {"id": f"w{i}", "timestamp": s, "value": 1, "updatedAt": s} for i, s in enumerate(stamps)
    ]
    main = run("weight/readings", records).tables["wellness.weight"]
    assert main["measured_at"].nunique() == 1
    assert str(main["measured_at"].dtype) == "datetime64[us, UTC]"


def test_component_drift() -> None:
    record = {
        **base_test_result(),
        "components": [
            {"name": "A", "value": 4.5, "low": 1, "high": "9.5", "refRange": "2 - 3"},
            "not a component",
            {"name": "B", "value": {"odd": True}, "refRange": 5, "unit": ["x"]},
            {"name": None, "value": "7.0 mmol/L"},
        ],
        "codes": "not a list",
    }
    batch = run("medical/test_results", [record])
    components = batch.tables["medical.test_result_components"].set_index("position")
    assert list(components.index) == [0, 2, 3]  # positions as sent; the non-object is skipped
    assert (components.loc[0, "value"], components.loc[0, "value_numeric"]) == ("4.5", 4.5)
    # explicit low/high beat the text range
    assert (components.loc[0, "ref_low"], components.loc[0, "ref_high"]) == (1.0, 9.5)
    assert components.loc[2, ["value", "value_numeric", "ref_range", "unit"]].isna().all()
    assert components.loc[3, "value_numeric"] == 7.0
    assert batch.tables["medical.record_codes"].empty


@pytest.mark.parametrize(
    ("sent", "expected"),
    [(136, 136.0), ("136", 136.0), ("12.5", 12.5), ("high", None), (None, None), (True, None)],
)
def test_vital_values(sent: Any, expected: float | None) -> None:
    record = {
        "id": "v1",
        "updatedAt": "2016-01-01T00:00:00Z",
        "results": [
            {
                "name": "Systolic",
                "value": sent,
                "codes": [{"code": "8480-6", "codeSystem": "2.16.840.1.113883.6.1"}],
            }
        ],
    }
    row = run("medical/vitals", [record]).tables["medical.vital_results"].iloc[0]
    assert row["loinc_code"] == "8480-6"  # identified by LOINC's OID
    if expected is None:
        assert pd.isna(row["value"])
    else:
        assert row["value"] == expected


def test_human_id_comes_from_the_caller() -> None:
    record = {**load_records("wellness/weight.json")[0], "humanId": "someone-else"}
    main = run("weight/readings", [record]).tables["wellness.weight"]
    assert main["human_id"].tolist() == [HUMAN_ID]


def test_empty_page() -> None:
    batch = run("medical/test_results", [])
    assert batch.received == 0
    assert set(batch.tables) == {
        "medical.test_results",
        "medical.test_result_components",
        "medical.record_codes",
    }
    assert all(frame.empty for frame in batch.tables.values())


@pytest.mark.parametrize("human_id", ["", None])
def test_human_id_is_required(human_id: Any) -> None:
    with pytest.raises(ValueError, match="human_id"):
        normalize_records(WEIGHT, human_id, [])
