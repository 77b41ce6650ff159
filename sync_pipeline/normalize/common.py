"""Building blocks shared by every table: field specs, page-wide converters, raw JSON.

A table is described by a `TableSpec` (a tuple of `Field`s), not by code. Each field is
pulled out of every record of a page once (a list comprehension walking its path), then
converted for the whole page at once with pandas/pyarrow. Converters never raise on bad
input: a value of the wrong shape becomes NULL and the record's `raw` keeps what was sent.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from sync_pipeline.tables.columns import (
    BOOL,
    DATE,
    FLOAT,
    INSTANT,
    INT,
    TEXT,
    TEXT_LIST,
    Column,
    arrow_schema,
)

Kind = Literal["text", "float", "int", "bool", "instant", "date", "text_list"]
Step = str | int  # a mapping key, or a list index (e.g. the first of `dates`)
WILDCARD = "*"  # a path step meaning "every element of this list"

ARROW_TYPES: dict[Kind, pa.DataType] = {
    "text": TEXT,
    "float": FLOAT,
    "int": INT,
    "bool": BOOL,
    "instant": INSTANT,
    "date": DATE,
    "text_list": TEXT_LIST,
}


@dataclass(frozen=True)
class Field:
    """One typed column of a table: where its value sits in a record and how to type it."""

    column: str
    path: tuple[Step, ...]
    kind: Kind


def snake_case(name: str) -> str:
    """camelCase → snake_case: "refillsTotal" → "refills_total", "vitaminA" → "vitamin_a"."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _field(kind: Kind, path: str, column: str | None) -> Field:
    steps: tuple[Step, ...] = tuple(int(s) if s.isdigit() else s for s in path.split("."))
    named = [s for s in steps if isinstance(s, str) and s != WILDCARD]
    return Field(column or "_".join(snake_case(s) for s in named), steps, kind)


# Spec helpers: `text("organization.name")` is the column organization_name. Dotted paths
# flatten nested objects; digits index lists; "*" maps over a list (text_list only).
def text(path: str, column: str | None = None) -> Field:
    return _field("text", path, column)


def number(path: str, column: str | None = None) -> Field:
    return _field("float", path, column)


def integer(path: str, column: str | None = None) -> Field:
    return _field("int", path, column)


def boolean(path: str, column: str | None = None) -> Field:
    return _field("bool", path, column)


def instant(path: str, column: str) -> Field:
    # always named explicitly: the contract renames instants to *_at
    return _field("instant", path, column)


def date(path: str, column: str | None = None) -> Field:
    return _field("date", path, column)


def text_list(path: str, column: str | None = None) -> Field:
    return _field("text_list", path, column)


ChildBuilder = Callable[
    [str, Sequence[str], Sequence[str], Sequence[Mapping[str, Any]]], pd.DataFrame
]
"""(parent table, human_id per record, record ids, records) → rows of one child table."""


@dataclass(frozen=True)
class ChildSpec:
    """A child table: its columns (declared here, the registry gathers them) and its builder."""

    table: str
    columns: tuple[Column, ...]
    build: ChildBuilder
    description: str = ""

    @property
    def schema(self) -> pa.Schema:
        return arrow_schema(self.columns)


@dataclass(frozen=True)
class TableSpec:
    """How one endpoint's records become rows of its warehouse table."""

    table: str
    fields: tuple[Field, ...]
    # columns that must be non-NULL after typing, else the record is rejected
    required: tuple[str, ...] = ()
    children: tuple[ChildSpec, ...] = field(default=())


# Columns every record table starts with, in this order (contract part C).
COMMON_COLUMNS: tuple[Column, ...] = (
    Column("human_id", TEXT, "the upstream's user id (32 hex)"),
    Column("record_id", TEXT, "the upstream record's `id`"),
    Column("source_id", TEXT, "the record's `source`"),
    Column("created_at", INSTANT, "`createdAt`"),
    Column(
        "updated_at",
        INSTANT,
        "`updatedAt` (`createdAt` when unusable); the last one wins on reload",
    ),
    Column("deleted_at", INSTANT, "set when the upstream answered 404 for the record"),
    Column("raw", TEXT, "the record exactly as received (JSON text)"),
)


def field_source(spec_field: Field) -> str:
    """The upstream field path a typed column is read from, e.g. `organization.name`,
    `name.given[]`."""
    return ".".join("[]" if s == WILDCARD else str(s) for s in spec_field.path)


def record_columns(spec: TableSpec) -> tuple[Column, ...]:
    """A record table's columns: the common ones, then one per field of its spec."""
    return COMMON_COLUMNS + tuple(
        Column(f.column, ARROW_TYPES[f.kind], f"from `{field_source(f)}`") for f in spec.fields
    )


def record_schema(spec: TableSpec) -> pa.Schema:
    return arrow_schema(record_columns(spec))


# ---------------------------------------------------------------- extraction


def get_path(value: Any, path: Sequence[Step]) -> Any:
    """The value at `path`, or None as soon as a step does not fit the data's shape."""
    for i, step in enumerate(path):
        if step == WILDCARD:
            if not isinstance(value, list):
                return None
            rest = path[i + 1 :]
            return [get_path(item, rest) for item in value]
        if isinstance(step, int):
            if not isinstance(value, list) or step >= len(value):
                return None
            value = value[step]
        elif isinstance(value, dict):
            value = value.get(step)
        else:
            return None
    return value


def extract(records: Sequence[Any], path: Sequence[Step]) -> list[Any]:
    if all(isinstance(step, str) and step != WILDCARD for step in path):
        # the common cases (a key, or a key inside an object), kept cheap: one comprehension
        # per step instead of a get_path call per record
        values: list[Any] = list(records)
        for key in path:
            values = [v.get(key) if isinstance(v, dict) else None for v in values]
        return values
    return [get_path(r, path) for r in records]


def raw_json(value: Any) -> str:
    """The record as received, as compact JSON text (non-ASCII kept as is)."""
    return raw_json_bytes(value).decode()


def raw_json_bytes(value: Any) -> bytes:
    """`raw_json` as UTF-8 bytes; orjson is ~10x faster than the json module, which remains
    the fallback for what orjson refuses (integers beyond 64 bits, non-string keys)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
        try:
            return text.encode()
        except UnicodeEncodeError:  # a lone surrogate ("\\ud800" as sent): keep it escaped
            return json.dumps(value, separators=(",", ":"), default=str).encode()


def utf8_series(texts: Sequence[bytes]) -> pd.Series:
    """A string Series from UTF-8 byte strings (no NULLs): one join and one offsets array
    instead of a conversion per value, which matters for the large `raw` column."""
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    array = pa.LargeStringArray.from_buffers(
        len(texts), pa.py_buffer(offsets), pa.py_buffer(b"".join(texts))
    )
    return pd.Series(pd.arrays.ArrowStringArray(array.cast(pa.string())))


# ---------------------------------------------------------------- page-wide converters


def text_series(texts: Sequence[str | bytes | None]) -> pd.Series:
    # built through Arrow: several times faster than pandas' own list → string conversion
    return pd.Series(pd.arrays.ArrowStringArray(pa.array(texts, type=pa.string())))


def to_text(values: Sequence[Any]) -> pd.Series:
    # Fast path: a column of strings and nulls goes to Arrow as is. JSON has no bytes, so
    # the only way this fails is a non-string value, which the slow path turns into NULL:
    # a dict or list where text belongs is a shape we do not understand; raw keeps it.
    try:
        return text_series(values)
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return text_series([v if isinstance(v, str) else None for v in values])


def _numeric_candidates(values: Sequence[Any]) -> pd.Series:
    """float64 Series of the values that are numbers or numeric text; NaN elsewhere."""
    try:
        inferred = pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        inferred = None  # mixed types, or an integer beyond int64
    if inferred is not None and (
        pa.types.is_integer(inferred.type)
        or pa.types.is_floating(inferred.type)
        or pa.types.is_null(inferred.type)
    ):
        # fast path: a column of JSON numbers and nulls; an integer beyond 2**53 becomes the
        # nearest double (a safe cast would refuse it, and with it the whole page)
        as_double = inferred.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)
        return pd.Series(as_double, dtype="float64")
    # bools are ints to Python but never a measurement
    kept = [
        v.strip()
        if isinstance(v, str)
        else v
        if isinstance(v, int | float) and not isinstance(v, bool)
        else None
        for v in values
    ]
    return pd.to_numeric(pd.Series(kept, dtype=object), errors="coerce").astype("float64")


def to_float(values: Sequence[Any]) -> pd.Series:
    numbers = pd.Series(_numeric_candidates(values), dtype="float64")
    # "inf" parses, but is no measurement
    return numbers.where(numbers.abs() != math.inf).astype("Float64")


def to_int(values: Sequence[Any]) -> pd.Series:
    numbers = pd.Series(_numeric_candidates(values), dtype="float64")
    # "3.0" is 3; 2.5 or anything beyond int64 is not an integer: NULL
    whole = numbers.where((numbers % 1 == 0) & (numbers.abs() < 2**63))
    return whole.astype("Int64")


def to_bool(values: Sequence[Any]) -> pd.Series:
    flags = {"true": True, "false": False}
    return pd.Series(
        [
            v
            if isinstance(v, bool)
            else flags.get(v.strip().lower())
            if isinstance(v, str)
            else None
            for v in values
        ],
        dtype="boolean",
    )


def to_instant(values: Sequence[Any]) -> pd.Series:
    """ISO-8601 text → UTC instants: naive means UTC; Z and offset forms of one instant agree."""
    texts = pd.Series([v if isinstance(v, str) else None for v in values], dtype=object)
    parsed = pd.to_datetime(texts, utc=True, errors="coerce", format="ISO8601")
    return parsed.dt.as_unit("us")


_DATE_TYPE = pd.ArrowDtype(pa.date32())


def to_date(values: Sequence[Any]) -> pd.Series:
    """Calendar dates: ISO "2014-09-28" (or an instant's date), or US "01/27/1958"."""
    texts = pd.Series([v if isinstance(v, str) else None for v in values], dtype=object)
    iso = pd.to_datetime(texts, errors="coerce", format="ISO8601", utc=True)
    us = pd.to_datetime(texts, errors="coerce", format="%m/%d/%Y", utc=True)
    midnights = iso.fillna(us).dt.tz_convert(None).dt.floor("D")
    days = pa.Array.from_pandas(midnights).cast(pa.date32())
    return pd.Series(days, dtype=_DATE_TYPE, index=texts.index)


_TEXT_LIST_TYPE = pd.ArrowDtype(pa.list_(pa.string()))


def to_text_list(values: Sequence[Any]) -> pd.Series:
    lists = [[x for x in v if isinstance(x, str)] if isinstance(v, list) else None for v in values]
    return pd.Series(pa.array(lists, type=pa.list_(pa.string())), dtype=_TEXT_LIST_TYPE)


CONVERTERS: dict[Kind, Callable[[Sequence[Any]], pd.Series]] = {
    "text": to_text,
    "float": to_float,
    "int": to_int,
    "bool": to_bool,
    "instant": to_instant,
    "date": to_date,
    "text_list": to_text_list,
}
