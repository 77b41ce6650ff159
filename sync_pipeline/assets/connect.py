"""Connect group: connection state rebuilt from every landed session response."""

import dagster as dg
import pandas as pd

from sync_pipeline import connect as state
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


@dg.multi_asset(specs=CONNECTION_SPECS, pool=POOL, name=CONNECTION_STATE)
def connection_state(context: dg.AssetExecutionContext, warehouse: WarehouseResource):  # type: ignore[no-untyped-def]
    def rebuild() -> ConnectionCounts:
        # one repeatable unit: a DuckLake commit conflict rebuilds again from the sessions
        with (
            warehouse.connect(writes=written_by(CONNECTION_STATE)) as con,
            db.transaction(con),
        ):
            return rebuild_connection_state(con)

    counts = retrying(rebuild, what="the connection state")
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


@dg.asset_check(
    asset=["connect", "source_status"],
    name="sources_agree_with_connections",
    blocking=False,
    pool=POOL,
    description="Users whose latest /sources snapshot disagrees with connect.current_connections "
    "(connected upstream but not here, or the reverse). Users whose connections changed after "
    "their latest snapshot are not judged until the next catch-up snapshots them again.",
)
def sources_agree_with_connections(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.connect(read_only=True) as con:
        history = db.query_arrow(con, "connect.connection_history", "valid_to IS NULL")
        snapshots = db.query_arrow(con, "connect.source_status")
        sessions = db.query_arrow(con, "connect.session_responses")
    snapshots_df = snapshots.to_pandas()
    fresh = state.fresh_snapshots(snapshots_df, sessions.to_pandas())
    problems = state.reconcile(history.to_pandas(), fresh)
    users = sorted(set(problems["human_id"]))
    return dg.AssetCheckResult(
        passed=problems.empty,
        severity=dg.AssetCheckSeverity.WARN,
        description=None
        if problems.empty
        else f"{len(users)} user(s) disagree: {', '.join(users)}",
        metadata={
            "users_disagreeing": len(users),
            "users_checked": fresh["human_id"].nunique() if len(fresh) else 0,
            "users_with_stale_snapshot": int(snapshots_df["human_id"].nunique())
            - (fresh["human_id"].nunique() if len(fresh) else 0),
            "disagreements": dg.MetadataValue.md(_markdown(problems)),
        },
    )


def _markdown(problems: pd.DataFrame, limit: int = 50) -> str:
    if problems.empty:
        return "none"
    lines = ["| human_id | source | problem |", "|---|---|---|"]
    lines += [
        f"| {h} | {s} | {p} |"
        for h, s, p in problems[["human_id", "source", "problem"]]
        .head(limit)
        .itertuples(index=False)
    ]
    if len(problems) > limit:
        lines.append(f"| … | {len(problems) - limit} more | |")
    return "\n".join(lines)


CONNECT_CHECKS = [sources_agree_with_connections]
