"""Rows typed by a table's declaration: pandas frames for the pure builders (intake rows,
connect state) and Arrow tables for the warehouse writer. The one place that maps a declared
Arrow type to a pandas dtype.

Every builder's output goes through `typed_frame`, so an empty input still yields every column
with its final dtype: a column that is `object` on one run and `datetime64` on the next would
not merge, and the writer derives nothing from what a frame happens to hold.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa

from .columns import BOOL, DATE, FLOAT, INSTANT, INT, INT32, TEXT, TEXT_LIST, Column, Table

# pandas' string dtype (missing is NA: None in to_dict); instants as UTC microseconds, the
# resolution of DuckDB's TIMESTAMPTZ
_DTYPES: dict[pa.DataType, Any] = {
    TEXT: pd.StringDtype(),
    INSTANT: "datetime64[us, UTC]",
    BOOL: "bool",
    INT: "Int64",
    INT32: "Int32",
    FLOAT: "Float64",
    DATE: pd.ArrowDtype(DATE),
    TEXT_LIST: pd.ArrowDtype(TEXT_LIST),
}


def _columns(declared: Table | Iterable[Column]) -> tuple[Column, ...]:
    return declared.columns if isinstance(declared, Table) else tuple(declared)


def pandas_dtypes(declared: Table | Iterable[Column]) -> dict[str, Any]:
    """Column → the pandas dtype `typed_frame` gives it."""
    return {c.name: _DTYPES[c.type] for c in _columns(declared)}


def typed_frame(
    declared: Table | Iterable[Column],
    rows: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any] | pd.Series],
) -> pd.DataFrame:
    """One DataFrame with exactly the declared columns, in order, cast to their dtypes.

    `rows` is a list of row dicts (keys beyond the columns are dropped, missing ones are
    NULL), or a mapping column → values (a column absent from it is empty)."""
    dtypes = pandas_dtypes(declared)
    if isinstance(rows, Mapping):
        frame = pd.DataFrame({name: rows.get(name, []) for name in dtypes})
    else:
        frame = pd.DataFrame(list(rows), columns=list(dtypes))
    return frame.astype(dtypes).reset_index(drop=True)


def utc_instants(values: pd.Series) -> pd.Series:
    """A column of instants as UTC microseconds (naive values are taken to be UTC already)."""
    instants: pd.Series = pd.to_datetime(values, utc=True).astype(_DTYPES[INSTANT])
    return instants


def conform(declared: Table, data: pa.Table) -> pa.Table:
    """An Arrow table cast to the declared schema: same columns, same order, same types
    (a declared column the data lacks is NULL; columns beyond the declaration are dropped)."""
    schema = declared.schema
    columns = []
    for field in schema:
        if field.name in data.column_names:
            columns.append(data.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(data.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)
