"""A warehouse holding the packaged fixture records (the upstream's real responses), loaded
through the real normalisers and upserts: the input of the analytics build in fast tests."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb

from starfleet.templates import templates_for
from sync_pipeline.normalize import normalize_records, to_arrow
from sync_pipeline.tables.registry import PARENT_OF, key_of
from sync_pipeline.upstream.endpoints import BY_PATH, READING_TYPES
from sync_pipeline.warehouse import db

HUMAN_ID = "0123456789abcdef0123456789abcdef"
SOURCE = "55a83bdc8d1eb1420aa1a71b"
STAMP = "2014-10-08T00:00:00.000Z"
PATHS = ("medical/vitals", "medical/test_results", *(f"{m}/readings" for m in READING_TYPES))


def fixture_records(path: str) -> list[dict[str, Any]]:
    """The template records of an endpoint path, as the upstream sent them (deep copies). The
    heart-rate template (from the 2014 user summary) has no createdAt/updatedAt; it gets the
    stamps the simulator gives every record."""
    records = [copy.deepcopy(r) for r in templates_for(path)]
    for record in records:
        record.setdefault("createdAt", STAMP)
        record.setdefault("updatedAt", STAMP)
    return records


def load(
    con: duckdb.DuckDBPyConnection,
    path: str,
    records: Sequence[Mapping[str, Any]],
    human_id: str = HUMAN_ID,
) -> None:
    """Normalise and upsert records of one endpoint, like a sync's commit does."""
    endpoint = BY_PATH[path]
    batch = normalize_records(endpoint, human_id, records)
    children = {
        child: to_arrow(child, frame)
        for child, frame in batch.tables.items()
        if child != endpoint.table and (PARENT_OF.get(child) == endpoint.table)
    }
    main = to_arrow(endpoint.table, batch.tables[endpoint.table])
    con.execute("BEGIN TRANSACTION")
    db.upsert_latest(con, endpoint.table, main, key_of(endpoint.table), children=children)
    con.execute("COMMIT")


def fixture_warehouse(path: Path, human_ids: Sequence[str] = (HUMAN_ID,)) -> Path:
    """A warehouse file with every vitals, test result and reading fixture for each user."""
    with db.connect(path) as con:
        for human_id in human_ids:
            for endpoint_path in PATHS:
                load(con, endpoint_path, fixture_records(endpoint_path), human_id)
    return path
