"""The registry as Dagster sees it: asset specs whose key, description and column schema
come from a table's declaration, so the UI shows what the warehouse holds."""

from __future__ import annotations

from typing import Any

import dagster as dg

from .registry import table

COLUMN_SCHEMA = "dagster/column_schema"  # the metadata key Dagster's UI reads for columns


def column_schema(name: str) -> dg.TableSchema:
    """The declared columns of `name`: name, Arrow type and description."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(c.name, str(c.type), description=c.description or None)
            for c in table(name).columns
        ]
    )


def table_metadata(name: str) -> dict[str, Any]:
    """Definition metadata of the asset of table `name` (its column schema)."""
    return {COLUMN_SCHEMA: dg.MetadataValue.table_schema(column_schema(name))}


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
