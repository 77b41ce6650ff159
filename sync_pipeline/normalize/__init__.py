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
  reason "duplicate id in page", so the count still adds up;
- it is nested deeper than guard.MAX_DEPTH or its JSON is over `Limits.max_record_bytes`
  (guard.py: the reject row keeps an excerpt, never the whole body).
Anything else odd (unknown fields, wrong types in optional fields, nulls) never rejects:
the typed column is NULL and `raw` keeps the record exactly as received.

Loaded but flagged (the `flagged` frame, stored in ops.flagged_records):
- `text_repaired`: lone surrogates were replaced by U+FFFD (typed columns and raw);
- `future_updated_at`: `updatedAt` is more than `Limits.future_tolerance_s` past the upstream's
  clock; `updated_at` is stored as that clock (raw keeps what was sent), so the stamp can
  neither win over a later real update nor carry a cursor into the future.

`normalize_records` never raises on any record: the batch is typed in one go, and should that
fail for a reason no rule above foresaw, each record is typed alone and one that still fails
is rejected with the error's type as the reason (the containment boundary of a record).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from sync_pipeline.tables.ops import REJECTED_RECORDS

from ..upstream.endpoints import Endpoint
from ..upstream.models import UndecodableRecord
from .common import (
    CONVERTERS,
    Field,
    TableSpec,
    extract,
    text_series,
    to_instant,
    to_text,
    utf8_series,
)
from .guard import admit, admit_page, repair_text
from .schemas import FLAGGED_SCHEMA, SPECS, TABLE_SCHEMAS

__all__ = [
    "TABLE_SCHEMAS",
    "Limits",
    "NormalizedBatch",
    "normalize_records",
    "to_arrow",
]

DUPLICATE_REASON = "duplicate id in page; the copy with the latest updatedAt was kept"
FUTURE_UPDATED_AT = "future_updated_at"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """The bounds a record is held to (settings SYNC_MAX_RECORD_BYTES, SYNC_FUTURE_TOLERANCE_S)."""

    max_record_bytes: int = 4 * 2**20
    # the upstream's clock (its Date header, else the run's start); None: no future check
    clock: datetime | None = None
    future_tolerance_s: float = 300.0


@dataclass(frozen=True)
class NormalizedBatch:
    tables: dict[str, pd.DataFrame]  # main table + its child tables, TABLE_SCHEMAS columns in order
    rejected: pd.DataFrame  # ops.rejected_records rows
    received: int  # records in the input
    # loaded records that were changed or are suspect (FLAGGED_SCHEMA columns)
    flagged: pd.DataFrame | None = None


def normalize_records(
    endpoint: Endpoint,
    human_id: str | Sequence[str],
    records: Sequence[Any],
    limits: Limits | None = None,
) -> NormalizedBatch:
    """Type a batch of `endpoint`'s records. `human_id` is the user they were fetched for (never
    taken from the records): one id for the whole batch, or one per record, so pages of many
    users can be typed in one call (pandas' fixed cost per call dominates small pages).

    Never raises on what the records hold (see the module docstring); a bad `endpoint` or
    `human_id` is the caller's mistake and does raise."""
    spec = SPECS.get(endpoint.table)
    if spec is None:
        raise KeyError(f"no table spec for {endpoint.table}")
    page: list[Any] = list(records)
    owners = _owners(human_id, len(page))
    limits = limits or Limits()
    try:
        return _normalize(spec, owners, page, limits)
    except Exception as exc:  # the boundary: one record's surprise must not cost the batch
        if len(page) == 1:
            return _unexpected_reject(spec, owners[0], page[0], exc, limits)
        log.warning(
            "typing a batch of %s failed (%s); typing its %d records one by one",
            spec.table, type(exc).__name__, len(page),
        )  # fmt: skip
        return _concat(
            [
                normalize_records(endpoint, [o], [r], limits)
                for o, r in zip(owners, page, strict=True)
            ],
            spec,
        )


def _normalize(
    spec: TableSpec, owners: list[str], page: list[Any], limits: Limits
) -> NormalizedBatch:
    admitted = admit_page(page, limits.max_record_bytes)
    # non-objects (and records refused by the guard) are read as {} so every field list lines
    # up with the page
    objects: list[Mapping[str, Any]] = [
        v if isinstance(v, Mapping) else {} for v in admitted.values
    ]
    raws = admitted.raws

    ids = extract(objects, ("id",))
    for n in admitted.problems:  # a refused record still says which one it was
        if isinstance(page[n], Mapping):
            ids[n] = repair_text(page[n].get("id"))[0]
        elif isinstance(page[n], UndecodableRecord):
            ids[n] = repair_text(page[n].record_id)[0]
    created_at = to_instant(extract(objects, ("createdAt",)))
    updated_sent = to_instant(extract(objects, ("updatedAt",)))
    stamped = updated_sent.fillna(created_at)
    future = _future(stamped, limits)
    updated_at = stamped
    if future.any():
        assert limits.clock is not None
        updated_at = stamped.mask(future, pd.Timestamp(limits.clock).tz_convert("UTC"))
    typed = {f.column: CONVERTERS[f.kind](extract(objects, f.path)) for f in spec.fields}

    guarded = np.ones(len(page), dtype=bool)
    guarded[list(admitted.problems)] = False
    valid = (
        guarded
        & np.fromiter((isinstance(r, Mapping) for r in page), dtype=bool, count=len(page))
        & np.fromiter((_usable_id(i) for i in ids), dtype=bool, count=len(page))
        & updated_at.notna().to_numpy()
    )
    for column in spec.required:
        valid &= typed[column].notna().to_numpy()
    duplicate = _superseded_duplicates(owners, ids, updated_at, valid)
    kept = valid & ~duplicate

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
                admitted.problems.get(int(i))
                or (DUPLICATE_REASON if duplicate[i] else _reason(spec, objects[i], page[i]))
                for i in rejected_positions
            ],
            "raw": [raws[i].decode() for i in rejected_positions],
        },
        dtype=pd.StringDtype(),
    )
    flags = [
        (i, flag, "lone surrogates in text replaced by U+FFFD")
        for i, flag in sorted(admitted.flags.items())
        if kept[i]
    ] + [
        (i, FUTURE_UPDATED_AT, f"updatedAt {stamped[i].isoformat()} is past the upstream "
         f"clock {limits.clock.isoformat() if limits.clock else ''}; stored as that clock")
        for i in np.flatnonzero(kept & future.to_numpy())
    ]  # fmt: skip
    flagged = pd.DataFrame(
        {
            "table_name": [spec.table] * len(flags),
            "human_id": [owners[i] for i, _, _ in flags],
            "record_id": [str(ids[i]) for i, _, _ in flags],
            "flag": [f for _, f, _ in flags],
            "detail": [d for _, _, d in flags],
        },
        dtype=pd.StringDtype(),
    )
    return NormalizedBatch(tables=tables, rejected=rejected, received=len(page), flagged=flagged)


def _future(updated_at: pd.Series, limits: Limits) -> pd.Series:
    """Records stamped past the upstream's clock by more than the tolerance."""
    if limits.clock is None:
        return pd.Series(False, index=updated_at.index)
    cutoff = pd.Timestamp(limits.clock + timedelta(seconds=limits.future_tolerance_s))
    return (updated_at > cutoff.tz_convert("UTC")).fillna(False).astype(bool)


def _unexpected_reject(
    spec: TableSpec, owner: str, record: Any, exc: Exception, limits: Limits
) -> NormalizedBatch:
    """One record that typing failed on in a way no rule foresaw: rejected, with the error's
    type (never its message, which may quote the record) as the reason."""
    admitted = admit(record, limits.max_record_bytes)
    record_id = record.get("id") if isinstance(record, Mapping) else None
    rejected = pd.DataFrame(
        {
            "table_name": [spec.table],
            "human_id": [owner],
            "record_id": [_id_text(record_id)],
            "reason": [f"record could not be typed ({type(exc).__name__})"],
            "raw": [admitted.raw.decode(errors="replace")],
        },
        dtype=pd.StringDtype(),
    )
    flagged = FLAGGED_SCHEMA.empty_table().to_pandas()
    return NormalizedBatch(_empty_tables(spec), rejected, received=1, flagged=flagged)


def _empty_tables(spec: TableSpec) -> dict[str, pd.DataFrame]:
    tables = {spec.table: _empty(spec.table)}
    for child in spec.children:
        tables[child.table] = _empty(child.table)
    return tables


def _empty(table: str) -> pd.DataFrame:
    empty: pd.DataFrame = TABLE_SCHEMAS[table].empty_table().to_pandas()
    return empty


def _concat(batches: list[NormalizedBatch], spec: TableSpec) -> NormalizedBatch:
    def cat(frames: list[pd.DataFrame], empty: pd.DataFrame) -> pd.DataFrame:
        filled = [f for f in frames if len(f)]
        return pd.concat(filled, ignore_index=True) if filled else empty

    tables = {
        table: cat([b.tables[table] for b in batches], empty)
        for table, empty in _empty_tables(spec).items()
    }
    rejected = cat([b.rejected for b in batches], _empty(REJECTED_RECORDS))
    flagged = cat(
        [b.flagged for b in batches if b.flagged is not None],
        FLAGGED_SCHEMA.empty_table().to_pandas(),
    )
    return NormalizedBatch(tables, rejected, sum(b.received for b in batches), flagged)


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
    # only valid rows have a usable (string) id; the others get a key of their own (an id may
    # be any JSON value, a dict say, which could not even be hashed)
    keys = [
        (o, i) if ok else ("", n)
        for n, (o, i, ok) in enumerate(zip(owners, ids, valid, strict=True))
    ]
    if len(set(keys)) == len(keys):
        return duplicate  # the usual page: nothing to sort
    candidates = pd.DataFrame({"key": keys, "updated_at": updated_at})[valid]
    latest_last = candidates.sort_values("updated_at", kind="stable")
    losers = latest_last.index[latest_last.duplicated("key", keep="last")]
    duplicate[losers] = True
    return duplicate


def _reason(spec: TableSpec, record: Mapping[str, Any], sent: Any) -> str:
    """Why one record was rejected: every problem found, so one look at the row is enough."""
    if not isinstance(sent, Mapping):
        return f"record is not a JSON object (got {type(sent).__name__})"
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
