"""Arrow schemas, keys and descriptions of the tables the analytics build owns.

The descriptions are the assets' descriptions (the Dagster UI), the data dictionary's and the
tables' `COMMENT ON` text in DuckDB; column notes go to the dictionary and `COMMENT ON COLUMN`.
"""

from __future__ import annotations

import pyarrow as pa

UTC_TS = pa.timestamp("us", tz="UTC")

OBSERVATIONS = "analytics.observations"
LATEST = "analytics.latest_observations"
COVERAGE = "analytics.coverage"
UNMAPPED = "ops.unmapped_codes"
STATE = "ops.analytics_state"

ANALYTICS_SCHEMAS: dict[str, pa.Schema] = {
    OBSERVATIONS: pa.schema(
        [
            ("human_id", pa.string()),
            ("source_id", pa.string()),
            ("observed_at", UTC_TS),
            ("category", pa.string()),
            ("code", pa.string()),
            ("code_system", pa.string()),
            ("display", pa.string()),
            ("value_numeric", pa.float64()),
            ("value_text", pa.string()),
            ("unit", pa.string()),
            ("source_name", pa.string()),
            ("source_value", pa.string()),
            ("source_unit", pa.string()),
            ("source_code", pa.string()),
            ("mapping", pa.string()),
            ("record_table", pa.string()),
            ("record_id", pa.string()),
            ("position", pa.int64()),
        ]
    ),
    LATEST: pa.schema(
        [
            ("human_id", pa.string()),
            ("code", pa.string()),
            ("code_system", pa.string()),
            ("display", pa.string()),
            ("category", pa.string()),
            ("observed_at", UTC_TS),
            ("value_numeric", pa.float64()),
            ("value_text", pa.string()),
            ("unit", pa.string()),
            ("source_id", pa.string()),
            ("record_table", pa.string()),
            ("record_id", pa.string()),
            ("position", pa.int64()),
        ]
    ),
    COVERAGE: pa.schema(
        [
            ("human_id", pa.string()),
            ("source_id", pa.string()),
            ("source_name", pa.string()),
            ("data_type", pa.string()),
            ("day", pa.date32()),
            ("connected", pa.bool_()),
            ("records", pa.int64()),
            ("last_synced_at", UTC_TS),
            ("last_failed_at", UTC_TS),
            ("needs_reconnect", pa.bool_()),
            ("reason", pa.string()),
        ]
    ),
    UNMAPPED: pa.schema(
        [
            ("kind", pa.string()),
            ("record_table", pa.string()),
            ("value", pa.string()),
            ("observations", pa.int64()),
            ("users", pa.int64()),
            ("example_human_id", pa.string()),
            ("example_record_id", pa.string()),
            ("first_observed_at", UTC_TS),
            ("last_observed_at", UTC_TS),
        ]
    ),
    STATE: pa.schema(
        [
            ("human_id", pa.string()),
            ("fingerprint", pa.string()),
            ("mapping_version", pa.string()),
            ("built_at", UTC_TS),
        ]
    ),
}

ANALYTICS_KEYS: dict[str, tuple[str, ...]] = {
    OBSERVATIONS: ("record_table", "human_id", "record_id", "position"),
    LATEST: ("human_id", "code"),
    COVERAGE: ("human_id", "source_id", "data_type", "day"),
    UNMAPPED: ("kind", "record_table", "value"),
    STATE: ("human_id",),
}

DESCRIPTIONS: dict[str, str] = {
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
    "the user's observations were last built from (what the incremental build compares).",
}

COLUMN_NOTES: dict[str, dict[str, str]] = {
    OBSERVATIONS: {
        "human_id": "the upstream's user id",
        "source_id": "the record's `source`",
        "observed_at": "when it was measured: vitals `recorded_at`, labs `result_at`, "
        "readings `measured_at` (UTC)",
        "category": "`vital` (medical vitals), `lab` (test result components), `device` "
        "(wellness readings)",
        "code": "LOINC code, NULL when unmapped",
        "code_system": "`LOINC` when `code` is set",
        "display": "the LOINC concept's name (the source's name for codes the mapping does not "
        "describe)",
        "value_numeric": "the value in `unit` (converted with an exact factor where the source "
        "used another unit); NULL for text results, sentinels and unknown units",
        "value_text": "the value as sent when it is not a number (e.g. `Negative`, `>60`), or "
        "when its unit is unknown",
        "unit": "UCUM unit of `value_numeric`",
        "source_name": "the name the source gave (vital or component name); for readings the "
        "reading type (`height`, `blood_pressure.systolic`, ...)",
        "source_value": "the value as received (text)",
        "source_unit": "the unit as received (for labs, the unit written after the number "
        "when `unit` was empty)",
        "source_code": "the LOINC code the source sent, if any",
        "mapping": "how `code` was found: `source_code`, `by_name`, `by_endpoint` or `unmapped`",
        "record_table": "the warehouse table of the row it came from",
        "record_id": "the record's id in `record_table`",
        "position": "child tables: the element's position; blood pressure: 0 systolic, 1 "
        "diastolic, 2 heart rate; other readings: 0",
    },
    LATEST: {
        "observed_at": "the newest `observed_at` of the code for the user",
        "source_id": "the source of that newest observation",
    },
    COVERAGE: {
        "data_type": "the record table (e.g. `wellness.blood_pressure`)",
        "day": "UTC day",
        "connected": "a connect.connection_history period of this source was open that day, "
        "or the day falls after the upstream's `connectedSince` for it (connect.source_status) "
        "and before the first Connect session that told us about it",
        "records": "records of this type from this source created upstream that day "
        "(`created_at`), not deleted",
        "last_synced_at": "the endpoint's last sync without error for the user "
        "(ops.sync_state), as of the build",
        "last_failed_at": "the endpoint's last failed sync for the user (ops.sync_failures), as "
        "of the build",
        "needs_reconnect": "connect.users.needs_reconnect, as of the build",
        "reason": "for a day with no records: `not_connected`, `needs_reconnect` (on/after the "
        "token was first refused since the user's last session), `sync_failing` (on/after the "
        "first failure since the last successful sync, while it keeps failing), else `no_data`; "
        "NULL when records > 0",
    },
    UNMAPPED: {
        "kind": "`name` (no LOINC code found) or `unit` (no UCUM spelling for the unit)",
        "value": "the source name or unit spelling; `(missing)` for a number sent with no unit",
    },
    STATE: {"fingerprint": "row count and a hash of (record_id, updated_at, deleted_at)"},
}
