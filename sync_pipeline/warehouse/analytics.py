"""The SQL of the analyst layer: analytics.observations, latest_observations, coverage and
ops.unmapped_codes, built inside DuckDB from the record tables and the packaged mapping.

Set-based on purpose: the record rows never leave DuckDB; the mapping (a few hundred rows) is
registered as Arrow tables and joined. Table and column names come from the table registry and the
endpoint catalogue (allow-listed by `db.quoted`), values are bound.

Incremental: a user's observations are rebuilt only when the fingerprint of their record rows
(count and a hash of record_id, updated_at, deleted_at over every source table) or the mapping
version differs from what `ops.analytics_state` holds from the last build. A deletion changes
`deleted_at` and so the fingerprint; child rows are replaced only together with their parent's
`updated_at`, so the parents are enough. latest_observations follows the same users;
unmapped_codes (an aggregate over every user) is rebuilt whole when any user's observations were.
A user's coverage rows are rebuilt only when the fingerprint of the user's landed records, of
their connection status (periods, connectedSince, refusals, syncs, failures), the set of data
types landed by anyone, or the day differs from the last build's; the day's first build so
rebuilds everyone's. When nothing differs nothing is written. `full=True` rebuilds everything;
either way the tables are the same.
"""

from __future__ import annotations

import datetime as dt
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from sync_pipeline.analytics.mapping import ObservationMapping
from sync_pipeline.tables.analytics import COVERAGE, LATEST, OBSERVATIONS, STATE, UNMAPPED
from sync_pipeline.upstream.endpoints import ENDPOINTS, READING_TYPES
from sync_pipeline.warehouse.db import quoted, row_counts, written

# Coverage goes back at most this far: enough for trends, bounded for sources with decades.
COVERAGE_MAX_DAYS = 3 * 365
# Up to this many users whose coverage changed, their rows are rebuilt through a filter on
# the users; beyond it the whole table is (cheaper than a filter matching most of it).
LANDED_FILTER_USERS = 64
# Drops binary floating-point noise after a conversion (1727 mm × 0.1 → 172.7, not
# 172.70000000000002); far below any instrument's precision.
CONVERTED_DECIMALS = 9

VITALS = ("medical.vitals", "medical.vital_results")
LABS = ("medical.test_results", "medical.test_result_components")
READINGS = tuple(f"wellness.{kind}" for kind in READING_TYPES)
# the fields of a reading that are measured values, in `position` order
READING_FIELDS: dict[str, tuple[str, ...]] = {
    table: ("systolic", "diastolic", "heart_rate")
    if table == "wellness.blood_pressure"
    else ("value",)
    for table in READINGS
}
# the parent tables whose rows decide which users' observations are rebuilt
FINGERPRINT_TABLES = (VITALS[0], LABS[0], *READINGS)


def _number_text(column: str) -> str:
    """A number as text the way JSON sent it: 136 rather than DuckDB's 136.0 for a DOUBLE."""
    return (
        f"CASE WHEN {column} = trunc({column}) AND abs({column}) < 1e15 "
        f"THEN CAST(CAST({column} AS BIGINT) AS VARCHAR) ELSE CAST({column} AS VARCHAR) END"
    )


# a number, then the rest of the text: a lab value like "5.1 THO/uL" states its unit inline
_INLINE_UNIT = r"^\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)\s*(.*?)\s*$"


@dataclass(frozen=True)
class BuildCounts:
    # users whose observations were rebuilt
    users_rebuilt: int
    # users whose coverage rows were rebuilt
    coverage_users_rebuilt: int
    observations: int
    latest: int
    coverage: int
    unmapped: int


def _reading_sources() -> str:
    selects = []
    for table in READINGS:
        kind = table.split(".", 1)[1]
        for position, field in enumerate(READING_FIELDS[table]):
            # blood pressure's `unit` is the pressures' unit; its heart rate states none
            unit = "NULL" if field == "heart_rate" and kind == "blood_pressure" else "unit"
            name = kind if field == "value" else f"{kind}.{field}"
            selects.append(
                f"""SELECT human_id, source_id, measured_at AS observed_at, 'device' AS category,
                    '{table}' AS record_table, record_id, {position}::BIGINT AS position,
                    '{name}' AS source_name, {_number_text(f'"{field}"')} AS source_value,
                    CAST("{field}" AS DOUBLE) AS number,
                    nullif(trim({unit}), '') AS source_unit, NULL::VARCHAR AS source_code,
                    '{field}' AS field
                FROM {quoted(table)}
                WHERE deleted_at IS NULL AND human_id IN (SELECT human_id FROM scope)"""
            )
    return "\nUNION ALL\n".join(selects)


def _source_sql() -> str:
    """One row per measured value of the users in `scope`, with the source's own values."""
    return f"""
    SELECT r.human_id, v.source_id, v.recorded_at AS observed_at, 'vital' AS category,
           'medical.vital_results' AS record_table, r.record_id, r.position,
           r.name AS source_name, {_number_text("r.value")} AS source_value,
           r.value AS number, nullif(trim(r.unit), '') AS source_unit,
           r.loinc_code AS source_code, NULL::VARCHAR AS field
    FROM {quoted(VITALS[1])} r JOIN {quoted(VITALS[0])} v USING (human_id, record_id)
    WHERE v.deleted_at IS NULL AND r.human_id IN (SELECT human_id FROM scope)
    UNION ALL
    SELECT c.human_id, t.source_id, t.result_at, 'lab',
           'medical.test_result_components', c.record_id, c.position,
           c.name, c.value, c.value_numeric,
           coalesce(
               nullif(trim(c.unit), ''),
               CASE WHEN c.value_numeric IS NOT NULL
                    THEN nullif(regexp_extract(c.value, '{_INLINE_UNIT}', 1), '') END
           ),
           c.loinc_code, NULL
    FROM {quoted(LABS[1])} c JOIN {quoted(LABS[0])} t USING (human_id, record_id)
    WHERE t.deleted_at IS NULL AND c.human_id IN (SELECT human_id FROM scope)
    UNION ALL
    {_reading_sources()}
    """


# The mapping applied to the source rows. Each join finds at most one row (the mapping's keys
# are unique: mapping_problems), so the result has exactly one row per source row.
_RESOLVE = """
WITH src AS ({source}),
unit_known AS (
    SELECT s.*, u.ucum AS spelled_ucum
    FROM src s LEFT JOIN map_units u ON u.source_unit = s.source_unit
),
coded AS (
    SELECT s.*,
           n.code AS name_code,
           e.code AS endpoint_code,
           CASE WHEN s.source_unit IS NULL THEN e.assumed_unit ELSE s.spelled_ucum END
               AS source_ucum
    FROM unit_known s
    LEFT JOIN map_names n
           ON n.category = s.category AND n.name = lower(trim(s.source_name))
    LEFT JOIN map_endpoints e
           ON e.record_table = s.record_table AND e.field = s.field
          AND (e.unit IS NULL OR e.unit = s.spelled_ucum)
),
resolved AS (
    SELECT s.*,
           coalesce(s.source_code, s.name_code, s.endpoint_code) AS code,
           CASE WHEN s.source_code IS NOT NULL THEN 'source_code'
                WHEN s.name_code IS NOT NULL THEN 'by_name'
                WHEN s.endpoint_code IS NOT NULL THEN 'by_endpoint'
                ELSE 'unmapped' END AS mapping
    FROM coded s
)
SELECT s.human_id, s.source_id, s.observed_at, s.category, s.code,
       CASE WHEN s.code IS NOT NULL THEN 'LOINC' END AS code_system,
       coalesce(l.display, CASE WHEN s.code IS NOT NULL THEN s.source_name END) AS display,
       CASE WHEN z.value IS NOT NULL OR s.source_ucum IS NULL THEN NULL
            WHEN l.unit = s.source_ucum OR k.factor IS NULL THEN s.number
            ELSE round(s.number * k.factor, $decimals) END AS value_numeric,
       CASE WHEN z.value IS NOT NULL THEN NULL
            WHEN s.number IS NULL OR s.source_ucum IS NULL THEN s.source_value END AS value_text,
       CASE WHEN k.factor IS NOT NULL THEN l.unit ELSE s.source_ucum END AS unit,
       s.source_name, s.source_value, s.source_unit, s.source_code, s.mapping,
       s.record_table, s.record_id, s.position
FROM resolved s
LEFT JOIN map_loinc l ON l.code = s.code
LEFT JOIN map_conversions k ON k.from_unit = s.source_ucum AND k.to_unit = l.unit
LEFT JOIN map_sentinels z
       ON z.record_table = s.record_table AND z.field = s.field AND z.value = s.number
"""


def _fingerprint_sql() -> str:
    parts = " UNION ALL ".join(
        f"SELECT '{t}' AS t, human_id, record_id, updated_at, deleted_at FROM {quoted(t)}"
        for t in FINGERPRINT_TABLES
    )
    return f"""
    SELECT human_id,
           count(*)::VARCHAR || ':'
               || sum(hash(t, record_id, updated_at, deleted_at)::HUGEINT)::VARCHAR
               AS fingerprint
    FROM ({parts}) GROUP BY human_id
    """


# the rows of LATEST (its INSERT names the target through db.written at build time)
_LATEST = f"""
SELECT human_id, code, code_system, display, category, observed_at, value_numeric, value_text,
       unit, source_id, record_table, record_id, position
FROM {quoted(OBSERVATIONS)}
WHERE code IS NOT NULL AND (value_numeric IS NOT NULL OR value_text IS NOT NULL)
  AND human_id IN (SELECT human_id FROM scope)
QUALIFY row_number() OVER (
    PARTITION BY human_id, code
    ORDER BY observed_at DESC NULLS LAST, record_table, record_id, position
) = 1
"""

# the rows of UNMAPPED
_UNMAPPED = f"""
WITH problems AS (
    SELECT 'name' AS kind, record_table, coalesce(source_name, '(missing)') AS value,
           human_id, record_id, position, observed_at
    FROM {quoted(OBSERVATIONS)} WHERE mapping = 'unmapped'
    UNION ALL
    -- a unit spelling the mapping does not know, or a number sent with no unit at all
    SELECT 'unit', record_table, coalesce(source_unit, '(missing)'),
           human_id, record_id, position, observed_at
    FROM {quoted(OBSERVATIONS)}
    WHERE unit IS NULL
      AND (source_unit IS NOT NULL OR TRY_CAST(source_value AS DOUBLE) IS NOT NULL)
)
SELECT kind, record_table, value, count(*) AS observations,
       count(DISTINCT human_id) AS users,
       -- human_id breaks ties: the example must not depend on the order rows were written
       arg_min(human_id, (record_id, position, human_id)) AS example_human_id,
       min(record_id) AS example_record_id,
       min(observed_at) AS first_observed_at, max(observed_at) AS last_observed_at
FROM problems GROUP BY kind, record_table, value
"""


def _landed_sql() -> str:
    """Per user, source, record table and UTC day: the records created upstream that day (the
    temp table `landed`, read by coverage and by its change detection)."""
    return " UNION ALL ".join(
        f"""SELECT human_id, source_id, '{e.table}' AS data_type,
                   (created_at AT TIME ZONE 'UTC')::DATE AS day, count(*) AS records
            FROM {quoted(e.table)}
            WHERE deleted_at IS NULL AND source_id IS NOT NULL AND created_at IS NOT NULL
            GROUP BY ALL"""
        for e in ENDPOINTS
    )


# The upstream's /sources snapshots as coverage reads them (temp table `upstream_since`): a
# Connect session only tells us about a connection from the day it landed; the snapshot's
# `connectedSince` says since when it has really been connected, which explains the history a
# new connection brings with it. The name is the newest snapshot's (deterministic: a per-user
# rebuild must give the rows a full one does). json_extract_string, not ->>: DuckDB 1.4 binds
# ->> looser than AND.
_UPSTREAM_SINCE = """
SELECT human_id, json_extract_string(raw, '$.id') AS source_id,
       arg_max(json_extract_string(raw, '$.name'), snapshot_at) AS source_name,
       min(connected_since) AS since
FROM connect.source_status
WHERE connected_since IS NOT NULL AND json_extract_string(raw, '$.id') IS NOT NULL
GROUP BY ALL
"""

# connect.users reduced to one row per human_id (temp table `human_users`): it has one row per
# app user (client_user_id), and two app users may share a human_id; joined as it is, each would
# repeat that human's coverage rows. The human must reconnect only while every app user of
# theirs must (one that reconnected after the refusal renewed the human's token).
_HUMAN_USERS = """
SELECT human_id, bool_and(needs_reconnect) AS needs_reconnect, max(last_seen_at) AS last_seen_at
FROM connect.users WHERE human_id IS NOT NULL GROUP BY human_id
"""


def _coverage_sql(*, per_user: bool) -> str:
    """The rows of COVERAGE: of every user, or (`per_user`) of the users in `coverage_scope`.
    A user's rows depend on no other user's but through `types`, which is read whole either
    way, so the per-user rows are exactly the full build's rows of those users. Their sync
    status comes from the temp table `coverage_status` (_write_coverage). The whole table reads
    the record tables again rather than the temp table `landed` (the same rows): built on
    that one small table, the query took twice as long."""
    only = "WHERE human_id IN (SELECT human_id FROM coverage_scope)" if per_user else ""
    return f"""
WITH landed_here AS (SELECT * FROM ({_landed_sql()}) {only}),
types AS (SELECT DISTINCT source_id, data_type FROM {"landed" if per_user else "landed_here"}),
history AS (
    SELECT human_id, source_id, source_name, valid_from, valid_to
    FROM connect.connection_history {only}
),
upstream AS (SELECT * FROM upstream_since {only}),
periods AS (
    SELECT *, (valid_from AT TIME ZONE 'UTC')::DATE AS from_day
    FROM (
        SELECT * FROM history
        UNION ALL
        SELECT u.human_id, u.source_id, u.source_name, u.since AS valid_from,
               h.first_from AS valid_to
        FROM upstream u
        LEFT JOIN (
            SELECT human_id, source_id, min(valid_from) AS first_from FROM history GROUP BY ALL
        ) h USING (human_id, source_id)
        WHERE h.first_from IS NULL OR u.since < h.first_from
    )
),
conn AS (
    SELECT human_id, source_id, arg_max(source_name, valid_from) AS source_name,
           min(from_day) AS first_day
    FROM periods GROUP BY ALL
),
pairs AS (
    SELECT human_id, source_id FROM conn
    UNION SELECT DISTINCT human_id, source_id FROM landed_here
),
first_landed AS (
    SELECT human_id, source_id, data_type, min(day) AS first_day FROM landed_here GROUP BY ALL
),
starts AS (
    SELECT p.human_id, p.source_id, t.data_type,
           greatest(
               least(coalesce(c.first_day, f.first_day), coalesce(f.first_day, c.first_day)),
               $today::DATE - $max_days
           ) AS start_day
    FROM pairs p
    JOIN types t USING (source_id)
    LEFT JOIN conn c USING (human_id, source_id)
    LEFT JOIN first_landed f USING (human_id, source_id, data_type)
),
calendar AS (
    SELECT unnest(generate_series(
        (SELECT min(start_day) FROM starts), $today::DATE, INTERVAL 1 DAY
    ))::DATE AS day
),
grid AS (
    SELECT s.human_id, s.source_id, s.data_type, d.day
    FROM starts s JOIN calendar d ON d.day >= s.start_day
),
days AS (
    SELECT g.*, coalesce(l.records, 0) AS records,
           EXISTS (
               SELECT 1 FROM periods h
               WHERE h.human_id = g.human_id AND h.source_id = g.source_id
                 AND h.from_day <= g.day
                 AND (h.valid_to IS NULL OR h.valid_to > (g.day::TIMESTAMP AT TIME ZONE 'UTC'))
           ) AS connected
    FROM grid g LEFT JOIN landed_here l USING (human_id, source_id, data_type, day)
)
SELECT d.human_id, d.source_id, c.source_name, d.data_type, d.day, d.connected, d.records,
       x.last_synced_at, x.last_failed_at, coalesce(x.needs_reconnect, false) AS needs_reconnect,
       {_REASON} AS reason
FROM days d
LEFT JOIN conn c USING (human_id, source_id)
LEFT JOIN coverage_status x USING (human_id, data_type)
"""


def _status_keys_sql(*, per_user: bool) -> str:
    """Every (human_id, data_type) a sync status can be told of: each user with a sync, a
    failure or an app user, by each endpoint's table (of the users in `coverage_scope`)."""
    only = "WHERE human_id IN (SELECT human_id FROM coverage_scope)" if per_user else ""
    return f"""
SELECT h.human_id, p.data_type
FROM (
    SELECT human_id FROM human_users
    UNION SELECT human_id FROM ops.sync_state
    UNION SELECT human_id FROM ops.sync_failures
) h
CROSS JOIN (SELECT DISTINCT data_type FROM endpoint_paths) p
{only}
"""


def _sync_status_sql(keys: str) -> str:
    """Per (human_id, data_type) of the query `keys`: what a coverage row says of the user's
    syncs of that data type and their token (the columns _STATUS_COLUMNS update, and what
    _REASON reads)."""
    return f"""
WITH paths AS (SELECT * FROM endpoint_paths),
synced AS (
    SELECT p.data_type, s.human_id, max(s.last_synced_at) AS last_synced_at
    FROM ops.sync_state s JOIN paths p ON p.path = s.endpoint GROUP BY ALL
),
failures AS (
    SELECT p.data_type, f.human_id, f.failed_at
    FROM ops.sync_failures f JOIN paths p ON p.path = f.endpoint
),
failed AS (
    SELECT f.data_type, f.human_id, max(f.failed_at) AS last_failed_at,
           -- still failing: the first failure after the last success
           min(f.failed_at) FILTER (
               WHERE s.last_synced_at IS NULL OR f.failed_at > s.last_synced_at
           ) AS failing_since
    FROM failures f LEFT JOIN synced s USING (data_type, human_id) GROUP BY ALL
),
reconnect AS (
    SELECT u.human_id,
           coalesce(
               min(r.refused_at) FILTER (
                   WHERE u.last_seen_at IS NULL OR r.refused_at >= u.last_seen_at
               ),
               any_value(u.last_seen_at)
           ) AS since
    FROM human_users u LEFT JOIN connect.token_refusals r USING (human_id)
    WHERE u.needs_reconnect GROUP BY u.human_id
)
SELECT k.human_id, k.data_type, sy.last_synced_at, fl.last_failed_at, fl.failing_since,
       coalesce(u.needs_reconnect, false) AS needs_reconnect, rc.since AS reconnect_since
FROM ({keys}) k
LEFT JOIN synced sy USING (data_type, human_id)
LEFT JOIN failed fl USING (data_type, human_id)
LEFT JOIN human_users u USING (human_id)
LEFT JOIN reconnect rc USING (human_id)
"""


# A coverage row's reason, from the row (`d`) and its user's sync status (`x`, _sync_status_sql):
# the one expression both the rows and the status-only update use.
_REASON = """CASE WHEN d.records > 0 THEN NULL
     WHEN NOT d.connected THEN 'not_connected'
     WHEN x.reconnect_since IS NOT NULL AND d.day >= (x.reconnect_since AT TIME ZONE 'UTC')::DATE
         THEN 'needs_reconnect'
     WHEN x.failing_since IS NOT NULL
          AND x.last_failed_at > coalesce(x.last_synced_at, '-infinity'::TIMESTAMPTZ)
          AND d.day >= (x.failing_since AT TIME ZONE 'UTC')::DATE
         THEN 'sync_failing'
     ELSE 'no_data' END"""


# --- change detection -------------------------------------------------------------------------

# Per user, what the user's coverage rows are made of besides `landed` and today, in two parts:
# the connection (periods, the upstream's connectedSince: which rows exist, `connected`, the
# source name) and the sync status (syncs, failures, needs_reconnect, token refusals: only
# last_synced_at, last_failed_at, needs_reconnect and reason). Raw rows where coverage
# aggregates them (a superset: a change that leaves coverage as it was only costs a rebuild).
_CONNECTION_FINGERPRINTS = """
SELECT human_id, count(*)::VARCHAR || ':' || sum(h::HUGEINT)::VARCHAR AS connection_fingerprint
FROM (
    SELECT human_id, hash('history', source_id, source_name, valid_from, valid_to) AS h
    FROM connect.connection_history
    UNION ALL
    SELECT human_id, hash('upstream', source_id, source_name, since) FROM upstream_since
)
WHERE human_id IS NOT NULL GROUP BY human_id
"""

_STATUS_FINGERPRINTS = """
SELECT human_id, count(*)::VARCHAR || ':' || sum(h::HUGEINT)::VARCHAR AS status_fingerprint
FROM (
    SELECT human_id, hash('user', needs_reconnect, last_seen_at) AS h FROM human_users
    UNION ALL
    SELECT human_id, hash('refused', refused_at) FROM connect.token_refusals
    UNION ALL
    SELECT human_id, hash('synced', endpoint, last_synced_at) FROM ops.sync_state
    UNION ALL
    SELECT human_id, hash('failed', endpoint, failed_at) FROM ops.sync_failures
)
WHERE human_id IS NOT NULL GROUP BY human_id
"""

_LANDED_FINGERPRINTS = """
SELECT human_id,
       count(*)::VARCHAR || ':' || sum(hash(source_id, data_type, day, records)::HUGEINT)::VARCHAR
           AS landed_fingerprint
FROM landed GROUP BY human_id
"""

# every user's coverage spans every data type any user has landed from the user's sources
_TYPES_FINGERPRINT = """
SELECT count(*)::VARCHAR || ':' || coalesce(sum(hash(source_id, data_type)::HUGEINT), 0)::VARCHAR
FROM (SELECT DISTINCT source_id, data_type FROM landed)
"""

# Per user: the fingerprints of the user's inputs now (temp table `current_fingerprints`: the
# change detection, the count of everyone and the new state rows all read it)
_CURRENT = """
SELECT human_id, r.fingerprint, l.landed_fingerprint, n.connection_fingerprint,
       t.status_fingerprint
FROM fingerprints r
FULL JOIN landed_fingerprints l USING (human_id)
FULL JOIN connection_fingerprints n USING (human_id)
FULL JOIN status_fingerprints t USING (human_id)
"""

# Per user in the warehouse now or at the last build: whether the user's observations (records
# or mapping changed), coverage rows (landed records, connections, the data types, or the day)
# or only coverage's sync status must be rebuilt; only users with any. `full`: everyone's all.
_CHANGES = f"""
SELECT human_id, observations, coverage, status AND NOT coverage AS status
FROM (
    SELECT human_id,
           $full OR c.fingerprint IS DISTINCT FROM s.fingerprint
               OR s.mapping_version IS DISTINCT FROM $version AS observations,
           $full OR c.landed_fingerprint IS DISTINCT FROM s.landed_fingerprint
               OR c.connection_fingerprint IS DISTINCT FROM s.connection_fingerprint
               OR s.types_fingerprint IS DISTINCT FROM $types
               OR s.coverage_through IS DISTINCT FROM $today AS coverage,
           c.status_fingerprint IS DISTINCT FROM s.status_fingerprint AS status
    FROM current_fingerprints c
    FULL JOIN {quoted(STATE)} s USING (human_id)
)
WHERE observations OR coverage OR status
"""


@dataclass(frozen=True)
class _Changes:
    # users whose observations (and latest) are rebuilt
    observations: int
    # users whose coverage rows are rebuilt
    coverage: int
    # users whose coverage rows only take their new sync status
    status: int
    # users whose state row is rewritten (any of the above)
    users: int
    # users with any input now
    everyone: int

    @property
    def whole_coverage(self) -> bool:
        """Rebuild coverage whole rather than through a filter on the users: past a few dozen
        users one pass over everyone is cheaper, and so it is when the filter would match
        everyone anyway (a first build; the day's first build of a small warehouse)."""
        return self.coverage > 0 and (
            self.coverage > LANDED_FILTER_USERS or self.coverage >= self.everyone
        )


def _detect_changes(
    con: duckdb.DuckDBPyConnection, mapping: ObservationMapping, today: dt.date, full: bool
) -> tuple[_Changes, str]:
    """Fill the temp tables the build reads (`landed`, `upstream_since`, `human_users`, the
    fingerprints, `current_fingerprints`, `changes`, `scope`, `coverage_scope`,
    `status_scope`); the counts and the types' fingerprint."""
    for name, query in (
        ("landed", _landed_sql()),
        ("upstream_since", _UPSTREAM_SINCE),
        ("human_users", _HUMAN_USERS),
        ("fingerprints", _fingerprint_sql()),
        ("landed_fingerprints", _LANDED_FINGERPRINTS),
        ("connection_fingerprints", _CONNECTION_FINGERPRINTS),
        ("status_fingerprints", _STATUS_FINGERPRINTS),
        ("current_fingerprints", _CURRENT),
    ):
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {query}")
    types = str(_one(con, _TYPES_FINGERPRINT))
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE changes AS {_CHANGES}",
        {"full": full, "version": mapping.version, "types": types, "today": today},
    )
    # `scope`: the users whose observations are rebuilt (what _source_sql and _LATEST read)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE scope AS SELECT human_id FROM changes WHERE observations"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE coverage_scope AS SELECT human_id FROM changes WHERE coverage"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE status_scope AS SELECT human_id FROM changes WHERE status"
    )
    row = con.execute(
        """SELECT count(*) FILTER (WHERE observations), count(*) FILTER (WHERE coverage),
                  count(*) FILTER (WHERE status), count(*),
                  (SELECT count(*) FROM current_fingerprints)
        FROM changes"""
    ).fetchone()
    assert row is not None
    observations, coverage, status, users, everyone = (int(n) for n in row)
    counts = _Changes(observations, coverage, status, users, everyone)
    return counts, types


def _one(con: duckdb.DuckDBPyConnection, query: str) -> Any:
    row = con.execute(query).fetchone()
    assert row is not None
    return row[0]


def _register_mapping(con: duckdb.DuckDBPyConnection, mapping: ObservationMapping) -> list[str]:
    names = []
    for name, table in mapping.tables().items():
        con.register(f"map_{name}", table)
        names.append(f"map_{name}")
    paths = pa.table(
        {
            "path": pa.array([e.path for e in ENDPOINTS], pa.string()),
            "data_type": pa.array([e.table for e in ENDPOINTS], pa.string()),
        }
    )
    con.register("endpoint_paths", paths)
    return [*names, "endpoint_paths"]


# --- the writes -------------------------------------------------------------------------------


def _write_observations(con: duckdb.DuckDBPyConnection, *, full: bool) -> None:
    """Observations and latest_observations of the users in `scope`; unmapped_codes from them."""
    for table in (OBSERVATIONS, LATEST):
        where = "" if full else " WHERE human_id IN (SELECT human_id FROM scope)"
        con.execute(f"DELETE FROM {written(con, table)}{where}")
    con.execute(
        f"INSERT INTO {written(con, OBSERVATIONS)} BY NAME "
        + _RESOLVE.format(source=_source_sql()),
        {"decimals": CONVERTED_DECIMALS},
    )
    con.execute(f"INSERT INTO {written(con, LATEST)} BY NAME {_LATEST}")
    # an aggregate over every user's observations: rebuilt whole, but only when some changed
    con.execute(f"DELETE FROM {written(con, UNMAPPED)}")
    con.execute(f"INSERT INTO {written(con, UNMAPPED)} BY NAME {_UNMAPPED}")


def _write_coverage(con: duckdb.DuckDBPyConnection, today: dt.date, *, whole: bool) -> None:
    """Coverage rows of the users in `coverage_scope`, or (`whole`) of everyone."""
    # a table of its own: as a CTE of the coverage query DuckDB plans it into the big join
    status = _sync_status_sql(_status_keys_sql(per_user=not whole))
    con.execute(f"CREATE OR REPLACE TEMP TABLE coverage_status AS {status}")
    where = "" if whole else " WHERE human_id IN (SELECT human_id FROM coverage_scope)"
    con.execute(f"DELETE FROM {written(con, COVERAGE)}{where}")
    con.execute(
        f"INSERT INTO {written(con, COVERAGE)} BY NAME {_coverage_sql(per_user=not whole)}",
        {"today": today, "max_days": COVERAGE_MAX_DAYS},
    )


# the columns of COVERAGE the sync status alone decides
_STATUS_COLUMNS = ("last_synced_at", "last_failed_at", "needs_reconnect")


def _write_sync_status(con: duckdb.DuckDBPyConnection) -> None:
    """The sync status columns and reason of the coverage rows of the users in `status_scope`
    (whose rows are otherwise as built): an update of four columns, not new rows (a catch-up
    moves every synced user's last_synced_at, and so every row of theirs)."""
    keys = f"""SELECT DISTINCT human_id, data_type FROM {quoted(COVERAGE)}
        WHERE human_id IN (SELECT human_id FROM status_scope)"""
    con.execute(f"CREATE OR REPLACE TEMP TABLE sync_status AS {_sync_status_sql(keys)}")
    assignments = ", ".join(f"{c} = x.{c}" for c in _STATUS_COLUMNS)
    con.execute(
        f"""UPDATE {written(con, COVERAGE)} AS d SET {assignments}, reason = {_REASON}
        FROM sync_status x WHERE d.human_id = x.human_id AND d.data_type = x.data_type"""
    )


def _write_state(
    con: duckdb.DuckDBPyConnection,
    mapping: ObservationMapping,
    *,
    types: str,
    today: dt.date,
    now: dt.datetime,
) -> None:
    """The state rows of the users in `changes`: what their tables were just built from (a
    user gone from every input loses the row)."""
    con.execute(
        f"DELETE FROM {written(con, STATE)} WHERE human_id IN (SELECT human_id FROM changes)"
    )
    con.execute(
        f"""INSERT INTO {written(con, STATE)} BY NAME
        SELECT c.*, $version AS mapping_version, $now AS built_at,
               $types AS types_fingerprint, $today AS coverage_through
        FROM current_fingerprints c WHERE human_id IN (SELECT human_id FROM changes)""",
        {"version": mapping.version, "now": now, "types": types, "today": today},
    )


def build_analytics(
    con: duckdb.DuckDBPyConnection,
    mapping: ObservationMapping,
    *,
    today: dt.date,
    now: dt.datetime,
    full: bool = False,
) -> BuildCounts:
    """Bring the analytics tables level with the record tables, in one transaction; when no
    user's inputs changed since the last build, write nothing."""
    registered = _register_mapping(con, mapping)
    con.execute("BEGIN TRANSACTION")
    try:
        changes, types = _detect_changes(con, mapping, today, full)
        if full or changes.observations:
            _write_observations(con, full=full)
        whole = full or changes.whole_coverage
        if full or changes.coverage:
            _write_coverage(con, today, whole=whole)
        if changes.status and not whole:
            _write_sync_status(con)
        if changes.users:
            _write_state(con, mapping, types=types, today=today, now=now)
        con.execute("COMMIT")
    except BaseException:
        # a failed COMMIT (a DuckLake conflict) has ended the transaction already: its own
        # error is the one to raise, so the caller can retry it
        with suppress(duckdb.TransactionException):
            con.execute("ROLLBACK")
        raise
    finally:
        for name in registered:
            con.unregister(name)
    counts = row_counts(con, (OBSERVATIONS, LATEST, COVERAGE, UNMAPPED))
    return BuildCounts(
        users_rebuilt=changes.observations,
        coverage_users_rebuilt=changes.coverage + changes.status,
        observations=counts[OBSERVATIONS],
        latest=counts[LATEST],
        coverage=counts[COVERAGE],
        unmapped=counts[UNMAPPED],
    )


def distinct_codes(con: duckdb.DuckDBPyConnection) -> int:
    return int(
        con.execute(f"SELECT count(DISTINCT code) FROM {quoted(OBSERVATIONS)}").fetchall()[0][0]
    )


# --- asset checks ---------------------------------------------------------------------------


def untraceable_observations(con: duckdb.DuckDBPyConnection) -> int:
    """Observations whose record row does not exist (or is deleted)."""
    parts = [
        f"""SELECT count(*) FROM {quoted(OBSERVATIONS)} o
        WHERE o.record_table = 'medical.vital_results' AND NOT EXISTS (
            SELECT 1 FROM {quoted(VITALS[1])} r JOIN {quoted(VITALS[0])} v
                USING (human_id, record_id)
            WHERE r.human_id = o.human_id AND r.record_id = o.record_id
              AND r.position = o.position AND v.deleted_at IS NULL)""",
        f"""SELECT count(*) FROM {quoted(OBSERVATIONS)} o
        WHERE o.record_table = 'medical.test_result_components' AND NOT EXISTS (
            SELECT 1 FROM {quoted(LABS[1])} c JOIN {quoted(LABS[0])} t
                USING (human_id, record_id)
            WHERE c.human_id = o.human_id AND c.record_id = o.record_id
              AND c.position = o.position AND t.deleted_at IS NULL)""",
        *(
            f"""SELECT count(*) FROM {quoted(OBSERVATIONS)} o
            WHERE o.record_table = '{table}' AND NOT EXISTS (
                SELECT 1 FROM {quoted(table)} w
                WHERE w.human_id = o.human_id AND w.record_id = o.record_id
                  AND w.deleted_at IS NULL AND o.position < {len(READING_FIELDS[table])})"""
            for table in READINGS
        ),
        f"""SELECT count(*) FROM {quoted(OBSERVATIONS)}
        WHERE record_table NOT IN (SELECT unnest($tables::VARCHAR[]))""",
    ]
    total = 0
    for sql in parts:
        params = {"tables": [VITALS[1], LABS[1], *READINGS]} if "$tables" in sql else {}
        total += int(con.execute(sql, params).fetchall()[0][0])
    return total


def coded_values_without_ucum(con: duckdb.DuckDBPyConnection, units: set[str]) -> int:
    """Coded numeric observations whose unit is NULL or not one of the mapping's UCUM units."""
    row = con.execute(
        f"""SELECT count(*) FROM {quoted(OBSERVATIONS)}
        WHERE code IS NOT NULL AND value_numeric IS NOT NULL
          AND (unit IS NULL OR unit NOT IN (SELECT unnest($units::VARCHAR[])))""",
        {"units": sorted(units)},
    ).fetchall()
    return int(row[0][0])


def out_of_bounds(con: duckdb.DuckDBPyConnection, loinc: pa.Table) -> dict[str, int]:
    """Per code: observations in the concept's unit whose value lies outside its plausible
    low/high (from loinc.csv)."""
    con.register("bounds", loinc)
    try:
        rows = con.execute(
            f"""SELECT o.code, count(*) FROM {quoted(OBSERVATIONS)} o
            JOIN bounds b ON b.code = o.code AND b.unit = o.unit
            WHERE o.value_numeric < b.low OR o.value_numeric > b.high
            GROUP BY o.code ORDER BY o.code"""
        ).fetchall()
    finally:
        con.unregister("bounds")
    return {str(code): int(n) for code, n in rows}
