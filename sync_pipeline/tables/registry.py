"""The table registry: every warehouse table of contract part C plus the ops and analytics
tables, each declared once, and the lookups everything else derives from.

Declarations live beside their concern: ops.* in tables/ops.py, connect.* in
tables/connect.py, the analyst layer in tables/analytics.py, and the record tables with their
child tables in the normalisers' specs (gathered by tables/records.py). Generated from here:
the DDL and `COMMENT ON` (warehouse/db.ensure_tables), Arrow schemas (`schema_of`), frame
typing (tables/frames.py), the asset specs' descriptions and column schemas (tables/specs.py),
the asset checks' keys and the data dictionary (sync_pipeline/dictionary.py).

To add a table, append a `Table(name, columns, key=..., owner=..., description=...)` to the
tuple of its schema's module (a record table: a `TableSpec` in normalize/ and an endpoint in
upstream/endpoints.py). The next writer connection creates it with its comments; build its
rows with `frames.typed_frame(table(name), rows)` and write them through warehouse/db.
"""

from __future__ import annotations

import pyarrow as pa

from .analytics import ANALYTICS_TABLES
from .columns import Table
from .connect import CONNECT_TABLES, VIEW_DESCRIPTIONS, VIEWS
from .ops import OPS_TABLES
from .records import CHILD_TABLES as _CHILDREN
from .records import RECORD_TABLES as _RECORDS

__all__ = [
    "CHILD_TABLES",
    "PARENT_OF",
    "RECORD_TABLES",
    "TABLES",
    "VIEWS",
    "VIEW_DESCRIPTIONS",
    "children_of",
    "key_of",
    "owner_of",
    "schema_of",
    "table",
    "tables_owned_by",
]


def _by_name(*groups: tuple[Table, ...]) -> dict[str, Table]:
    tables: dict[str, Table] = {}
    for group in groups:
        for declared in group:
            if declared.name in tables:
                raise ValueError(f"{declared.name} is declared twice")
            tables[declared.name] = declared
    return tables


TABLES: dict[str, Table] = _by_name(
    _RECORDS, _CHILDREN, OPS_TABLES, CONNECT_TABLES, ANALYTICS_TABLES
)
"""Every warehouse table by schema-qualified name (views are in VIEWS)."""

RECORD_TABLES: tuple[str, ...] = tuple(t.name for t in _RECORDS)
"""The endpoints' tables, in endpoint-catalogue order."""

CHILD_TABLES: tuple[str, ...] = tuple(t.name for t in _CHILDREN)
"""Tables exploded from lists inside records of a record table (contract part C)."""

PARENT_OF: dict[str, str] = {t.name: t.parent for t in _CHILDREN if t.parent is not None}
"""Child table → its one parent. medical.record_codes has many parents and names its parent
per row in `table_name`, so it is absent here."""


def table(name: str) -> Table:
    """The declaration of `name`; KeyError for a table nobody declared."""
    return TABLES[name]


def schema_of(name: str) -> pa.Schema:
    return TABLES[name].schema


def key_of(name: str) -> tuple[str, ...]:
    return TABLES[name].key


def owner_of(name: str) -> str:
    return TABLES[name].owner


def children_of(parent: str) -> tuple[Table, ...]:
    """The child tables filled from `parent`'s records (shared ones such as
    medical.record_codes included: their rows name the parent in `table_name`)."""
    return tuple(t for t in _CHILDREN if parent in t.parents)


def tables_owned_by(owner: str) -> tuple[Table, ...]:
    return tuple(t for t in TABLES.values() if t.owner == owner)
