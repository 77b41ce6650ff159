"""Arrow schemas of the tables the pipeline owns outside the record tables (schemas ops, connect).

Record tables and their children are defined by the normalisers (sync_pipeline.normalize.schemas);
together these are every table in contract part C. DuckDB derives each table's DDL from its Arrow
schema, so a column's type is written down once.
"""

from __future__ import annotations

import pyarrow as pa

UTC_TS = pa.timestamp("us", tz="UTC")

OPS_SCHEMAS: dict[str, pa.Schema] = {
    "ops.notifications": pa.schema(
        [
            ("notification_id", pa.string()),
            ("delivery_digest", pa.string()),
            ("human_id", pa.string()),
            ("endpoint", pa.string()),
            ("table_name", pa.string()),
            ("object_id", pa.string()),
            ("action", pa.string()),
            ("model", pa.string()),
            ("type", pa.string()),
            ("updated_at", UTC_TS),
            ("received_at", UTC_TS),
            # received → synced | gone | failed | skipped_reconnect | unknown_user
            ("status", pa.string()),
            ("synced_at", UTC_TS),
            ("sync_run_id", pa.string()),
        ]
    ),
    "ops.rejected_records": pa.schema(
        [
            # sha256 of (table_name, human_id, record_id, reason, raw, occurrence in its batch):
            # the same reject from a re-run lands once, identical bodies sent twice land twice
            ("reject_id", pa.string()),
            ("table_name", pa.string()),
            ("human_id", pa.string()),
            ("record_id", pa.string()),
            ("reason", pa.string()),
            ("raw", pa.string()),
            ("rejected_at", UTC_TS),
            ("run_id", pa.string()),
        ]
    ),
    # loaded records that were changed on the way (text_repaired) or are suspect
    # (future_updated_at: updated_at stored as the upstream's clock, raw has what was sent)
    "ops.flagged_records": pa.schema(
        [
            ("table_name", pa.string()),
            ("human_id", pa.string()),
            ("record_id", pa.string()),
            ("flag", pa.string()),
            ("detail", pa.string()),
            ("run_id", pa.string()),
            ("flagged_at", UTC_TS),
        ]
    ),
    "ops.sync_state": pa.schema(
        [
            ("human_id", pa.string()),
            ("endpoint", pa.string()),
            # the next catch-up asks for updated_since = this instant (upstream clock, floored to s)
            ("cursor_updated_since", UTC_TS),
            ("last_synced_at", UTC_TS),
            ("last_run_id", pa.string()),
        ]
    ),
    "ops.http_requests": pa.schema(
        [
            ("request_id", pa.string()),
            ("run_id", pa.string()),
            ("method", pa.string()),
            ("path", pa.string()),
            ("human_id", pa.string()),
            ("status", pa.int32()),
            ("attempt", pa.int32()),
            ("duration_ms", pa.float64()),
            ("started_at", UTC_TS),
            ("rate_limit_limit", pa.int64()),
            ("rate_limit_remaining", pa.int64()),
            ("rate_limit_reset", pa.int64()),
            ("error", pa.string()),
        ]
    ),
    "ops.load_log": pa.schema(
        [
            ("run_id", pa.string()),
            ("table_name", pa.string()),
            ("received", pa.int64()),
            ("loaded", pa.int64()),
            ("rejected", pa.int64()),
            ("inserted", pa.int64()),
            ("updated", pa.int64()),
            ("deleted", pa.int64()),
            ("lake_files", pa.string()),
            ("committed_at", UTC_TS),
        ]
    ),
    "ops.sync_failures": pa.schema(
        [
            ("run_id", pa.string()),
            ("human_id", pa.string()),
            ("endpoint", pa.string()),
            ("reason", pa.string()),
            ("failed_at", UTC_TS),
        ]
    ),
}

CONNECT_SCHEMAS: dict[str, pa.Schema] = {
    "connect.session_responses": pa.schema(
        [
            ("delivery_digest", pa.string()),
            ("received_at", UTC_TS),
            ("session_at", UTC_TS),
            ("event", pa.string()),
            ("status", pa.string()),
            ("client_user_id", pa.string()),
            ("human_id", pa.string()),
            ("payload", pa.string()),
        ]
    ),
    "connect.users": pa.schema(
        [
            ("client_user_id", pa.string()),
            ("human_id", pa.string()),
            ("first_seen_at", UTC_TS),
            ("last_seen_at", UTC_TS),
            ("last_session_status", pa.string()),
            ("needs_reconnect", pa.bool_()),
        ]
    ),
    "connect.connection_events": pa.schema(
        [
            ("human_id", pa.string()),
            ("client_user_id", pa.string()),
            ("source_id", pa.string()),
            ("source_name", pa.string()),
            ("change", pa.string()),
            ("session_status", pa.string()),
            ("event", pa.string()),
            ("session_at", UTC_TS),
            ("delivery_digest", pa.string()),
        ]
    ),
    "connect.connection_history": pa.schema(
        [
            ("human_id", pa.string()),
            ("source_id", pa.string()),
            ("source_name", pa.string()),
            ("valid_from", UTC_TS),
            ("valid_to", UTC_TS),
            ("opened_by", pa.string()),
            ("closed_by", pa.string()),
        ]
    ),
    "connect.source_status": pa.schema(
        [
            ("human_id", pa.string()),
            ("snapshot_at", UTC_TS),
            ("source", pa.string()),
            ("sync_status", pa.string()),
            ("synched_at", UTC_TS),
            ("newest_data_at", UTC_TS),
            ("history_sync_status", pa.string()),
            ("oldest_data_at", UTC_TS),
            ("connected_since", UTC_TS),
            ("supported_data_types", pa.string()),
            ("raw", pa.string()),
        ]
    ),
    # token requests refused (403/404) during syncs: feeds connect.users.needs_reconnect
    "connect.token_refusals": pa.schema(
        [
            ("human_id", pa.string()),
            ("refused_at", UTC_TS),
            ("status", pa.int32()),
            ("run_id", pa.string()),
        ]
    ),
}

OWNED_KEYS: dict[str, tuple[str, ...]] = {
    "ops.notifications": ("notification_id",),
    "ops.rejected_records": ("reject_id",),
    "ops.flagged_records": ("table_name", "human_id", "record_id", "flag"),
    "ops.sync_state": ("human_id", "endpoint"),
    "ops.http_requests": ("request_id", "attempt"),
    "connect.session_responses": ("delivery_digest",),
    "connect.users": ("human_id",),
    "connect.connection_history": ("human_id", "source_id", "valid_from"),
}

VIEWS: dict[str, str] = {
    "connect.current_connections": (
        "SELECT human_id, source_id, source_name, valid_from AS connected_since "
        "FROM connect.connection_history WHERE valid_to IS NULL"
    ),
}
