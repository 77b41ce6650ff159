"""Analytics group: the analyst layer built from the record tables after every sync.

One step writes the four analytics tables (and its own bookkeeping, ops.analytics_state) in one
DuckDB transaction, in the single-slot `warehouse` pool like every other writer; its checks run
in the same step, right after its commit, on the same connection.
"""

import datetime as dt
from collections.abc import Collection, Iterator
from typing import Any

import dagster as dg
import duckdb

from sync_pipeline.analytics.mapping import ObservationMapping, load_mapping
from sync_pipeline.assets.checks import contained
from sync_pipeline.assets.intake import POOL, table_metadata
from sync_pipeline.resources import WarehouseResource
from sync_pipeline.tables.analytics import (
    ANALYTICS_BUILD,
    COVERAGE,
    LATEST,
    OBSERVATIONS,
    STATE,
    UNMAPPED,
)
from sync_pipeline.tables.connect import (
    APP_USERS,
    CONNECTION_HISTORY,
    SOURCE_STATUS,
    TOKEN_REFUSALS,
    USERS,
)
from sync_pipeline.tables.ops import SYNC_FAILURES, SYNC_STATE
from sync_pipeline.tables.registry import written_by
from sync_pipeline.tables.specs import table_spec
from sync_pipeline.upstream.endpoints import ENDPOINTS
from sync_pipeline.warehouse import analytics as sql
from sync_pipeline.warehouse import db
from sync_pipeline.warehouse.conflicts import retrying


def _key(table: str) -> dg.AssetKey:
    return dg.AssetKey(table.split("."))


_OBSERVATION_INPUTS = [*sql.VITALS, *sql.LABS, *sql.READINGS]
# what the coverage SQL reads (warehouse/analytics.py _coverage_sql and its change detection)
_COVERAGE_INPUTS = [
    USERS,
    APP_USERS,
    TOKEN_REFUSALS,
    CONNECTION_HISTORY,
    SOURCE_STATUS,
    SYNC_STATE,
    SYNC_FAILURES,
    *(e.table for e in ENDPOINTS),
]

ANALYTICS_SPECS = [
    table_spec(
        OBSERVATIONS,
        group_name="analytics",
        kinds={"duckdb"},
        deps=[_key(t) for t in _OBSERVATION_INPUTS],
    ),
    table_spec(LATEST, group_name="analytics", kinds={"duckdb"}, deps=[_key(OBSERVATIONS)]),
    table_spec(
        COVERAGE, group_name="analytics", kinds={"duckdb"}, deps=[_key(t) for t in _COVERAGE_INPUTS]
    ),
    table_spec(UNMAPPED, group_name="analytics", kinds={"duckdb"}, deps=[_key(OBSERVATIONS)]),
    table_spec(
        STATE,
        group_name="analytics",
        kinds={"duckdb"},
        # what the fingerprints compared by the incremental build are made of
        deps=[_key(t) for t in dict.fromkeys((*sql.FINGERPRINT_TABLES, *_COVERAGE_INPUTS))],
    ),
]


# Preview columns: ids, days and statuses only, never values, names or codes (the Dagster
# instance is not PHI storage; a LOINC code next to a human_id says what was tested).
PREVIEWS = {
    OBSERVATIONS: ("record_table", "human_id", "record_id", "position", "source_id", "mapping"),
    LATEST: ("human_id", "record_table", "record_id", "position", "source_id"),
    COVERAGE: ("human_id", "source_id", "data_type", "day", "records", "reason"),
    UNMAPPED: ("kind", "record_table", "observations", "users", "example_record_id"),
    STATE: ("human_id", "mapping_version", "built_at"),
}


TRACEABLE = "traces_to_record"
UCUM = "coded_values_have_ucum_units"
PLAUSIBLE = "values_within_plausible_bounds"

_CHECK_SPECS = [
    dg.AssetCheckSpec(
        TRACEABLE,
        asset=_key(OBSERVATIONS),
        description="Every observation's (record_table, human_id, record_id, position) is an "
        "existing, not deleted record row.",
    ),
    dg.AssetCheckSpec(
        UCUM,
        asset=_key(OBSERVATIONS),
        description="No coded numeric observation without a unit, or with a unit that is not "
        "one of the mapping's UCUM units.",
    ),
    dg.AssetCheckSpec(
        PLAUSIBLE,
        asset=_key(OBSERVATIONS),
        description="Numeric values lie within the plausible physiological bounds of their "
        "code (loinc.csv low/high, in the code's unit); a warning names the codes and counts.",
    ),
]


def _check_results(
    con: duckdb.DuckDBPyConnection,
    mapping: ObservationMapping,
    selected: Collection[dg.AssetCheckKey],
) -> list[dg.AssetCheckResult]:
    """The selected checks of analytics.observations, read on the build's connection."""
    if not selected:
        return []
    untraceable = sql.untraceable_observations(con)
    without_ucum = sql.coded_values_without_ucum(con, mapping.ucum_units())
    outside = sql.out_of_bounds(con, mapping.loinc)
    error, warn = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN
    results = {
        TRACEABLE: dg.AssetCheckResult(
            asset_key=_key(OBSERVATIONS),
            check_name=TRACEABLE,
            passed=untraceable == 0,
            severity=error,
            description=None if untraceable == 0 else f"{untraceable} row(s) trace to nothing",
            metadata={"untraceable_rows": untraceable},
        ),
        UCUM: dg.AssetCheckResult(
            asset_key=_key(OBSERVATIONS),
            check_name=UCUM,
            passed=without_ucum == 0,
            severity=error,
            description=None if without_ucum == 0 else f"{without_ucum} row(s) without UCUM unit",
            metadata={"rows_without_ucum_unit": without_ucum},
        ),
        PLAUSIBLE: dg.AssetCheckResult(
            asset_key=_key(OBSERVATIONS),
            check_name=PLAUSIBLE,
            passed=not outside,
            severity=warn,
            description=None
            if not outside
            else "outside bounds: " + ", ".join(f"{c} ({n})" for c, n in outside.items()),
            metadata={
                "rows_out_of_bounds": sum(outside.values()),
                "codes_out_of_bounds": dg.MetadataValue.json(outside),
            },
        ),
    }
    return [results[check.name] for check in sorted(selected, key=str)]


class AnalyticsConfig(dg.Config):
    # rebuild every user's observations, not only those whose record rows changed
    full: bool = False


@dg.multi_asset(specs=ANALYTICS_SPECS, check_specs=_CHECK_SPECS, pool=POOL, name=ANALYTICS_BUILD)
def analytics_build(
    context: dg.AssetExecutionContext, config: AnalyticsConfig, warehouse: WarehouseResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    mapping = load_mapping()
    now = dt.datetime.now(dt.UTC)
    selected = context.selected_asset_check_keys

    def build() -> tuple[
        sql.BuildCounts, dict[str, dict[str, Any]], int, list[dg.AssetCheckResult]
    ]:
        # one repeatable unit: a DuckLake commit conflict builds again on the newer snapshot
        with warehouse.connect(writes=written_by(ANALYTICS_BUILD)) as con:
            db.bound_memory(con)
            counts = sql.build_analytics(con, mapping, today=now.date(), now=now, full=config.full)
            tables = {t: table_metadata(con, t, columns) for t, columns in PREVIEWS.items()}
            # the checks, read after the commit on the same connection
            checks = contained(
                sorted(selected, key=str), lambda: _check_results(con, mapping, selected)
            )
            return counts, tables, sql.distinct_codes(con), checks

    counts, tables, codes, checks = retrying(build, what="the analytics build")
    context.log.info(
        "analytics: observations of %d users and coverage of %d rebuilt (%s), %d observations, "
        "%d unmapped names/units",
        counts.users_rebuilt,
        counts.coverage_users_rebuilt,
        "full" if config.full else "incremental",
        counts.observations,
        counts.unmapped,
    )
    common: dict[str, Any] = {
        "users_rebuilt": counts.users_rebuilt,
        "mapping_version": mapping.version,
    }
    yield dg.MaterializeResult(
        asset_key=_key(OBSERVATIONS),
        metadata={**common, **tables[OBSERVATIONS], "distinct_codes": codes},
    )
    yield dg.MaterializeResult(asset_key=_key(LATEST), metadata={**common, **tables[LATEST]})
    # `changed`: the users whose rows were rebuilt (0: the table was not written)
    yield dg.MaterializeResult(
        asset_key=_key(COVERAGE),
        metadata={"changed": counts.coverage_users_rebuilt, **tables[COVERAGE]},
    )
    yield dg.MaterializeResult(
        asset_key=_key(UNMAPPED),
        metadata={"changed": counts.users_rebuilt, **tables[UNMAPPED]},
    )
    yield dg.MaterializeResult(asset_key=_key(STATE), metadata={**common, **tables[STATE]})
    # after the materialisations: a check evaluation names the latest one of its asset
    yield from checks
