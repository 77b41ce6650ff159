"""The primitives of the table registry: a column, a table, and the Arrow types they use.

Imports nothing of this package, so the normalisers (which declare the record tables' columns
through their table specs) and the registry (which gathers every table) can both use it
without a cycle.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

import pyarrow as pa

TEXT = pa.string()
INT = pa.int64()
INT32 = pa.int32()
FLOAT = pa.float64()
BOOL = pa.bool_()
DATE = pa.date32()
# DuckDB's TIMESTAMPTZ has microsecond resolution: every instant is stored as UTC microseconds
INSTANT = pa.timestamp("us", tz="UTC")
TEXT_LIST = pa.list_(pa.string())


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    description: str = ""


def arrow_schema(columns: Iterable[Column]) -> pa.Schema:
    """The Arrow schema of `columns`, in order (the one place a table's pa.schema is built)."""
    return pa.schema([pa.field(c.name, c.type) for c in columns])


@dataclass(frozen=True)
class Table:
    """One warehouse table, declared once: everything else (DDL, Arrow schema, frame typing,
    asset column metadata, checks, the data dictionary, COMMENT ON) is derived from it."""

    name: str  # schema-qualified, e.g. "ops.notifications"
    columns: tuple[Column, ...]
    # what identifies a row; () for an append-only log
    key: tuple[str, ...]
    # the Dagster asset definition whose step writes the table, by node name (a single
    # asset's node is its key joined by "__", e.g. ops__notifications; a multi-asset's is its
    # name, e.g. record_sync)
    owner: str
    # what one row is, in one line: the asset's description, the dictionary's, COMMENT ON TABLE
    description: str
    # child tables: the record tables whose records they explode (rows joined on human_id,
    # record_id); a child of several parents (medical.record_codes) names its parent per row
    # in `table_name`
    parents: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: duplicate column names")
        if not set(self.key) <= set(names):
            raise ValueError(f"{self.name}: key {self.key} is not among its columns")

    @cached_property
    def schema(self) -> pa.Schema:
        return arrow_schema(self.columns)

    @property
    def is_child(self) -> bool:
        return bool(self.parents)

    @property
    def parent(self) -> str | None:
        """The one parent of a child table; None for other tables and for a shared child."""
        return self.parents[0] if len(self.parents) == 1 else None

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def schema_name(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def asset_path(self) -> list[str]:
        """The Dagster asset key path of the table (tables that are assets use their name)."""
        return self.name.split(".")

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")

    def projection(self, names: Iterable[str]) -> tuple[Column, ...]:
        """Some of the table's columns (in the order given): rows a producer hands to the
        writer, which fills in the rest (e.g. rejects before their id and run are known)."""
        return tuple(self.column(n) for n in names)
