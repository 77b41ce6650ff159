"""Asset checks on the warehouse tables, generated from the table lists.

One multi-asset check op per producing step (intake, connect, records), so each op runs right
after the step that wrote its tables, in the same single-slot "warehouse" pool: a check never
opens the DuckDB file while a writer has it. Key checks are blocking: a table with a duplicated
or NULL key stops the assets downstream of it in the same run.

Freshness threshold: SYNC_FRESHNESS_HOURS (default 26: a daily catch-up plus slack).
"""

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
import duckdb

from sync_pipeline.assets.intake import POOL
from sync_pipeline.resources import FreshnessResource, WarehouseResource
from sync_pipeline.tables.connect import APP_USERS, CONNECTION_HISTORY, SESSION_RESPONSES
from sync_pipeline.tables.ops import NOTIFICATION_ITEMS, NOTIFICATION_STATUS
from sync_pipeline.tables.registry import CHILD_TABLES, RECORD_TABLES, TABLES
from sync_pipeline.upstream.endpoints import ENDPOINTS
from sync_pipeline.warehouse import db

UNIQUE = "unique_key"
NON_NULL = "non_null_key"
LEDGER = "received_equals_loaded_plus_rejected"
FRESH = "fresh"

INTAKE_TABLES = (NOTIFICATION_ITEMS, SESSION_RESPONSES)
CONNECT_TABLES = (APP_USERS, CONNECTION_HISTORY)
# record tables, their children and medical.record_codes, and the notification statuses the
# same commit writes
RECORD_FAMILY = (*sorted((*RECORD_TABLES, *CHILD_TABLES)), NOTIFICATION_STATUS)
KEYS: dict[str, tuple[str, ...]] = {name: t.key for name, t in TABLES.items() if t.key}


def _key(table: str) -> dg.AssetKey:
    return dg.AssetKey(table.split("."))


def _key_specs(tables: Sequence[str]) -> list[dg.AssetCheckSpec]:
    specs = []
    for table in tables:
        keys = ", ".join(KEYS[table])
        specs.append(
            dg.AssetCheckSpec(
                UNIQUE,
                asset=_key(table),
                blocking=True,
                description=f"No two rows of {table} share the key ({keys}).",
            )
        )
        specs.append(
            dg.AssetCheckSpec(
                NON_NULL,
                asset=_key(table),
                blocking=True,
                description=f"No row of {table} has a NULL in its key ({keys}).",
            )
        )
    return specs


def _record_specs() -> list[dg.AssetCheckSpec]:
    specs = _key_specs(RECORD_FAMILY)
    for table in RECORD_TABLES:
        specs.append(
            dg.AssetCheckSpec(
                LEDGER,
                asset=_key(table),
                description="The latest load of the table (ops.load_log): received = loaded + "
                "rejected, and every rejected record is on record in ops.rejected_records.",
            )
        )
        specs.append(
            dg.AssetCheckSpec(
                FRESH,
                asset=_key(table),
                description="The table's endpoint was last synced without error (or loaded) "
                "less than SYNC_FRESHNESS_HOURS (default 26) ago.",
            )
        )
    return specs


@dataclass(frozen=True)
class _Outcome:
    passed: bool
    severity: dg.AssetCheckSeverity
    description: str
    metadata: dict[str, Any]


def _key_outcomes(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, _Outcome]:
    health = db.key_health(con, table, KEYS[table])
    meta: dict[str, Any] = {
        "rows": health.rows,
        "null_key_rows": health.null_keys,
        "duplicate_keys": health.duplicate_keys,
        "duplicate_rows": health.duplicate_rows,
    }
    error = dg.AssetCheckSeverity.ERROR
    return {
        UNIQUE: _Outcome(
            health.duplicate_keys == 0,
            error,
            f"{health.duplicate_keys} key(s) of {table} held by more than one row",
            meta,
        ),
        NON_NULL: _Outcome(
            health.null_keys == 0, error, f"{health.null_keys} row(s) with a NULL key", meta
        ),
    }


def _ledger_outcome(load: db.LatestLoad | None) -> _Outcome:
    error = dg.AssetCheckSeverity.ERROR
    if load is None:
        return _Outcome(True, error, "no load recorded yet", {})
    balanced = load.received == load.loaded + load.rejected and min(load.loaded, load.rejected) >= 0
    on_record = load.rejected <= load.rejects_on_record
    return _Outcome(
        balanced and on_record,
        error,
        f"run {load.run_id}: received {load.received}, loaded {load.loaded}, "
        f"rejected {load.rejected} ({load.rejects_on_record} rejects on record)",
        {
            "run_id": load.run_id,
            "received": load.received,
            "loaded": load.loaded,
            "rejected": load.rejected,
            "rejects_on_record": load.rejects_on_record,
        },
    )


def _fresh_outcome(last: dt.datetime | None, now: dt.datetime, limit: dt.timedelta) -> _Outcome:
    warn = dg.AssetCheckSeverity.WARN
    if last is None:
        return _Outcome(False, warn, "never synced", {"limit_hours": limit / dt.timedelta(hours=1)})
    age = now - last
    return _Outcome(
        age <= limit,
        warn,
        f"last synced {age} ago (limit {limit})",
        {
            "last_synced_at": last.isoformat(),
            "age_hours": round(age / dt.timedelta(hours=1), 2),
            "limit_hours": limit / dt.timedelta(hours=1),
        },
    )


def _evaluate(
    context: dg.AssetCheckExecutionContext,
    warehouse: WarehouseResource,
    tables: Sequence[str],
    freshness_hours: float | None,
) -> Iterator[dg.AssetCheckResult]:
    """Every selected check of `tables`; with `freshness_hours` (record tables) also the load
    ledger and freshness checks."""
    selected = context.selected_asset_check_keys
    location = warehouse.location
    if not location.exists():
        # nothing written yet: the producing step failed or has not run
        for check in sorted(selected, key=str):
            yield dg.AssetCheckResult(
                asset_key=check.asset_key,
                check_name=check.name,
                passed=False,
                description=f"no warehouse at {location.shown}",
            )
        return
    outcomes: dict[dg.AssetCheckKey, _Outcome] = {}
    with warehouse.connect(read_only=True) as con:
        for table in tables:
            if any(c.asset_key == _key(table) for c in selected):
                for name, outcome in _key_outcomes(con, table).items():
                    outcomes[dg.AssetCheckKey(_key(table), name)] = outcome
        if freshness_hours is not None:
            loads = db.latest_loads(con)
            synced = db.last_synced(con)
            now, limit = dt.datetime.now(dt.UTC), dt.timedelta(hours=freshness_hours)
            for endpoint in ENDPOINTS:
                load = loads.get(endpoint.table)
                times = [t for t in (synced.get(endpoint.path), load and load.committed_at) if t]
                outcomes[dg.AssetCheckKey(_key(endpoint.table), LEDGER)] = _ledger_outcome(load)
                outcomes[dg.AssetCheckKey(_key(endpoint.table), FRESH)] = _fresh_outcome(
                    max(times) if times else None, now, limit
                )
    for check in sorted(selected, key=str):
        outcome = outcomes[check]
        yield dg.AssetCheckResult(
            asset_key=check.asset_key,
            check_name=check.name,
            passed=outcome.passed,
            severity=outcome.severity,
            description=None if outcome.passed else outcome.description,
            metadata=outcome.metadata,
        )


@dg.multi_asset_check(
    specs=_key_specs(INTAKE_TABLES), name="intake_checks", can_subset=True, pool=POOL
)
def intake_checks(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> Iterator[dg.AssetCheckResult]:
    yield from _evaluate(context, warehouse, INTAKE_TABLES, freshness_hours=None)


@dg.multi_asset_check(
    specs=_key_specs(CONNECT_TABLES), name="connect_checks", can_subset=True, pool=POOL
)
def connect_checks(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> Iterator[dg.AssetCheckResult]:
    yield from _evaluate(context, warehouse, CONNECT_TABLES, freshness_hours=None)


@dg.multi_asset_check(specs=_record_specs(), name="record_checks", can_subset=True, pool=POOL)
def record_checks(
    context: dg.AssetCheckExecutionContext,
    warehouse: WarehouseResource,
    freshness: FreshnessResource,
) -> Iterator[dg.AssetCheckResult]:
    yield from _evaluate(context, warehouse, RECORD_FAMILY, freshness.max_age_hours)


CHECKS: list[dg.AssetChecksDefinition] = [intake_checks, connect_checks, record_checks]
