"""Arrow schemas of the tables the pipeline owns outside the record tables (schemas ops, connect).

Record tables and their children are defined by the normalisers (sync_pipeline.normalize.schemas);
together these are every table in contract part C. DuckDB derives each table's DDL from its Arrow
schema, so a column's type is written down once.
"""

from __future__ import annotations

import pyarrow as pa

UTC_TS = pa.timestamp("us", tz="UTC")

# One reject table per writing asset (one writer per table), all of this shape; the view
# ops.rejected_records is their union (contract part C: received = loaded + rejected).
_REJECTS = pa.schema(
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
)
REJECT_TABLES = {
    "notifications": "ops.rejected_notification_items",  # the notification intake's
    "sessions": "ops.rejected_session_responses",  # the session intake's
    "records": "ops.rejected_upstream_records",  # the record sync's
}

OPS_SCHEMAS: dict[str, pa.Schema] = {
    **{table: _REJECTS for table in REJECT_TABLES.values()},
    # written by the intake asset only; statuses live in ops.notification_status (the record
    # sync's), and the view ops.notifications joins the two (contract part C)
    "ops.notification_items": pa.schema(
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
        ]
    ),
    # written by the record sync only, in its commit: one row per notification a sync handled
    "ops.notification_status": pa.schema(
        [
            ("notification_id", pa.string()),
            # synced | gone | failed | skipped_reconnect | unknown_user (no row: received)
            ("status", pa.string()),
            ("synced_at", UTC_TS),
            ("sync_run_id", pa.string()),
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
    # written by connection_state only; the view connect.users adds needs_reconnect from
    # connect.token_refusals (the record sync's), so a refusal shows in the sync's own commit
    "connect.app_users": pa.schema(
        [
            ("client_user_id", pa.string()),
            ("human_id", pa.string()),
            ("first_seen_at", UTC_TS),
            ("last_seen_at", UTC_TS),
            ("last_session_status", pa.string()),
            # the latest SUCCESS session of human_id that left the user with a connection
            ("reconnected_at", UTC_TS),
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
    "ops.notification_items": ("notification_id",),
    "ops.notification_status": ("notification_id",),
    **{table: ("reject_id",) for table in REJECT_TABLES.values()},
    "ops.flagged_records": ("table_name", "human_id", "record_id", "flag"),
    "ops.sync_state": ("human_id", "endpoint"),
    "ops.http_requests": ("request_id", "attempt"),
    "connect.session_responses": ("delivery_digest",),
    "connect.app_users": ("human_id",),
    "connect.connection_history": ("human_id", "source_id", "valid_from"),
}

VIEWS: dict[str, str] = {
    "connect.current_connections": (
        "SELECT human_id, source_id, source_name, valid_from AS connected_since "
        "FROM connect.connection_history WHERE valid_to IS NULL"
    ),
    "ops.rejected_records": " UNION ALL ".join(
        f"SELECT * FROM {table}" for table in REJECT_TABLES.values()
    ),
    # Contract part C's notifications: the intake's items with the record sync's statuses
    # (no status row yet: received). Each half has one writer, so the view is what both wrote.
    "ops.notifications": (
        "SELECT i.notification_id, i.delivery_digest, i.human_id, i.endpoint, i.table_name, "
        "i.object_id, i.action, i.model, i.type, i.updated_at, i.received_at, "
        "coalesce(s.status, 'received') AS status, s.synced_at, s.sync_run_id "
        "FROM ops.notification_items i "
        "LEFT JOIN ops.notification_status s ON s.notification_id = i.notification_id"
    ),
    # needs_reconnect: the user's latest token refusal (a sync's) came after the latest SUCCESS
    # session that left them connected (connection_state's). Session times are whole seconds
    # (the JWT's iat), refusals are not: a session in the same second as a refusal may well
    # have come after it, and counts as the reconnect.
    "connect.users": (
        "SELECT u.client_user_id, u.human_id, u.first_seen_at, u.last_seen_at, "
        "u.last_session_status, "
        "coalesce(r.refused_at IS NOT NULL AND (u.reconnected_at IS NULL "
        "OR date_trunc('second', r.refused_at) > u.reconnected_at), false) AS needs_reconnect "
        "FROM connect.app_users u LEFT JOIN ("
        "SELECT human_id, max(refused_at) AS refused_at FROM connect.token_refusals "
        "GROUP BY human_id) r ON r.human_id = u.human_id"
    ),
}
