"""Record tables and their child tables, derived from the normalisers' table specs.

The specs (sync_pipeline.normalize: medical.py, wellness.py, children.py) are where a record
table's columns are declared, next to the upstream field each is read from; this module adds
what the warehouse needs to know about them (key, owner, description, parents).
"""

from __future__ import annotations

from sync_pipeline.normalize.common import record_columns
from sync_pipeline.normalize.schemas import SPECS
from sync_pipeline.upstream.endpoints import BY_TABLE, ENDPOINTS

from .columns import Table
from .ops import RECORD_SYNC

RECORD_KEY = ("human_id", "record_id")
CHILD_KEY = ("human_id", "record_id", "position")


def _record_table(table: str) -> Table:
    endpoint = BY_TABLE[table]
    return Table(
        table,
        record_columns(SPECS[table]),
        key=RECORD_KEY,
        owner=RECORD_SYNC,
        description=f"One row per upstream record of /v1/human/{endpoint.path} "
        "(key human_id, record_id; deleted_at set when the upstream answers 404).",
    )


def _child_tables() -> tuple[Table, ...]:
    parents: dict[str, list[str]] = {}
    specs = {}
    for spec in SPECS.values():
        for child in spec.children:
            parents.setdefault(child.table, []).append(spec.table)
            specs[child.table] = child
    tables = []
    for name, child in specs.items():
        # a child of several parents names its parent per row, so the table is part of the key
        shared = len(parents[name]) > 1
        tables.append(
            Table(
                name,
                child.columns,
                key=("table_name", *CHILD_KEY) if shared else CHILD_KEY,
                owner=RECORD_SYNC,
                description=child.description,
                parents=tuple(parents[name]),
            )
        )
    return tuple(tables)


# in the endpoint catalogue's order; a spec without an endpoint is a KeyError here
RECORD_TABLES: tuple[Table, ...] = tuple(_record_table(e.table) for e in ENDPOINTS)
if {t.name for t in RECORD_TABLES} != set(SPECS):
    raise ValueError("every table spec is an endpoint's table, and every endpoint has a spec")
CHILD_TABLES: tuple[Table, ...] = _child_tables()
