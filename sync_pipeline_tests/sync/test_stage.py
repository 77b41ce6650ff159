"""Staging keeps memory bounded: chunks are written by row count, by total buffered bytes and
when a table is complete, and every row staged is read back exactly once."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from sync_pipeline.normalize import normalize_records, to_arrow
from sync_pipeline.sync.stage import Stager
from sync_pipeline.upstream.endpoints import BY_PATH

HUMAN_ID = "a" * 32
WEIGHT = BY_PATH["weight/readings"]
HEIGHT = BY_PATH["height/readings"]


def _frame(endpoint_path: str, count: int, start: int = 0) -> pa.Table:
    records = [
        {
            "id": f"{i:024x}",
            "updatedAt": "2020-03-09T16:52:00.000Z",
            "timestamp": "2020-03-09T16:52:00.000Z",
            "value": i,
            "unit": "kg",
            "note": "x" * 500,  # ~0.5 KB of raw per record
        }
        for i in range(start, start + count)
    ]
    endpoint = BY_PATH[endpoint_path]
    return to_arrow(
        endpoint.table, normalize_records(endpoint, HUMAN_ID, records).tables[endpoint.table]
    )


def _staged_ids(files: list[Path | str]) -> list[str]:
    rows = duckdb.read_parquet([str(f) for f in files]).fetchall()
    return sorted(str(r[1]) for r in rows)


@pytest.mark.parametrize(
    ("flush_rows", "max_bytes", "min_chunks"),
    [(50_000, 64 * 2**20, 1), (150, 64 * 2**20, 3), (50_000, 100_000, 4)],
    ids=["one-chunk", "by-rows", "by-bytes"],
)
def test_every_row_lands_once_in_bounded_chunks(
    tmp_path: Path, flush_rows: int, max_bytes: int, min_chunks: int
) -> None:
    stager = Stager(tmp_path, "run1", flush_rows=flush_rows, max_buffered_bytes=max_bytes)
    for start in range(0, 600, 100):
        stager.add("wellness.weight", _frame("weight/readings", 100, start))
        stager.add("wellness.height", _frame("height/readings", 10, start))
    files = stager.finish()
    assert len(files["wellness.weight"]) >= min_chunks
    assert _staged_ids(files["wellness.weight"]) == sorted(f"{i:024x}" for i in range(600))
    assert len(_staged_ids(files["wellness.height"])) == 60


def test_a_complete_table_is_written_before_the_run_ends(tmp_path: Path) -> None:
    stager = Stager(tmp_path, "run1")
    stager.add("wellness.weight", _frame("weight/readings", 5))
    stager.add("wellness.height", _frame("height/readings", 5))
    stager.flush_table("wellness.weight")
    assert len(stager.files["wellness.weight"]) == 1
    assert "wellness.height" not in stager.files  # still buffered
    stager.flush_table("wellness.weight")  # nothing buffered: no empty chunk
    files = stager.finish()
    assert len(files["wellness.weight"]) == 1 and len(files["wellness.height"]) == 1
