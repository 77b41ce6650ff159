"""Intake group: what the receiver landed, as rows (one run handles one day or a range)."""

import datetime as dt
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
import pyarrow as pa

from sync_pipeline.assets.resources import SyncSettings
from sync_pipeline.intake.landing import LandedDelivery, iter_landed
from sync_pipeline.intake.rows import notification_rows, session_rows
from sync_pipeline.settings import Settings, load_settings
from sync_pipeline.warehouse import db
from sync_pipeline.warehouse.conflicts import retrying

# Days are receive dates (UTC). end_offset=1 makes today a partition, so today's deliveries
# can be processed before midnight. The first day is a setting, read when the code location
# loads (SYNC_PARTITIONS_START, default a month back).
landing_days = dg.DailyPartitionsDefinition(
    start_date=load_settings().partitions_start.isoformat(), end_offset=1
)
# The pool of steps that open the warehouse. Its slots are the instance's (deploy.py): one for a
# DuckDB file, SYNC_WAREHOUSE_WRITERS for a DuckLake on PostgreSQL (warehouse/target.py).
POOL = "warehouse"
# deliveries turned into rows at once (a delivery is at most SYNC_MAX_BODY_BYTES)
CHUNK_DELIVERIES = 2000


# Preview columns: ids, times and statuses only. Never names, values or payloads: metadata is
# stored in the Dagster instance, which is not PHI storage (a medication's name is PHI).
PREVIEW_COLUMNS = (
    "table_name",
    "human_id",
    "record_id",
    "position",
    "notification_id",
    "object_id",
    "action",
    "event",
    "status",
    "source_id",
    "created_at",
    "updated_at",
    "deleted_at",
    "received_at",
)
PREVIEW_ROWS = 5


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="seconds")
    return str(value).replace("|", "\\|").replace("\n", " ")[:40]


def markdown_preview(head: pa.Table) -> str:
    names = head.column_names
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(_cell(row[n]) for n in names) + " |" for row in head.to_pylist()]
    return "\n".join(lines)


def table_metadata(
    con: duckdb.DuckDBPyConnection, table: str, columns: Sequence[str] = PREVIEW_COLUMNS
) -> dict[str, Any]:
    """Row count, column schema (from the table's Arrow schema) and a small preview of one
    warehouse table: one read of the table, taken after the commit."""
    rows, head = db.table_head(con, table, columns, PREVIEW_ROWS)
    schema = db.all_schemas()[table]
    # the keys Dagster's UI reads for a table's row count and columns
    return {
        "dagster/row_count": dg.MetadataValue.int(rows),
        "dagster/column_schema": dg.MetadataValue.table_schema(
            dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type)) for f in schema])
        ),
        "preview": dg.MetadataValue.md(markdown_preview(head)),
    }


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _days(context: dg.AssetExecutionContext) -> list[dt.date]:
    window = context.partition_time_window
    first, last = window.start.date(), window.end.date()
    return [first + dt.timedelta(days=n) for n in range((last - first).days)]


def _land_days(
    context: dg.AssetExecutionContext,
    sync: SyncSettings,
    kind: str,
    table: str,
    key: str,
    to_rows: Callable[[list[LandedDelivery], Settings], tuple[pd.DataFrame, pd.DataFrame]],
) -> dg.MaterializeResult:
    """Rows from the partition's days of one landing log, inserted where their key is new (so
    re-materialising a day changes nothing); unusable items go to ops.rejected_records."""
    settings = sync.load()
    days = _days(context)

    def land() -> tuple[dict[str, int], dict[str, Any]]:
        # one repeatable unit (a DuckLake commit conflict runs it again from the landing log)
        deliveries = (d for day in days for d in iter_landed(settings.data_dir, kind, day))
        counts = {"deliveries": 0, "rows": 0, "inserted": 0, "rejected": 0, "rejected_new": 0}
        with db.connect(settings.warehouse, key=settings.warehouse_key) as con:
            with db.transaction(con):
                # in chunks: memory follows the chunk, not the partition's days (one transaction)
                while chunk := list(itertools.islice(deliveries, CHUNK_DELIVERIES)):
                    rows, rejected = to_rows(chunk, settings)
                    counts["deliveries"] += len(chunk)
                    counts["rows"] += len(rows)
                    counts["rejected"] += len(rejected)
                    counts["inserted"] += db.insert_absent(
                        con, table, pa.Table.from_pandas(rows, preserve_index=False), (key,)
                    )
                    counts["rejected_new"] += db.store_rejects(
                        con, rejected, context.run.run_id, _now()
                    )
            return counts, table_metadata(con, table)

    counts, metadata = retrying(land, what=f"landing {table}")
    return dg.MaterializeResult(metadata={**metadata, "days": f"{days[0]} .. {days[-1]}", **counts})


@dg.asset(
    key=["ops", "notifications"],
    group_name="intake",
    partitions_def=landing_days,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=POOL,
    kinds={"duckdb"},
    description=(
        "One row per notification item the upstream pushed (ops.notifications), from the "
        "receiver's landing log for the receive day. Unusable items go to ops.rejected_records. "
        "Re-materialising a day inserts nothing new: rows are keyed by delivery digest and index."
    ),
)
def notification_log(context: dg.AssetExecutionContext, sync: SyncSettings) -> dg.MaterializeResult:
    return _land_days(
        context,
        sync,
        "notifications",
        "ops.notifications",
        "notification_id",
        lambda deliveries, settings: notification_rows(deliveries, settings.api_url),
    )


@dg.asset(
    key=["connect", "session_responses"],
    group_name="intake",
    partitions_def=landing_days,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=POOL,
    kinds={"duckdb"},
    description=(
        "One row per Connect session response the app's front end delivered "
        "(connect.session_responses), payload kept as received, for the receive day."
    ),
)
def session_responses(
    context: dg.AssetExecutionContext, sync: SyncSettings
) -> dg.MaterializeResult:
    return _land_days(
        context,
        sync,
        "sessions",
        "connect.session_responses",
        "delivery_digest",
        lambda deliveries, _settings: session_rows(deliveries),
    )
