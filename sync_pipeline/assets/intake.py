"""Intake group: what the receiver landed, as rows (one run handles one day or a range)."""

import datetime as dt
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
import pyarrow as pa

from sync_pipeline.intake.landing import LandedDelivery, iter_landed
from sync_pipeline.intake.rows import notification_rows, session_rows
from sync_pipeline.resources import UpstreamResource, WarehouseResource
from sync_pipeline.tables import specs
from sync_pipeline.tables.connect import SESSION_RESPONSES
from sync_pipeline.tables.ops import NOTIFICATIONS
from sync_pipeline.tables.registry import table as declared
from sync_pipeline.warehouse import db
from sync_pipeline.warehouse.conflicts import retrying

# The pool of steps that open the warehouse. Its slots are the instance's (deploy.py): one for a
# DuckDB file, SYNC_WAREHOUSE_WRITERS for a DuckLake on PostgreSQL (warehouse/location.py).
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
    """Row count, column schema (from the table's declaration) and a small preview of one
    warehouse table: one read of the table, taken after the commit."""
    rows, head = db.table_head(con, table, columns, PREVIEW_ROWS)
    # the keys Dagster's UI reads for a table's row count and columns
    return {
        "dagster/row_count": dg.MetadataValue.int(rows),
        **specs.table_metadata(table),
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
    warehouse: WarehouseResource,
    kind: str,
    table: str,
    key: str,
    to_rows: Callable[[list[LandedDelivery]], tuple[pd.DataFrame, pd.DataFrame]],
) -> dg.MaterializeResult:
    """Rows from the partition's days of one landing log, inserted where their key is new (so
    re-materialising a day changes nothing); unusable items go to ops.rejected_records."""
    days = _days(context)

    def land() -> tuple[dict[str, int], dict[str, Any]]:
        # one repeatable unit (a DuckLake commit conflict runs it again from the landing log)
        deliveries = (d for day in days for d in iter_landed(warehouse.data_path, kind, day))
        counts = {"deliveries": 0, "rows": 0, "inserted": 0, "rejected": 0, "rejected_new": 0}
        with warehouse.connect() as con:
            with db.transaction(con):
                # in chunks: memory follows the chunk, not the partition's days (one transaction)
                while chunk := list(itertools.islice(deliveries, CHUNK_DELIVERIES)):
                    rows, rejected = to_rows(chunk)
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


def landing_partitions(start: dt.date) -> dg.DailyPartitionsDefinition:
    """Days are receive dates (UTC). end_offset=1 makes today a partition, so today's
    deliveries can be processed before midnight. The first day is a setting
    (SYNC_PARTITIONS_START, default a month back), so the partitions are built when the
    definitions load, not when this module is imported."""
    return dg.DailyPartitionsDefinition(start_date=start.isoformat(), end_offset=1)


def intake_assets(partitions: dg.DailyPartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The intake group (ops.notifications, connect.session_responses) over `partitions`."""

    @dg.asset(
        key=["ops", "notifications"],
        group_name="intake",
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=POOL,
        kinds={"duckdb"},
        description=declared(NOTIFICATIONS).description,
        metadata=specs.table_metadata(NOTIFICATIONS),
    )
    def notification_log(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, upstream: UpstreamResource
    ) -> dg.MaterializeResult:
        # a notification naming another host than the configured API is rejected (rows.py)
        return _land_days(
            context,
            warehouse,
            "notifications",
            NOTIFICATIONS,
            "notification_id",
            lambda deliveries: notification_rows(deliveries, upstream.api_url),
        )

    @dg.asset(
        key=["connect", "session_responses"],
        group_name="intake",
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=POOL,
        kinds={"duckdb"},
        description=declared(SESSION_RESPONSES).description,
        metadata=specs.table_metadata(SESSION_RESPONSES),
    )
    def session_responses(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        return _land_days(
            context,
            warehouse,
            "sessions",
            SESSION_RESPONSES,
            "delivery_digest",
            session_rows,
        )

    return [notification_log, session_responses]
