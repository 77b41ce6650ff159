"""Asset checks on the warehouse tables, as check specs of the asset that writes each table.

Each writing step evaluates the checks of its own tables right after its commit, from the
connection it opens anyway to report its tables (no separate check step: no second warehouse
open, no extra step events). One key-health scan per table answers both key checks. Key
checks are blocking: a table with a duplicated or NULL key fails its writing step after the
materialisations, which stops the assets downstream of it in the same run (Dagster raises
DagsterAssetCheckFailedError once the step's generator is done, outside the retry policy).

Freshness threshold: SYNC_FRESHNESS_HOURS (default 26: a daily catch-up plus slack).
"""

import datetime as dt
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
import duckdb

from sync_pipeline.tables.ops import NOTIFICATION_STATUS
from sync_pipeline.tables.registry import CHILD_TABLES, RECORD_TABLES, TABLES
from sync_pipeline.upstream.endpoints import ENDPOINTS
from sync_pipeline.warehouse import db

UNIQUE = "unique_key"
NON_NULL = "non_null_key"
LEDGER = "received_equals_loaded_plus_rejected"
FRESH = "fresh"

# record tables, their children and medical.record_codes, and the notification statuses the
# same commit writes
RECORD_FAMILY = (*sorted((*RECORD_TABLES, *CHILD_TABLES)), NOTIFICATION_STATUS)
KEYS: dict[str, tuple[str, ...]] = {name: t.key for name, t in TABLES.items() if t.key}


def _key(table: str) -> dg.AssetKey:
    return dg.AssetKey(table.split("."))


def key_specs(tables: Sequence[str]) -> list[dg.AssetCheckSpec]:
    """The two blocking key checks of each table (the table's declared key)."""
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


def record_specs() -> list[dg.AssetCheckSpec]:
    """Key checks of the record family, and the load ledger and freshness of each record table."""
    specs = key_specs(RECORD_FAMILY)
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


def _key_outcomes(health: db.KeyHealth, table: str) -> dict[str, _Outcome]:
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


def _result(check: dg.AssetCheckKey, outcome: _Outcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=check.asset_key,
        check_name=check.name,
        passed=outcome.passed,
        severity=outcome.severity,
        description=None if outcome.passed else outcome.description,
        metadata=outcome.metadata,
    )


def _unreadable(error: Exception, what: str) -> _Outcome:
    # the error's type only: DuckDB messages may quote values, and check descriptions are
    # stored in the Dagster instance, which is not PHI storage
    return _Outcome(
        False,
        dg.AssetCheckSeverity.ERROR,
        f"could not read {what}: {type(error).__name__}",
        {"error": type(error).__name__},
    )


def key_results(
    con: duckdb.DuckDBPyConnection, tables: Iterable[str], selected: Collection[dg.AssetCheckKey]
) -> list[dg.AssetCheckResult]:
    """The selected key checks of `tables`: one key-health scan per table with a selected check.
    A table that cannot be read fails its own checks, not the step."""
    results = []
    for table in tables:
        wanted = sorted(
            (c for c in selected if c.asset_key == _key(table) and c.name in (UNIQUE, NON_NULL)),
            key=str,
        )
        if not wanted:
            continue
        try:
            outcomes = _key_outcomes(db.key_health(con, table, KEYS[table]), table)
        except duckdb.Error as error:
            outcomes = dict.fromkeys((UNIQUE, NON_NULL), _unreadable(error, table))
        results += [_result(check, outcomes[check.name]) for check in wanted]
    return results


def record_results(
    con: duckdb.DuckDBPyConnection,
    selected: Collection[dg.AssetCheckKey],
    freshness_hours: float,
    now: dt.datetime,
) -> list[dg.AssetCheckResult]:
    """The selected checks of `record_specs()`: key health of the record family, then the load
    ledger and freshness of each record table (one read of ops.load_log and ops.sync_state)."""
    results = key_results(con, RECORD_FAMILY, selected)
    ledger_or_fresh = sorted((c for c in selected if c.name in (LEDGER, FRESH)), key=str)
    if not ledger_or_fresh:
        return results
    try:
        loads = db.latest_loads(con)
        synced = db.last_synced(con)
    except duckdb.Error as error:
        unreadable = _unreadable(error, "ops.load_log and ops.sync_state")
        return results + [_result(check, unreadable) for check in ledger_or_fresh]
    limit = dt.timedelta(hours=freshness_hours)
    outcomes: dict[dg.AssetCheckKey, _Outcome] = {}
    for endpoint in ENDPOINTS:
        load = loads.get(endpoint.table)
        times = [t for t in (synced.get(endpoint.path), load and load.committed_at) if t]
        outcomes[dg.AssetCheckKey(_key(endpoint.table), LEDGER)] = _ledger_outcome(load)
        outcomes[dg.AssetCheckKey(_key(endpoint.table), FRESH)] = _fresh_outcome(
            max(times) if times else None, now, limit
        )
    return results + [_result(check, outcomes[check]) for check in ledger_or_fresh]


def contained(
    checks: Sequence[dg.AssetCheckKey], evaluate: Callable[[], list[dg.AssetCheckResult]]
) -> list[dg.AssetCheckResult]:
    """`evaluate()`, or, when it raises, each of `checks` failed with the error's type. The
    boundary of a check evaluated in its writing step: a check that cannot be evaluated is a
    failed check, never a failed step (which its retry policy would run again, commit and all)."""
    try:
        return evaluate()
    except Exception as error:  # the check boundary: see the docstring
        return [_result(check, _unreadable(error, "the check's tables")) for check in checks]
