"""Connect group: connection state rebuilt from every landed session response."""

from collections.abc import Iterator

import dagster as dg

from sync_pipeline.assets.checks import key_results, key_specs
from sync_pipeline.assets.intake import POOL
from sync_pipeline.resources import WarehouseResource
from sync_pipeline.sync.connection_state import ConnectionCounts, rebuild_connection_state
from sync_pipeline.tables.connect import (
    APP_USERS,
    CONNECTION_EVENTS,
    CONNECTION_HISTORY,
    CONNECTION_STATE,
    SESSION_RESPONSES,
)
from sync_pipeline.tables.registry import written_by
from sync_pipeline.tables.specs import table_spec
from sync_pipeline.warehouse import db
from sync_pipeline.warehouse.conflicts import retrying

CONNECTION_SPECS = [
    table_spec(name, group_name="connect", kinds={"duckdb"}, deps=[SESSION_RESPONSES.split(".")])
    for name in (APP_USERS, CONNECTION_EVENTS, CONNECTION_HISTORY)
]


# its tables with a declared key (connection_events has none: one row per change a session made)
CHECKED_TABLES = (APP_USERS, CONNECTION_HISTORY)


@dg.multi_asset(
    specs=CONNECTION_SPECS,
    check_specs=key_specs(CHECKED_TABLES),
    pool=POOL,
    name=CONNECTION_STATE,
)
def connection_state(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    selected = context.selected_asset_check_keys

    def rebuild() -> tuple[ConnectionCounts, list[dg.AssetCheckResult]]:
        # one repeatable unit: a DuckLake commit conflict rebuilds again from the sessions
        with warehouse.connect(writes=written_by(CONNECTION_STATE)) as con:
            with db.transaction(con):
                counts = rebuild_connection_state(con)
            # the key checks, read after the commit on the same connection
            return counts, key_results(con, CHECKED_TABLES, selected)

    counts, checks = retrying(rebuild, what="the connection state")
    context.log.info(
        "connection state: %d users (%d connected by a successful session), %d open connections",
        counts.users,
        counts.reconnected,
        counts.open_connections,
    )
    yield dg.MaterializeResult(
        asset_key=["connect", "app_users"],
        metadata={"rows": counts.users, "connected_by_a_session": counts.reconnected},
    )
    yield dg.MaterializeResult(
        asset_key=["connect", "connection_events"], metadata={"rows": counts.events}
    )
    yield dg.MaterializeResult(
        asset_key=["connect", "connection_history"],
        metadata={"rows": counts.history_rows, "open_connections": counts.open_connections},
    )
    # after the materialisations: a check evaluation names the latest one of its asset
    yield from checks
