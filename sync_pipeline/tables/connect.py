"""Connection state tables (schema connect), declared once, and the views over them."""

from __future__ import annotations

from .columns import BOOL, INSTANT, INT32, TEXT, Column, Table
from .ops import RECORD_SYNC

SESSION_RESPONSES = "connect.session_responses"
USERS = "connect.users"
CONNECTION_EVENTS = "connect.connection_events"
CONNECTION_HISTORY = "connect.connection_history"
SOURCE_STATUS = "connect.source_status"
TOKEN_REFUSALS = "connect.token_refusals"
CURRENT_CONNECTIONS = "connect.current_connections"

# The Dagster asset definitions that write these tables today, by node name
INTAKE_SESSIONS = "connect__session_responses"
CONNECTION_STATE = "connection_state"

_HUMAN_ID = Column("human_id", TEXT, "the upstream's user id")
_CLIENT_USER_ID = Column("client_user_id", TEXT, "the app's own id of the user")

CONNECT_TABLES: tuple[Table, ...] = (
    Table(
        SESSION_RESPONSES,
        (
            Column("delivery_digest", TEXT, "sha256 of the landed delivery"),
            Column("received_at", INSTANT, "when the receiver landed it"),
            Column("session_at", INSTANT, "the session token's `iat`, else `received_at`"),
            Column("event", TEXT, "`close`, `connect_source` or `disconnect_source`"),
            Column("status", TEXT, "`response.status`"),
            _CLIENT_USER_ID,
            _HUMAN_ID,
            Column("payload", TEXT, "the `response` member as the front end sent it"),
        ),
        key=("delivery_digest",),
        owner=INTAKE_SESSIONS,
        description="One row per Connect session response the app's front end delivered "
        "(connect.session_responses), payload kept as received, for the receive day.",
    ),
    Table(
        USERS,
        (
            _CLIENT_USER_ID,
            _HUMAN_ID,
            Column("first_seen_at", INSTANT),
            Column("last_seen_at", INSTANT),
            Column("last_session_status", TEXT),
            Column("needs_reconnect", BOOL),
        ),
        key=("human_id",),
        owner=CONNECTION_STATE,
        description="One row per app user: client_user_id ↔ human_id, first/last seen, last "
        "session status, needs_reconnect.",
    ),
    Table(
        CONNECTION_EVENTS,
        (
            _HUMAN_ID,
            _CLIENT_USER_ID,
            Column("source_id", TEXT),
            Column("source_name", TEXT),
            Column("change", TEXT),
            Column("session_status", TEXT),
            Column("event", TEXT),
            Column("session_at", INSTANT),
            Column("delivery_digest", TEXT),
        ),
        key=(),
        owner=CONNECTION_STATE,
        description="One row per source connected or disconnected by a Connect session.",
    ),
    Table(
        CONNECTION_HISTORY,
        (
            _HUMAN_ID,
            Column("source_id", TEXT),
            Column("source_name", TEXT),
            Column("valid_from", INSTANT),
            Column("valid_to", INSTANT, "NULL while connected"),
            Column("opened_by", TEXT),
            Column("closed_by", TEXT),
        ),
        key=("human_id", "source_id", "valid_from"),
        owner=CONNECTION_STATE,
        description="SCD type 2: one row per (human_id, source_id) connection period; valid_to "
        "is NULL while connected. connect.current_connections is a view of the open rows.",
    ),
    Table(
        SOURCE_STATUS,
        (
            _HUMAN_ID,
            Column("snapshot_at", INSTANT),
            Column("source", TEXT),
            Column("sync_status", TEXT),
            Column("synched_at", INSTANT),
            Column("newest_data_at", INSTANT),
            Column("history_sync_status", TEXT),
            Column("oldest_data_at", INSTANT),
            Column("connected_since", INSTANT),
            Column("supported_data_types", TEXT),
            Column("raw", TEXT),
        ),
        key=(),
        owner=RECORD_SYNC,
        description="One row per (user, source) per catch-up sync: the upstream's /sources "
        "snapshot.",
    ),
    Table(
        TOKEN_REFUSALS,
        (
            _HUMAN_ID,
            Column("refused_at", INSTANT),
            Column("status", INT32, "the upstream's answer: 403 or 404"),
            Column("run_id", TEXT),
        ),
        key=(),
        owner=RECORD_SYNC,
        description="One row per token request the upstream refused (403/404) during a sync: "
        "that user must reconnect (feeds connect.users.needs_reconnect).",
    ),
)

# Views are SQL over declared tables (their columns follow from it)
VIEWS: dict[str, str] = {
    CURRENT_CONNECTIONS: "SELECT human_id, source_id, source_name, valid_from AS connected_since "
    "FROM connect.connection_history WHERE valid_to IS NULL",
}
VIEW_DESCRIPTIONS: dict[str, str] = {
    CURRENT_CONNECTIONS: "View: one row per open connection (the rows of "
    "connect.connection_history with valid_to NULL).",
}
