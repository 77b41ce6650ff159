"""The analyst layer's tables (schema analytics, and its bookkeeping in ops), declared once.

The descriptions are the assets' descriptions (the Dagster UI), the data dictionary's and the
tables' `COMMENT ON` text in DuckDB; column descriptions go to the dictionary, the assets'
column schema and `COMMENT ON COLUMN`.
"""

from __future__ import annotations

from .columns import BOOL, DATE, FLOAT, INSTANT, INT, TEXT, Column, Table

OBSERVATIONS = "analytics.observations"
LATEST = "analytics.latest_observations"
COVERAGE = "analytics.coverage"
UNMAPPED = "ops.unmapped_codes"
STATE = "ops.analytics_state"

# the Dagster asset definition that writes these tables, by node name
ANALYTICS_BUILD = "analytics_build"

_DESCRIPTIONS: dict[str, str] = {
    OBSERVATIONS: "One row per measured value: every result of a medical.vital_results row, "
    "every medical.test_result_components row and every wellness reading (a blood pressure "
    "reading gives a systolic, a diastolic and a heart-rate row), coded in LOINC with its value "
    "in a UCUM unit beside the source's own name, value, unit and code, and its lineage "
    "(record_table, human_id, record_id, position). Records with deleted_at set give no rows; "
    "sentinels meaning 'not measured' give value_numeric NULL.",
    LATEST: "One row per (human_id, code): the newest observation of that code for that user, "
    "its time, value, unit and the record it came from.",
    COVERAGE: "One row per (user, source, data type, day) from the day the user first connected "
    "the source (by Connect session or the upstream's connectedSince; or its first record, if "
    "earlier; at most three years back) to today: whether a connection was open that day, the "
    "records of that type from that source created upstream that day, the endpoint's last "
    "successful and last failed sync for the user, needs_reconnect, and the reason for a day "
    "without records.",
    UNMAPPED: "One row per source name or unit spelling that did not map (kind 'name': no LOINC "
    "code; kind 'unit': a unit with no UCUM spelling in the mapping), per record table, with how "
    "often it occurs and an example record, so the mapping can grow from real traffic.",
    STATE: "One row per user: the fingerprint of the user's record rows and the mapping version "
    "the user's observations were last built from, and the fingerprints of what the user's "
    "coverage was last built from and the day it was built through (what the incremental "
    "build compares).",
}

ANALYTICS_TABLES: tuple[Table, ...] = (
    Table(
        OBSERVATIONS,
        (
            Column(
                "human_id",
                TEXT,
                "the upstream's user id",
            ),
            Column(
                "source_id",
                TEXT,
                "the record's `source`",
            ),
            Column(
                "observed_at",
                INSTANT,
                "when it was measured: vitals `recorded_at`, labs `result_at`, readings "
                "`measured_at` (UTC)",
            ),
            Column(
                "category",
                TEXT,
                "`vital` (medical vitals), `lab` (test result components), `device` (wellness "
                "readings)",
            ),
            Column(
                "code",
                TEXT,
                "LOINC code, NULL when unmapped",
            ),
            Column(
                "code_system",
                TEXT,
                "`LOINC` when `code` is set",
            ),
            Column(
                "display",
                TEXT,
                "the LOINC concept's name (the source's name for codes the mapping does not "
                "describe)",
            ),
            Column(
                "value_numeric",
                FLOAT,
                "the value in `unit` (converted with an exact factor where the source used "
                "another unit); NULL for text results, sentinels and unknown units",
            ),
            Column(
                "value_text",
                TEXT,
                "the value as sent when it is not a number (e.g. `Negative`, `>60`), or when its "
                "unit is unknown",
            ),
            Column(
                "unit",
                TEXT,
                "UCUM unit of `value_numeric`",
            ),
            Column(
                "source_name",
                TEXT,
                "the name the source gave (vital or component name); for readings the reading "
                "type (`height`, `blood_pressure.systolic`, ...)",
            ),
            Column(
                "source_value",
                TEXT,
                "the value as received (text)",
            ),
            Column(
                "source_unit",
                TEXT,
                "the unit as received (for labs, the unit written after the number when `unit` "
                "was empty)",
            ),
            Column(
                "source_code",
                TEXT,
                "the LOINC code the source sent, if any",
            ),
            Column(
                "mapping",
                TEXT,
                "how `code` was found: `source_code`, `by_name`, `by_endpoint` or `unmapped`",
            ),
            Column(
                "record_table",
                TEXT,
                "the warehouse table of the row it came from",
            ),
            Column(
                "record_id",
                TEXT,
                "the record's id in `record_table`",
            ),
            Column(
                "position",
                INT,
                "child tables: the element's position; blood pressure: 0 systolic, 1 diastolic, 2 "
                "heart rate; other readings: 0",
            ),
        ),
        key=("record_table", "human_id", "record_id", "position"),
        owner=ANALYTICS_BUILD,
        description=_DESCRIPTIONS[OBSERVATIONS],
    ),
    Table(
        LATEST,
        (
            Column("human_id", TEXT),
            Column("code", TEXT),
            Column("code_system", TEXT),
            Column("display", TEXT),
            Column("category", TEXT),
            Column(
                "observed_at",
                INSTANT,
                "the newest `observed_at` of the code for the user",
            ),
            Column("value_numeric", FLOAT),
            Column("value_text", TEXT),
            Column("unit", TEXT),
            Column(
                "source_id",
                TEXT,
                "the source of that newest observation",
            ),
            Column("record_table", TEXT),
            Column("record_id", TEXT),
            Column("position", INT),
        ),
        key=("human_id", "code"),
        owner=ANALYTICS_BUILD,
        description=_DESCRIPTIONS[LATEST],
    ),
    Table(
        COVERAGE,
        (
            Column("human_id", TEXT),
            Column("source_id", TEXT),
            Column("source_name", TEXT),
            Column(
                "data_type",
                TEXT,
                "the record table (e.g. `wellness.blood_pressure`)",
            ),
            Column(
                "day",
                DATE,
                "UTC day",
            ),
            Column(
                "connected",
                BOOL,
                "a connect.connection_history period of this source was open that day, or the day "
                "falls after the upstream's `connectedSince` for it (connect.source_status) and "
                "before the first Connect session that told us about it",
            ),
            Column(
                "records",
                INT,
                "records of this type from this source created upstream that day (`created_at`), "
                "not deleted",
            ),
            Column(
                "last_synced_at",
                INSTANT,
                "the endpoint's last sync without error for the user (ops.sync_state), as of the "
                "build",
            ),
            Column(
                "last_failed_at",
                INSTANT,
                "the endpoint's last failed sync for the user (ops.sync_failures), as of the build",
            ),
            Column(
                "needs_reconnect",
                BOOL,
                "connect.users.needs_reconnect, as of the build",
            ),
            Column(
                "reason",
                TEXT,
                "for a day with no records: `not_connected`, `needs_reconnect` (on/after the "
                "token was first refused since the user's last session), `sync_failing` (on/after "
                "the first failure since the last successful sync, while it keeps failing), else "
                "`no_data`; NULL when records > 0",
            ),
        ),
        key=("human_id", "source_id", "data_type", "day"),
        owner=ANALYTICS_BUILD,
        description=_DESCRIPTIONS[COVERAGE],
    ),
    Table(
        UNMAPPED,
        (
            Column(
                "kind",
                TEXT,
                "`name` (no LOINC code found) or `unit` (no UCUM spelling for the unit)",
            ),
            Column("record_table", TEXT),
            Column(
                "value",
                TEXT,
                "the source name or unit spelling; `(missing)` for a number sent with no unit",
            ),
            Column("observations", INT),
            Column("users", INT),
            Column("example_human_id", TEXT),
            Column("example_record_id", TEXT),
            Column("first_observed_at", INSTANT),
            Column("last_observed_at", INSTANT),
        ),
        key=("kind", "record_table", "value"),
        owner=ANALYTICS_BUILD,
        description=_DESCRIPTIONS[UNMAPPED],
    ),
    Table(
        STATE,
        (
            Column("human_id", TEXT),
            Column(
                "fingerprint",
                TEXT,
                "row count and a hash of (record_id, updated_at, deleted_at)",
            ),
            Column("mapping_version", TEXT),
            Column("built_at", INSTANT),
            Column(
                "landed_fingerprint",
                TEXT,
                "row count and a hash of the user's records per (source, record table, UTC "
                "day created), as analytics.coverage counts them",
            ),
            Column(
                "connection_fingerprint",
                TEXT,
                "row count and a hash of the user's connection periods and the upstream's "
                "connectedSince per source",
            ),
            Column(
                "status_fingerprint",
                TEXT,
                "row count and a hash of the user's needs_reconnect, token refusals, syncs and "
                "sync failures",
            ),
            Column(
                "types_fingerprint",
                TEXT,
                "count and hash of the (source, record table) pairs any user has landed (every "
                "user's coverage spans those of their sources)",
            ),
            Column(
                "coverage_through",
                DATE,
                "the (UTC) day the user's coverage rows were built through",
            ),
        ),
        key=("human_id",),
        owner=ANALYTICS_BUILD,
        description=_DESCRIPTIONS[STATE],
    ),
)
