"""Which asset writes which warehouse table, as the asset graph says it.

Every table has exactly one writing asset (ARCHITECTURE rule 2): the asset's specs name their
table in `dagster/table_name` (the key Dagster's UI shows), and the step opens the warehouse
with exactly those tables writable (`db.connect(writes=...)`), so a write to any other table
fails the step. Views are not written by anyone: each is an external asset whose deps are the
tables it reads, so the UI's lineage runs through them (ops.notifications joins the intake's
items with the record sync's statuses; connect.users joins connection_state's users with the
record sync's token refusals).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import dagster as dg

from sync_pipeline.warehouse.schemas import REJECT_TABLES

TABLE_NAME = "dagster/table_name"


def table_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(table.split("."))


def table_spec(
    table: str,
    *,
    group: str,
    description: str,
    deps: Iterable[str] = (),
    kinds: Sequence[str] = ("duckdb",),
) -> dg.AssetSpec:
    """The spec of one warehouse table: key `schema/name`, its table name as metadata."""
    return dg.AssetSpec(
        table_key(table),
        group_name=group,
        kinds=set(kinds),
        deps=[table_key(d) for d in deps],
        description=description,
        metadata={TABLE_NAME: table},
    )


def declared_tables(assets_def: dg.AssetsDefinition) -> frozenset[str]:
    """The tables an asset (or multi-asset) declares: the only ones its step may write."""
    return frozenset(
        str(spec.metadata[TABLE_NAME]) for spec in assets_def.specs if TABLE_NAME in spec.metadata
    )


def reject_spec(kind: str, group: str, what: str) -> dg.AssetSpec:
    """The reject table of one writing asset (REJECT_TABLES; ops.rejected_records unites them)."""
    return table_spec(
        REJECT_TABLES[kind],
        group=group,
        description=f"One row per {what} that could not be loaded, with the reason and the raw "
        "text (keyed by reject_id: a re-run's reject lands once). Part of the view "
        "ops.rejected_records.",
    )


VIEW_SPECS = [
    table_spec(
        "ops.notifications",
        group="intake",
        deps=["ops.notification_items", "ops.notification_status"],
        description="View: one row per notification item (ops.notification_items, the "
        "intake's) with its processing status (ops.notification_status, the record sync's; "
        "'received' until a sync handles it).",
    ),
    table_spec(
        "ops.rejected_records",
        group="intake",
        deps=list(REJECT_TABLES.values()),
        description="View: one row per upstream record or intake item that could not be "
        "loaded, with the reason and the raw text; received = loaded + rejected. The union of "
        "the writers' reject tables.",
    ),
    table_spec(
        "connect.users",
        group="connect",
        deps=["connect.app_users", "connect.token_refusals"],
        description="View: one row per app user (connect.app_users) with needs_reconnect: the "
        "user's latest token refusal (connect.token_refusals, written by the record sync) came "
        "after their latest successful Connect session with connections.",
    ),
    table_spec(
        "connect.current_connections",
        group="connect",
        deps=["connect.connection_history"],
        description="View: one row per open connection (the rows of "
        "connect.connection_history with valid_to NULL).",
    ),
]
