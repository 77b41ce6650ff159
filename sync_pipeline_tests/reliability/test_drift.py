"""Issue 8, schema drift and hostile records through the normaliser: whatever arrives, each
record is either a typed row or a rejected row with a reason (received = loaded + rejected),
and one instant written three ways is one UTC value."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from sync_pipeline.normalize import normalize_records
from sync_pipeline.upstream.endpoints import BY_PATH

HUMAN = "ab" * 16
BASE: dict[str, Any] = {
    "source": "Starfleet Medical",
    "createdAt": "2024-05-01T12:00:00.000Z",
    "updatedAt": "2024-05-01T12:00:00.000Z",
    "name": "Hemoglobin",
    "resultDateTime": "2024-05-01T12:00:00.000Z",
    "status": "final",
}


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"x": value}
    return value


DRIFT: list[tuple[str, dict[str, Any]]] = [
    ("added-field", {"brandNewField": {"a": [1, 2]}}),
    ("removed-name", {"name": None}),
    ("renamed-field", {"name": None, "testName": "Hemoglobin"}),
    ("status-is-number", {"status": 7}),
    ("string-where-time", {"resultDateTime": "yesterday"}),
    ("nulls", {"status": None, "resultDateTime": None, "source": None}),
    ("deeply-nested", {"sourceData": nested(200)}),
    ("huge", {"narrative": "x" * 2_000_000}),
    ("unicode", {"name": "Hämoglobin 血红蛋白 🩸 \u202e", "status": "ﬁnal"}),
    ("sql-id", {"id": "x'); DROP TABLE t;--"}),
    ("missing-id", {"id": None}),
]


@pytest.mark.parametrize(("case", "change"), DRIFT, ids=[c for c, _ in DRIFT])
def test_every_record_is_loaded_or_rejected(case: str, change: dict[str, Any]) -> None:
    record = {"id": f"{abs(hash(case)) % 16**24:024x}", **BASE, **change}
    record = {k: v for k, v in record.items() if v is not None or k in ("status", "source")}
    batch = normalize_records(
        BY_PATH["medical/test_results"], HUMAN, [record, dict(BASE, id="f" * 24)]
    )
    loaded = len(batch.tables["medical.test_results"])
    rejected = len(batch.rejected)
    assert batch.received == 2
    assert loaded + rejected == 2, (case, loaded, rejected)
    if rejected:
        assert batch.rejected["reason"].map(bool).all()


def test_one_instant_three_ways_is_one_utc_value() -> None:
    ways = [
        "2024-05-01T12:00:00",
        "2024-05-01T12:00:00Z",
        "2024-05-01T14:00:00+02:00",
        "2024-05-01T12:00:00.000Z",
    ]
    records = [dict(BASE, id=f"{n:024x}", resultDateTime=w) for n, w in enumerate(ways)]
    batch = normalize_records(BY_PATH["medical/test_results"], HUMAN, records)
    values = set(batch.tables["medical.test_results"]["result_at"])
    assert values == {pd.Timestamp("2024-05-01T12:00:00Z")}
