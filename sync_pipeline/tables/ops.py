"""The pipeline's own bookkeeping tables (schema ops), declared once.

The normalisers and the intake produce rejects and flags with only some of these columns
(`REJECT_INPUT`, `FLAG_INPUT`): the writer (warehouse/db.store_rejects, store_flags) adds the
rest. Those projections are taken from the declarations here, never written out again.
"""

from __future__ import annotations

from .columns import FLOAT, INSTANT, INT, INT32, TEXT, Column, Table

NOTIFICATIONS = "ops.notifications"
REJECTED_RECORDS = "ops.rejected_records"
FLAGGED_RECORDS = "ops.flagged_records"
SYNC_STATE = "ops.sync_state"
HTTP_REQUESTS = "ops.http_requests"
LOAD_LOG = "ops.load_log"
SYNC_FAILURES = "ops.sync_failures"

# The Dagster asset definitions that write these tables today, by node name (a single asset's
# node is its key joined by "__", a multi-asset's is its name)
INTAKE_NOTIFICATIONS = "ops__notifications"
RECORD_SYNC = "record_sync"

_RUN_ID = Column("run_id", TEXT, "the Dagster run that wrote the row")

OPS_TABLES: tuple[Table, ...] = (
    Table(
        NOTIFICATIONS,
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
            Column(
                "status",
                TEXT,
                "received → synced | gone | failed | skipped_reconnect | unknown_user",
            ),
            Column("synced_at", INSTANT, "when a sync run last set `status`"),
            Column("sync_run_id", TEXT, "the sync run that last set `status`"),
        ),
        key=("notification_id",),
        owner=INTAKE_NOTIFICATIONS,
        description="One row per notification item the upstream pushed (ops.notifications), "
        "from the receiver's landing log for the receive day. Unusable items go to "
        "ops.rejected_records. Re-materialising a day inserts nothing new: rows are keyed by "
        "delivery digest and index.",
    ),
    Table(
        REJECTED_RECORDS,
        (
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
        ),
        key=("reject_id",),
        owner=RECORD_SYNC,
        description="One row per upstream record or intake item that could not be loaded, "
        "with the reason and the raw text; received = loaded + rejected.",
    ),
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
            Column("inserted", INT),
            Column("updated", INT),
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
        "updated and deleted counts.",
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

# What a producer of rejects (normaliser, intake rows, connect) fills in; the writer adds
# reject_id, rejected_at and run_id.
REJECT_INPUT: tuple[Column, ...] = _BY_NAME[REJECTED_RECORDS].projection(
    ("table_name", "human_id", "record_id", "reason", "raw")
)
# What the normaliser flags; the writer adds run_id and flagged_at.
FLAG_INPUT: tuple[Column, ...] = _BY_NAME[FLAGGED_RECORDS].projection(
    ("table_name", "human_id", "record_id", "flag", "detail")
)
