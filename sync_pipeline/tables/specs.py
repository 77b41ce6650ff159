"""The registry as Dagster sees it: asset specs whose key, description and column schema
come from a table's declaration, so the UI shows what the warehouse holds."""

from __future__ import annotations

from typing import Any

import dagster as dg

from .registry import DECLARED_VIEWS, table

COLUMN_SCHEMA = "dagster/column_schema"  # the metadata key Dagster's UI reads for columns
TABLE_NAME = "dagster/table_name"  # and for the table an asset is


def column_schema(name: str) -> dg.TableSchema:
    """The declared columns of `name`: name, Arrow type and description."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(c.name, str(c.type), description=c.description or None)
            for c in table(name).columns
        ]
    )


def table_metadata(name: str) -> dict[str, Any]:
    """Definition metadata of the asset of table `name` (its table name and column schema)."""
    return {
        TABLE_NAME: dg.MetadataValue.text(name),
        COLUMN_SCHEMA: dg.MetadataValue.table_schema(column_schema(name)),
    }


def table_spec(name: str, **spec: Any) -> dg.AssetSpec:
    """The asset spec of table `name`: key, description and column schema from the registry;
    group, deps, kinds and the rest as given."""
    declared = table(name)
    return dg.AssetSpec(
        declared.asset_path,
        description=declared.description,
        metadata={**table_metadata(name), **spec.pop("metadata", {})},
        **spec,
    )


def view_spec(name: str, *, group_name: str) -> dg.AssetSpec:
    """The asset spec of view `name`: an external asset (no step writes a view) depending on
    the tables its SQL reads, so the UI's lineage runs through it."""
    declared = DECLARED_VIEWS[name]
    return dg.AssetSpec(
        name.split("."),
        description=declared.description,
        group_name=group_name,
        kinds={"duckdb"},
        deps=[dg.AssetKey(read.split(".")) for read in declared.reads],
        metadata={TABLE_NAME: dg.MetadataValue.text(name)},
    )
