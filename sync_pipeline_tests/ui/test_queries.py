"""Every ```sql block of docs/queries.md runs against a warehouse filled by a real sync."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest

from sync_pipeline_tests.ui.conftest import SyncedData

pytestmark = pytest.mark.slow

QUERIES_MD = Path(__file__).resolve().parents[2] / "docs" / "queries.md"
# heading, then prose, then the first ```sql block below it
_BLOCK = re.compile(r"^## (?P<title>.+?)\n.*?^```sql\n(?P<sql>.*?)^```", re.S | re.M)
# questions the Starfleet data must answer with rows (the others may rightly be empty)
MUST_RETURN_ROWS = {
    "Latest glucose per user",
    "Weekly mean resting heart rate",
    "Users with no data for 7 days, and why",
    "Blood pressure trend per user",
    "Latest vital signs per user",
    "What the mapping could not translate yet",
    "Step counts per week",
}


def _queries() -> dict[str, str]:
    return {m["title"]: m["sql"] for m in _BLOCK.finditer(QUERIES_MD.read_text(encoding="utf-8"))}


def test_queries_md_has_the_questions_analysts_ask() -> None:
    titles = set(_queries())
    assert titles >= MUST_RETURN_ROWS | {
        "Latest HbA1c per user",
        "Users with broken connections",
        "Sources with no new data in 7 days",
    }
    # every sql block sits under its own heading (none skipped by the pattern)
    assert len(titles) == QUERIES_MD.read_text(encoding="utf-8").count("```sql")


@pytest.mark.parametrize("title", sorted(_queries()))
def test_example_query_runs(synced_data: SyncedData, title: str) -> None:
    with duckdb.connect(str(synced_data.warehouse_path), read_only=True) as con:
        rows = con.execute(_queries()[title]).fetchall()
    if title in MUST_RETURN_ROWS:
        assert rows, f"{title!r} returned no rows on the synced warehouse"
