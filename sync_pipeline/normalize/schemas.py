"""The frames the normalisers produce, by the table they go to, derived from the table specs.

The specs are the one declaration of the record tables and their child tables (the table
registry, sync_pipeline.tables.registry, gathers them with keys and descriptions); rejects and
flags carry the columns of ops.rejected_records and ops.flagged_records a producer fills in
(declared in sync_pipeline.tables.ops).
"""

from __future__ import annotations

import pyarrow as pa

from sync_pipeline.tables.columns import arrow_schema
from sync_pipeline.tables.ops import FLAG_INPUT, REJECT_INPUT, REJECTED_RECORDS

from .common import TableSpec, record_schema
from .medical import MEDICAL_SPECS
from .wellness import WELLNESS_SPECS

SPECS: dict[str, TableSpec] = {spec.table: spec for spec in (*MEDICAL_SPECS, *WELLNESS_SPECS)}

# ops.rejected_records rows as a producer hands them to the writer (which adds reject_id,
# rejected_at and run_id)
REJECT_INPUT_SCHEMA = arrow_schema(REJECT_INPUT)
# ops.flagged_records rows as the normaliser emits them (the writer adds run_id, flagged_at)
FLAGGED_SCHEMA = arrow_schema(FLAG_INPUT)

_CHILDREN = {child.table: child for spec in SPECS.values() for child in spec.children}

# What normalize_records emits, per table: a record table, a child table, or the rejects.
TABLE_SCHEMAS: dict[str, pa.Schema] = {
    **{table: record_schema(spec) for table, spec in SPECS.items()},
    **{table: child.schema for table, child in _CHILDREN.items()},
    REJECTED_RECORDS: REJECT_INPUT_SCHEMA,
}
