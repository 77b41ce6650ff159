"""Connect group: connection state rebuilt from every landed session response."""

import dagster as dg

from sync_pipeline.assets.intake import POOL
from sync_pipeline.assets.resources import SyncSettings
from sync_pipeline.sync.connection_state import rebuild_connection_state
from sync_pipeline.warehouse import db

CONNECTION_SPECS = [
    dg.AssetSpec(
        ["connect", "users"],
        group_name="connect",
        kinds={"duckdb"},
        deps=[["connect", "session_responses"]],
        description="One row per app user: client_user_id ↔ human_id, first/last seen, last "
        "session status, needs_reconnect.",
    ),
    dg.AssetSpec(
        ["connect", "connection_events"],
        group_name="connect",
        kinds={"duckdb"},
        deps=[["connect", "session_responses"]],
        description="One row per source connected or disconnected by a Connect session.",
    ),
    dg.AssetSpec(
        ["connect", "connection_history"],
        group_name="connect",
        kinds={"duckdb"},
        deps=[["connect", "session_responses"]],
        description="SCD type 2: one row per (human_id, source_id) connection period; valid_to "
        "is NULL while connected. connect.current_connections is a view of the open rows.",
    ),
]


@dg.multi_asset(specs=CONNECTION_SPECS, pool=POOL, name="connection_state")
def connection_state(context: dg.AssetExecutionContext, sync: SyncSettings):  # type: ignore[no-untyped-def]
    settings = sync.load()
    with db.connect(settings.warehouse_path) as con:
        con.execute("BEGIN TRANSACTION")
        counts = rebuild_connection_state(con)
        con.execute("COMMIT")
    context.log.info(
        "connection state: %d users (%d need to reconnect), %d open connections",
        counts.users,
        counts.needs_reconnect,
        counts.open_connections,
    )
    yield dg.MaterializeResult(
        asset_key=["connect", "users"],
        metadata={"rows": counts.users, "needs_reconnect": counts.needs_reconnect},
    )
    yield dg.MaterializeResult(
        asset_key=["connect", "connection_events"], metadata={"rows": counts.events}
    )
    yield dg.MaterializeResult(
        asset_key=["connect", "connection_history"],
        metadata={"rows": counts.history_rows, "open_connections": counts.open_connections},
    )
