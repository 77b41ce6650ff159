"""The pipeline's own bookkeeping tables (schema ops), declared once, and the views over them.

Every table has one writing asset (`owner`): the notification intake writes the items and its
rejects, the session intake its rejects, the record sync the statuses, its rejects and the rest
of its bookkeeping. Where contract part C names one table that two assets would fill
(ops.notifications, ops.rejected_records), it is a view over the tables each asset writes.

The normalisers and the intake produce rejects and flags with only some of these columns
(`REJECT_INPUT`, `FLAG_INPUT`): the writer (warehouse/db.store_rejects, store_flags) adds the
rest. Those projections are taken from the declarations here, never written out again.
"""

from __future__ import annotations

from .columns import FLOAT, INSTANT, INT, INT32, TEXT, Column, Table, View

NOTIFICATION_ITEMS = "ops.notification_items"
NOTIFICATION_STATUS = "ops.notification_status"
REJECTED_NOTIFICATION_ITEMS = "ops.rejected_notification_items"
REJECTED_SESSION_RESPONSES = "ops.rejected_session_responses"
REJECTED_UPSTREAM_RECORDS = "ops.rejected_upstream_records"
FLAGGED_RECORDS = "ops.flagged_records"
SYNC_STATE = "ops.sync_state"
HTTP_REQUESTS = "ops.http_requests"
LOAD_LOG = "ops.load_log"
SYNC_FAILURES = "ops.sync_failures"
# views (contract part C's names)
NOTIFICATIONS = "ops.notifications"
REJECTED_RECORDS = "ops.rejected_records"

# The Dagster asset definitions that write these tables, by node name (a multi-asset's node
# is its name); a step may write only the tables it owns (warehouse/db.connect(writes=...))
NOTIFICATION_INTAKE = "notification_intake"
SESSION_INTAKE = "session_intake"
RECORD_SYNC = "record_sync"

# Each writing asset's reject table, by the landing log (intake) or "records" (the sync)
REJECT_TABLES: dict[str, str] = {
    "notifications": REJECTED_NOTIFICATION_ITEMS,
    "sessions": REJECTED_SESSION_RESPONSES,
    "records": REJECTED_UPSTREAM_RECORDS,
}

_RUN_ID = Column("run_id", TEXT, "the Dagster run that wrote the row")

# one shape for every reject table, so the view ops.rejected_records is their union
_REJECT_COLUMNS = (
    Column(
        "reject_id",
        TEXT,
        "sha256 of (table_name, human_id, record_id, reason, raw, occurrence in its "
        "batch): the same reject from a re-run lands once, identical bodies sent twice "
        "land twice",
    ),
    Column("table_name", TEXT, "the table the input was meant for"),
    Column("human_id", TEXT),
    Column("record_id", TEXT, "the record's id, or the delivery (item) it came in"),
    Column("reason", TEXT, "why it could not be loaded"),
    Column("raw", TEXT, "the input as received (an excerpt when oversized)"),
    Column("rejected_at", INSTANT),
    _RUN_ID,
)


def _rejects(name: str, owner: str, what: str) -> Table:
    return Table(
        name,
        _REJECT_COLUMNS,
        key=("reject_id",),
        owner=owner,
        description=f"One row per {what} that could not be loaded, with the reason and the raw "
        "text (keyed by reject_id: a re-run's reject lands once). Part of the view "
        "ops.rejected_records.",
    )


OPS_TABLES: tuple[Table, ...] = (
    Table(
        NOTIFICATION_ITEMS,
        (
            Column("notification_id", TEXT, "`<delivery_digest>:<index in the batch>`"),
            Column("delivery_digest", TEXT, "sha256 of the landed delivery"),
            Column("human_id", TEXT, "`humanId` of the item"),
            Column("endpoint", TEXT, "the endpoint path below /v1/human/"),
            Column("table_name", TEXT, "the record table the endpoint fills"),
            Column("object_id", TEXT, "`objectId`: the record to fetch"),
            Column("action", TEXT, "`created` or `updated`"),
            Column("model", TEXT),
            Column("type", TEXT),
            Column("updated_at", INSTANT, "`updatedAt` of the item"),
            Column("received_at", INSTANT, "when the receiver landed the delivery"),
        ),
        key=("notification_id",),
        owner=NOTIFICATION_INTAKE,
        description="One row per notification item the upstream pushed, from the receiver's "
        "landing log for the receive day (the view ops.notifications adds each item's status). "
        "Unusable items go to ops.rejected_notification_items. Re-materialising a day inserts "
        "nothing new: rows are keyed by delivery digest and index.",
    ),
    _rejects(REJECTED_NOTIFICATION_ITEMS, NOTIFICATION_INTAKE, "notification item"),
    _rejects(REJECTED_SESSION_RESPONSES, SESSION_INTAKE, "Connect session delivery"),
    Table(
        NOTIFICATION_STATUS,
        (
            Column("notification_id", TEXT, "the item (ops.notification_items)"),
            Column(
                "status",
                TEXT,
                "synced | gone | failed | skipped_reconnect | unknown_user (no row: received)",
            ),
            Column("synced_at", INSTANT, "when a sync run last set `status`"),
            Column("sync_run_id", TEXT, "the sync run that last set `status`"),
        ),
        key=("notification_id",),
        owner=RECORD_SYNC,
        description="One row per notification a sync handled: synced, gone, failed, "
        "skipped_reconnect or unknown_user, with the run and time (the view ops.notifications "
        "shows it next to the item).",
    ),
    _rejects(REJECTED_UPSTREAM_RECORDS, RECORD_SYNC, "upstream record"),
    Table(
        FLAGGED_RECORDS,
        (
            Column("table_name", TEXT),
            Column("human_id", TEXT),
            Column("record_id", TEXT),
            Column("flag", TEXT, "`text_repaired` or `future_updated_at`"),
            Column("detail", TEXT),
            _RUN_ID,
            Column("flagged_at", INSTANT),
        ),
        key=("table_name", "human_id", "record_id", "flag"),
        owner=RECORD_SYNC,
        description="One row per loaded record and flag: `text_repaired` (lone surrogates "
        "replaced by U+FFFD), `future_updated_at` (updatedAt past the upstream's clock by more "
        "than SYNC_FUTURE_TOLERANCE_S; updated_at stored as that clock, raw as sent).",
    ),
    Table(
        SYNC_STATE,
        (
            Column("human_id", TEXT),
            Column("endpoint", TEXT, "the endpoint path below /v1/human/"),
            Column(
                "cursor_updated_since",
                INSTANT,
                "the next catch-up asks for updated_since = this instant (upstream clock, "
                "floored to s)",
            ),
            Column("last_synced_at", INSTANT),
            Column("last_run_id", TEXT),
        ),
        key=("human_id", "endpoint"),
        owner=RECORD_SYNC,
        description="One row per (user, endpoint): the cursor the next catch-up starts from.",
    ),
    Table(
        HTTP_REQUESTS,
        (
            Column("request_id", TEXT),
            _RUN_ID,
            Column("method", TEXT),
            Column("path", TEXT, "the path only: never a token or query string"),
            Column("human_id", TEXT),
            Column("status", INT32, "the HTTP status of the answer"),
            Column("attempt", INT32),
            Column("duration_ms", FLOAT),
            Column("started_at", INSTANT),
            Column("rate_limit_limit", INT),
            Column("rate_limit_remaining", INT),
            Column("rate_limit_reset", INT),
            Column("error", TEXT),
        ),
        key=("request_id", "attempt"),
        owner=RECORD_SYNC,
        description="One row per HTTP attempt toward the upstream (request audit; never a "
        "token or query string).",
    ),
    Table(
        LOAD_LOG,
        (
            _RUN_ID,
            Column("table_name", TEXT),
            Column("received", INT),
            Column("loaded", INT),
            Column("rejected", INT),
            Column("inserted", INT, "records whose key the table did not hold"),
            Column(
                "updated",
                INT,
                "stored rows the run changed (a record re-read equal to its stored row in every "
                "column is left in place and counted in neither)",
            ),
            Column("deleted", INT),
            Column(
                "lake_files",
                TEXT,
                "the lake files this run loaded into the table, one per line (the manifest)",
            ),
            Column("committed_at", INSTANT),
        ),
        key=(),
        owner=RECORD_SYNC,
        description="One row per (run, table) committed: received, loaded, rejected, inserted, "
        "updated and deleted counts, and the lake files loaded.",
    ),
    Table(
        SYNC_FAILURES,
        (
            _RUN_ID,
            Column("human_id", TEXT),
            Column("endpoint", TEXT),
            Column("reason", TEXT),
            Column("failed_at", INSTANT),
        ),
        key=(),
        owner=RECORD_SYNC,
        description="One row per (run, user, endpoint) that could not be synced, and why.",
    ),
)

_BY_NAME = {t.name: t for t in OPS_TABLES}

_REJECT_LIST = ", ".join(c.name for c in _REJECT_COLUMNS)

OPS_VIEWS: tuple[View, ...] = (
    # contract part C's notifications: the intake's items with the record sync's statuses (no
    # status row yet: received). Each half has one writer, so the view is what both wrote.
    View(
        NOTIFICATIONS,
        "SELECT "
        + ", ".join(f"i.{c.name}" for c in _BY_NAME[NOTIFICATION_ITEMS].columns)
        + ", coalesce(s.status, 'received') AS status, s.synced_at, s.sync_run_id "
        f"FROM {NOTIFICATION_ITEMS} i "
        f"LEFT JOIN {NOTIFICATION_STATUS} s ON s.notification_id = i.notification_id",
        reads=(NOTIFICATION_ITEMS, NOTIFICATION_STATUS),
        description="View: one row per notification item (ops.notification_items, the "
        "intake's) with its processing status (ops.notification_status, the record sync's; "
        "'received' until a sync handles it).",
    ),
    View(
        REJECTED_RECORDS,
        " UNION ALL ".join(f"SELECT {_REJECT_LIST} FROM {t}" for t in REJECT_TABLES.values()),
        reads=tuple(REJECT_TABLES.values()),
        description="View: one row per upstream record or intake item that could not be "
        "loaded, with the reason and the raw text; received = loaded + rejected. The union of "
        "the writers' reject tables.",
    ),
)

# What a producer of rejects (normaliser, intake rows, connect) fills in; the writer adds
# reject_id, rejected_at and run_id.
REJECT_INPUT: tuple[Column, ...] = _BY_NAME[REJECTED_UPSTREAM_RECORDS].projection(
    ("table_name", "human_id", "record_id", "reason", "raw")
)
# What the normaliser flags; the writer adds run_id and flagged_at.
FLAG_INPUT: tuple[Column, ...] = _BY_NAME[FLAGGED_RECORDS].projection(
    ("table_name", "human_id", "record_id", "flag", "detail")
)
