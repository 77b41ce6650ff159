"""Warehouse table schemas, keys and parent links, all derived from the table specs."""

from __future__ import annotations

import pyarrow as pa

from .children import RECORD_CODES
from .common import TableSpec, record_schema
from .medical import MEDICAL_SPECS
from .wellness import WELLNESS_SPECS

REJECTED_TABLE = "ops.rejected_records"

SPECS: dict[str, TableSpec] = {spec.table: spec for spec in (*MEDICAL_SPECS, *WELLNESS_SPECS)}

REJECTED_SCHEMA = pa.schema(
    [
        pa.field("table_name", pa.string()),
        pa.field("human_id", pa.string()),
        pa.field("record_id", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("raw", pa.string()),
    ]
)

# Loaded records that were changed on the way or are suspect (normalize/__init__.py): one row
# per (table, user, record, flag), kept in ops.flagged_records next to the rejects.
FLAGGED_SCHEMA = pa.schema(
    [
        pa.field("table_name", pa.string()),
        pa.field("human_id", pa.string()),
        pa.field("record_id", pa.string()),
        pa.field("flag", pa.string()),
        pa.field("detail", pa.string()),
    ]
)

_CHILDREN = {child.table: child for spec in SPECS.values() for child in spec.children}

TABLE_SCHEMAS: dict[str, pa.Schema] = {
    **{table: record_schema(spec) for table, spec in SPECS.items()},
    **{table: child.schema for table, child in _CHILDREN.items()},
    REJECTED_TABLE: REJECTED_SCHEMA,
}

TABLE_KEYS: dict[str, tuple[str, ...]] = {
    **{table: ("human_id", "record_id") for table in SPECS},
    **{table: ("human_id", "record_id", "position") for table in _CHILDREN},
    # codes come from every medical table, so the parent table is part of the key
    RECORD_CODES.table: ("table_name", "human_id", "record_id", "position"),
}

# Child table → its one parent. medical.record_codes has many parents and names its
# parent per row in `table_name`, so it is absent here.
PARENT_OF: dict[str, str] = {
    child.table: spec.table
    for spec in SPECS.values()
    for child in spec.children
    if child.table != RECORD_CODES.table
}
