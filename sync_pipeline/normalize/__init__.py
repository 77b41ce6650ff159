"""Upstream records → typed warehouse rows, one page at a time. Pure: no I/O, no Dagster.

`normalize_records` turns one page of parsed JSON records of an endpoint into the rows of its
warehouse table, its child tables and ops.rejected_records, so that always
``received == len(main table) + len(rejected)`` (child rows do not count).

What makes a record rejected (every table):
- it is not a JSON object;
- `id` is missing, not a string, or blank;
- neither `updatedAt` nor `createdAt` is an ISO-8601 instant (`updated_at` falls back to
  `createdAt` when only `updatedAt` is unusable);
- a field its table spec requires is missing or unparseable (see medical.py, wellness.py);
- another record of the same page has the same `id` and a later `updatedAt` (on a tie the
  later one in the page wins): the page keeps one row per id, the loser is rejected with
  reason "duplicate id in page", so the count still adds up.
Anything else odd (unknown fields, wrong types in optional fields, nulls) never rejects:
the typed column is NULL and `raw` keeps the record exactly as received.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ..upstream.endpoints import Endpoint
from .common import (
    CONVERTERS,
    Field,
    TableSpec,
    extract,
    raw_json_bytes,
    text_series,
    to_instant,
    to_text,
    utf8_series,
)
from .schemas import PARENT_OF, REJECTED_TABLE, SPECS, TABLE_KEYS, TABLE_SCHEMAS

__all__ = [
    "PARENT_OF",
    "REJECTED_TABLE",
    "TABLE_KEYS",
    "TABLE_SCHEMAS",
    "NormalizedBatch",
    "normalize_records",
    "to_arrow",
]

DUPLICATE_REASON = "duplicate id in page; the copy with the latest updatedAt was kept"


@dataclass(frozen=True)
class NormalizedBatch:
    tables: dict[str, pd.DataFrame]  # main table + its child tables, TABLE_SCHEMAS columns in order
    rejected: pd.DataFrame  # ops.rejected_records rows
    received: int  # records in the input


def normalize_records(
    endpoint: Endpoint, human_id: str | Sequence[str], records: Sequence[Mapping[str, Any]]
) -> NormalizedBatch:
    """Type a batch of `endpoint`'s records. `human_id` is the user they were fetched for (never
    taken from the records): one id for the whole batch, or one per record, so pages of many
    users can be typed in one call (pandas' fixed cost per call dominates small pages)."""
    spec = SPECS.get(endpoint.table)
    if spec is None:
        raise KeyError(f"no table spec for {endpoint.table}")
    page: list[Any] = list(records)
    owners = _owners(human_id, len(page))
    # non-objects are read as {} so every field list lines up with the page
    objects: list[Mapping[str, Any]] = [r if isinstance(r, Mapping) else {} for r in page]

    ids = extract(objects, ("id",))
    created_at = to_instant(extract(objects, ("createdAt",)))
    updated_sent = to_instant(extract(objects, ("updatedAt",)))
    updated_at = updated_sent.fillna(created_at)
    typed = {f.column: CONVERTERS[f.kind](extract(objects, f.path)) for f in spec.fields}

    valid = (
        np.fromiter((isinstance(r, Mapping) for r in page), dtype=bool, count=len(page))
        & np.fromiter((_usable_id(i) for i in ids), dtype=bool, count=len(page))
        & updated_at.notna().to_numpy()
    )
    for column in spec.required:
        valid &= typed[column].notna().to_numpy()
    duplicate = _superseded_duplicates(owners, ids, updated_at, valid)
    kept = valid & ~duplicate

    raws = [raw_json_bytes(r) for r in page]
    main = pd.DataFrame(
        {
            "human_id": text_series(owners),
            "record_id": to_text(ids),
            "source_id": to_text(extract(objects, ("source",))),
            "created_at": created_at,
            "updated_at": updated_at,
            "deleted_at": pd.Series(pd.NaT, index=created_at.index, dtype="datetime64[us, UTC]"),
            "raw": utf8_series(raws),
            **typed,
        }
    )[kept].reset_index(drop=True)

    kept_positions = np.flatnonzero(kept)
    kept_objects = [objects[i] for i in kept_positions]
    kept_ids = [str(ids[i]) for i in kept_positions]
    kept_owners = [owners[i] for i in kept_positions]
    tables = {spec.table: main}
    for child in spec.children:
        tables[child.table] = child.build(spec.table, kept_owners, kept_ids, kept_objects)

    rejected_positions = np.flatnonzero(~kept)
    rejected = pd.DataFrame(
        {
            "table_name": [spec.table] * len(rejected_positions),
            "human_id": [owners[i] for i in rejected_positions],
            "record_id": [_id_text(ids[i]) for i in rejected_positions],
            "reason": [
                DUPLICATE_REASON if duplicate[i] else _reason(spec, page[i])
                for i in rejected_positions
            ],
            "raw": [raws[i].decode() for i in rejected_positions],
        },
        dtype=pd.StringDtype(),
    )
    return NormalizedBatch(tables=tables, rejected=rejected, received=len(page))


def to_arrow(table: str, df: pd.DataFrame) -> pa.Table:
    """`df` as an Arrow table with exactly TABLE_SCHEMAS[table] (names, order, types)."""
    schema = TABLE_SCHEMAS[table]
    if list(df.columns) != schema.names:
        raise ValueError(f"{table}: columns {list(df.columns)} are not {schema.names}")
    return pa.Table.from_pandas(df, schema=schema, preserve_index=False).replace_schema_metadata(
        None
    )


def _owners(human_id: str | Sequence[str], count: int) -> list[str]:
    """The user of each record: every one a non-empty string."""
    if isinstance(human_id, str):
        owners = [human_id] * count
    elif isinstance(human_id, Sequence):
        owners = list(human_id)
        if len(owners) != count:
            raise ValueError("one human_id per record, or one for the batch")
    else:
        raise ValueError("human_id must be a non-empty string")
    if (isinstance(human_id, str) and not human_id) or not all(
        isinstance(h, str) and h for h in set(owners)
    ):
        raise ValueError("human_id must be a non-empty string")
    return owners


def _usable_id(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _id_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # unusable as a key, but it still tells which record it was
    return None


def _superseded_duplicates(
    owners: list[str], ids: list[Any], updated_at: pd.Series, valid: np.ndarray
) -> np.ndarray:
    """Valid rows whose (user, id) reappears in the batch with a later updated_at (ties: the
    later row wins)."""
    duplicate = np.zeros(len(ids), dtype=bool)
    keys = list(zip(owners, ids, strict=True))
    if len(set(keys)) == len(keys):
        return duplicate  # the usual page: nothing to sort
    candidates = pd.DataFrame({"key": keys, "updated_at": updated_at})[valid]
    latest_last = candidates.sort_values("updated_at", kind="stable")
    losers = latest_last.index[latest_last.duplicated("key", keep="last")]
    duplicate[losers] = True
    return duplicate


def _reason(spec: TableSpec, record: Any) -> str:
    """Why one record was rejected: every problem found, so one look at the row is enough."""
    if not isinstance(record, Mapping):
        return f"record is not a JSON object (got {type(record).__name__})"
    problems: list[str] = []
    record_id = record.get("id")
    if record_id is None:
        problems.append("missing id")
    elif not isinstance(record_id, str):
        problems.append("id is not a string")
    elif not record_id.strip():
        problems.append("id is empty")
    timestamps = [record.get("updatedAt"), record.get("createdAt")]
    if to_instant(timestamps).isna().all():
        problems.extend(
            _field_problem(name, value, "an ISO-8601 instant")
            for name, value in zip(("updatedAt", "createdAt"), timestamps, strict=True)
        )
    fields = {f.column: f for f in spec.fields}
    for column in spec.required:
        problems.extend(_required_problem(fields[column], record))
    return "; ".join(problems) or "rejected"


def _field_problem(name: str, value: Any, expected: str) -> str:
    return f"missing {name}" if value is None else f"{name} is not {expected}"


_EXPECTED = {
    "instant": "an ISO-8601 instant",
    "date": "a date",
    "float": "a number",
    "int": "an integer",
    "bool": "a boolean",
    "text": "a string",
    "text_list": "a list of strings",
}


def _required_problem(field: Field, record: Mapping[str, Any]) -> list[str]:
    value = extract([record], field.path)[0]
    if CONVERTERS[field.kind]([value]).notna().all():
        return []
    name = ".".join(str(step) for step in field.path)
    return [_field_problem(name, value, _EXPECTED[field.kind])]
