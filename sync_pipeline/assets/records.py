"""Records: one Dagster step syncs every medical and wellness table for the run's mode.

The step fetches with no database handle open (staging Parquet into the lake), then commits
everything in one DuckDB transaction; it holds the single warehouse pool slot for its duration
so no other step opens the file meanwhile. After the commit it reads its tables once, read-only,
to report them, and on the same connection evaluates their asset checks (assets/checks.py,
assets/sources_check.py).
"""

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from typing import Any, Literal

import dagster as dg

from sync_pipeline.assets.checks import contained, record_results, record_specs
from sync_pipeline.assets.intake import POOL, tables_metadata
from sync_pipeline.assets.sources_check import SOURCES_AGREE_SPEC, sources_agree
from sync_pipeline.resources import (
    FreshnessResource,
    LakeResource,
    UpstreamResource,
    WarehouseResource,
)
from sync_pipeline.sync.commit import CommitSummary
from sync_pipeline.sync.interrupt import SyncInterrupted
from sync_pipeline.sync.plan import Shard
from sync_pipeline.sync.run import SyncTarget, run_sync
from sync_pipeline.tables.connect import (
    APP_USERS,
    CONNECTION_HISTORY,
    CURRENT_CONNECTIONS,
    SOURCE_STATUS,
    TOKEN_REFUSALS,
    USERS,
)
from sync_pipeline.tables.ops import (
    NOTIFICATION_ITEMS,
    NOTIFICATION_STATUS,
    NOTIFICATIONS,
    RECORD_SYNC,
)
from sync_pipeline.tables.registry import CHILD_TABLES, RECORD_TABLES, table, tables_owned_by
from sync_pipeline.tables.registry import written_by as tables_written_by
from sync_pipeline.tables.specs import table_spec
from sync_pipeline.upstream.client import ClientCredentialsRejected, UpstreamUnreachable
from sync_pipeline.upstream.endpoints import ENDPOINTS
from sync_pipeline.upstream.errors import NEEDS_RECONNECT, failure_kind
from sync_pipeline.warehouse import db

# What the sync reads to plan a run: pending notifications, users (and who must reconnect),
# open connections. Views are named with the tables under them, so the graph shows both the
# table analysts query and the step that must run first.
SYNC_INPUTS = [
    NOTIFICATIONS.split("."),
    NOTIFICATION_ITEMS.split("."),
    USERS.split("."),
    APP_USERS.split("."),
    CURRENT_CONNECTIONS.split("."),
    CONNECTION_HISTORY.split("."),
]
RECORD_SPECS = [
    table_spec(
        endpoint.table,
        group_name=endpoint.group,
        kinds={"duckdb", "parquet"},
        deps=SYNC_INPUTS,
    )
    for endpoint in ENDPOINTS
]
# child tables (medical.record_codes among them, a child of every medical table)
CHILD_SPECS = [
    table_spec(
        child,
        group_name="medical",
        kinds={"duckdb", "parquet"},
        deps=[parent.split(".") for parent in table(child).parents],
    )
    for child in sorted(CHILD_TABLES)
]
# what else the sync writes in the same commit: /sources snapshots, token refusals, the
# notification statuses and its bookkeeping (cursors, rejects, flags, request audit, loads)
_DEPS = {
    SOURCE_STATUS: [USERS.split("."), APP_USERS.split(".")],
    NOTIFICATION_STATUS: [NOTIFICATION_ITEMS.split(".")],
    TOKEN_REFUSALS: [APP_USERS.split(".")],
}
OTHER_SPECS = [
    table_spec(
        t.name,
        group_name=t.schema_name,  # connect or ops
        kinds={"duckdb"},
        deps=_DEPS.get(t.name, []),
    )
    for t in tables_owned_by(RECORD_SYNC)
    if t.name not in RECORD_TABLES and t.name not in CHILD_TABLES
]


ALL_SPECS = [*RECORD_SPECS, *CHILD_SPECS, *OTHER_SPECS]
_ALL_TABLES = [".".join(spec.key.path) for spec in ALL_SPECS]


class SyncRunConfig(dg.Config):
    mode: Literal["incremental", "catchup", "full"] = "incremental"
    # narrow the run to these users (human_id or client_user_id); empty = everyone
    users: list[str] = []  # noqa: RUF012 - pydantic copies field defaults
    # parallel runs split the users by a stable hash (sync/plan.py shard_of): this run syncs
    # the users of shard `shard_index` out of `shard_count`; other shards' notifications stay
    # pending for the runs that own them
    shard_index: int = 0
    shard_count: int = 1


@dg.multi_asset(
    specs=ALL_SPECS,
    check_specs=[*record_specs(), SOURCES_AGREE_SPEC],
    pool=POOL,
    name=RECORD_SYNC,
    retry_policy=dg.RetryPolicy(
        max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
    ),
)
def record_sync(
    context: dg.AssetExecutionContext,
    config: SyncRunConfig,
    upstream: UpstreamResource,
    warehouse: WarehouseResource,
    lake: LakeResource,
    freshness: FreshnessResource,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    target = SyncTarget(
        upstream=upstream,
        warehouse=warehouse.location,
        lake=lake.location,
        transport=upstream.transport(),
    )
    try:
        report = run_sync(
            target,
            run_id=context.run.run_id,
            mode=config.mode,
            only_users=set(config.users) or None,
            shard=Shard(config.shard_index, config.shard_count),
            writes=tables_written_by(RECORD_SYNC),
        )
    except SyncInterrupted as stop:
        # an operator's stop: Dagster would otherwise retry an interrupted step
        raise dg.Failure(
            description=str(stop), metadata={"signal": stop.signal_name}, allow_retries=False
        ) from None
    except (UpstreamUnreachable, ClientCredentialsRejected) as dead_end:
        # nobody can sync from this upstream now: retrying in seconds would only repeat it
        # (the next scheduled run tries again)
        raise dg.Failure(description=str(dead_end), allow_retries=False) from None
    summary = report.summary
    # one line per (user, reason): a refused user fails every endpoint the same way
    failed: dict[tuple[str, str], list[str]] = {}
    for human_id, endpoint, why in summary.failed_items:
        failed.setdefault((human_id, why), []).append(endpoint)
    for (human_id, why), endpoints in failed.items():
        context.log.warning(
            "not synced: user %s, %s: %s", human_id, ", ".join(sorted(endpoints)), why
        )
    if summary.refused_users:
        context.log.warning(
            "token refused (user must reconnect): %s", ", ".join(summary.refused_users)
        )
    # one read-only look per table after the commit (the step still holds the pool slot); the
    # same connection then evaluates the checks, once the materialisations they judge are on
    # record (a check evaluation names the latest materialisation of its asset)
    selected = context.selected_asset_check_keys
    with warehouse.connect(read_only=True) as con:
        cursors = db.cursors_by_run(con, context.run.run_id)
        tables = tables_metadata(con, _ALL_TABLES)
        for spec in ALL_SPECS:
            table = ".".join(spec.key.path)
            yield dg.MaterializeResult(
                asset_key=spec.key,
                metadata=_metadata(table, config.mode, summary, tables[table], cursors),
            )
        checks = record_results(con, selected, freshness.max_age_hours, now=dt.datetime.now(dt.UTC))
        if SOURCES_AGREE_SPEC.key in selected:
            checks += contained([SOURCES_AGREE_SPEC.key], lambda: [sources_agree(con)])
    # before a Failure below: a step that committed reports its checks even when items were
    # left behind
    yield from checks
    left_behind = [item for item in summary.failed_items if item[2] != NEEDS_RECONNECT]
    if left_behind:
        # everything that succeeded is committed and materialised above; the step still fails,
        # so a run with items left behind is red in the UI and the CLI exits non-zero (the
        # failed items keep their cursors and are retried by the next run, not by this step)
        reasons = Counter(failure_kind(why) for _, _, why in left_behind)
        raise dg.Failure(
            description=f"{len(left_behind)} of {len(report.plan.items)} (user, endpoint) items "
            "failed: " + "; ".join(f"{n} × {why}" for why, n in reasons.most_common(5)),
            metadata={
                "failed_items": len(left_behind),
                "users": len({h for h, _, _ in left_behind}),
            },
            allow_retries=False,
        )


_PATHS = {e.table: e.path for e in ENDPOINTS}


def _metadata(
    table: str,
    mode: str,
    summary: CommitSummary,
    read: dict[str, Any],
    cursors: dict[str, tuple[int, dt.datetime]],
) -> dict[str, Any]:
    """What one table's materialisation reports: the run's mode, requests and failures, the
    table's rows and preview (`read` after the commit), its load counts and its cursors."""
    metadata: dict[str, Any] = {
        "mode": mode,
        "requests": summary.requests,  # the whole run's requests, every table
        **read,
    }
    load = summary.tables.get(table)
    if load is not None:
        metadata.update(
            received=load.received,
            loaded=load.loaded,
            rejected=load.rejected,
            inserted=load.inserted,
            updated=load.updated,
            deleted=load.deleted,
        )
    if table in _PATHS:
        advanced, newest = cursors.get(_PATHS[table], (0, None))
        metadata["cursors_advanced"] = advanced
        if newest is not None:
            metadata["newest_cursor"] = newest.isoformat()
    metadata["failed_items"] = len(summary.failed_items)
    metadata["users_needing_reconnect"] = len(summary.refused_users)
    return metadata
