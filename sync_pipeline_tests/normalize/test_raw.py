"""The `raw` column: compact JSON of the record as received, whatever values it carries."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sync_pipeline.normalize import normalize_records
from sync_pipeline.normalize.common import raw_json, utf8_series
from sync_pipeline.upstream.endpoints import BY_PATH

from .fixtures import HUMAN_ID

WEIGHT = BY_PATH["weight/readings"]
BASE = {"id": "5e6a1f", "updatedAt": "2020-03-09T16:52:00.000Z", "timestamp": "2020-03-09T16:52Z"}


@pytest.mark.parametrize(
    "extra",
    [
        {"note": "Größe 180 cm; 血压"},  # non-ASCII kept as is (orjson's path)
        {"value": 10**30},  # beyond 64 bits: the json module's path
        {"nested": {"list": [1, 2.5, None, True, {"deep": []}]}},
    ],
    ids=["non-ascii", "big-int", "nested"],
)
def test_raw_is_the_record_as_received(extra: dict[str, Any]) -> None:
    record = {**BASE, **extra}
    batch = normalize_records(WEIGHT, HUMAN_ID, [record, {**record, "id": "5e6a20"}])
    raws = batch.tables["wellness.weight"]["raw"].tolist()
    assert [json.loads(r) for r in raws] == [record, {**record, "id": "5e6a20"}]
    assert ", " not in raws[0] and '": ' not in raws[0]  # compact
    assert raw_json(record) == raws[0]


def test_a_lone_surrogate_is_repaired_in_raw_and_columns_and_flagged() -> None:
    # "\ud800" cannot be encoded as UTF-8, and DuckDB's JSON functions refuse even its escaped
    # form ("no low surrogate"), so one such raw would break json_extract over the table
    record = {**BASE, "unit": "k\ud800g", "note\udc00": "\ud800 lone surrogate"}
    batch = normalize_records(WEIGHT, HUMAN_ID, [record])
    row = batch.tables["wellness.weight"].iloc[0]
    assert row["unit"] == "k\ufffdg"
    assert json.loads(row["raw"]) == {
        **BASE,
        "unit": "k\ufffdg",
        "note\ufffd": "\ufffd lone surrogate",
    }
    assert batch.flagged is not None
    assert batch.flagged[["record_id", "flag"]].values.tolist() == [["5e6a1f", "text_repaired"]]


def test_rejected_raw_is_text_too() -> None:
    record = {**BASE, "timestamp": None, "note": "ü"}
    batch = normalize_records(WEIGHT, HUMAN_ID, [record])
    assert json.loads(batch.rejected["raw"].iloc[0]) == record


def test_utf8_series_keeps_order_and_empty_values() -> None:
    texts = ["a", "", "é" * 3, "{}"]
    assert utf8_series([t.encode() for t in texts]).tolist() == texts
    assert utf8_series([]).tolist() == []
