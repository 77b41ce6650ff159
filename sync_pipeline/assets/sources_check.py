"""The `sources_agree_with_connections` check of connect.source_status.

It is a check spec of record_sync, the step that writes the /sources snapshots, evaluated in
that step after its commit on the connection the step reads its tables with.
"""

import dagster as dg
import duckdb
import pandas as pd

from sync_pipeline import connect as state
from sync_pipeline.tables.connect import SOURCE_STATUS
from sync_pipeline.warehouse import db

SOURCES_AGREE = "sources_agree_with_connections"
SOURCES_AGREE_SPEC = dg.AssetCheckSpec(
    SOURCES_AGREE,
    asset=SOURCE_STATUS.split("."),
    blocking=False,
    description="Users whose latest /sources snapshot disagrees with connect.current_connections "
    "(connected upstream but not here, or the reverse). Users whose connections changed after "
    "their latest snapshot are not judged until the next catch-up snapshots them again.",
)


def sources_agree(con: duckdb.DuckDBPyConnection) -> dg.AssetCheckResult:
    """The check's result on the warehouse `con` reads."""
    history = db.query_arrow(con, "connect.connection_history", "valid_to IS NULL")
    snapshots = db.query_arrow(con, "connect.source_status")
    sessions = db.query_arrow(con, "connect.session_responses")
    snapshots_df = snapshots.to_pandas()
    fresh = state.fresh_snapshots(snapshots_df, sessions.to_pandas())
    problems = state.reconcile(history.to_pandas(), fresh)
    users = sorted(set(problems["human_id"]))
    return dg.AssetCheckResult(
        asset_key=SOURCES_AGREE_SPEC.asset_key,
        check_name=SOURCES_AGREE,
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
