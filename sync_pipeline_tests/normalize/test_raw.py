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
        {"note": "\ud800 lone surrogate"},  # not encodable as UTF-8: escaped instead
        {"nested": {"list": [1, 2.5, None, True, {"deep": []}]}},
    ],
    ids=["non-ascii", "big-int", "lone-surrogate", "nested"],
)
def test_raw_is_the_record_as_received(extra: dict[str, Any]) -> None:
    record = {**BASE, **extra}
    batch = normalize_records(WEIGHT, HUMAN_ID, [record, {**record, "id": "5e6a20"}])
    raws = batch.tables["wellness.weight"]["raw"].tolist()
    assert [json.loads(r) for r in raws] == [record, {**record, "id": "5e6a20"}]
    assert ", " not in raws[0] and '": ' not in raws[0]  # compact
    assert raw_json(record) == raws[0]


def test_rejected_raw_is_text_too() -> None:
    record = {**BASE, "timestamp": None, "note": "ü"}
    batch = normalize_records(WEIGHT, HUMAN_ID, [record])
    assert json.loads(batch.rejected["raw"].iloc[0]) == record


def test_utf8_series_keeps_order_and_empty_values() -> None:
    texts = ["a", "", "é" * 3, "{}"]
    assert utf8_series([t.encode() for t in texts]).tolist() == texts
    assert utf8_series([]).tolist() == []
