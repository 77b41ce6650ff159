"""Intake group: what the receiver landed, as rows (one run handles one day or a range)."""

import datetime as dt
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
import pyarrow as pa

from sync_pipeline.assets.checks import key_results, key_specs
from sync_pipeline.intake.landing import LandedDelivery, iter_landed
from sync_pipeline.intake.rows import notification_rows, session_rows
from sync_pipeline.resources import UpstreamResource, WarehouseResource
from sync_pipeline.tables import specs
from sync_pipeline.tables.connect import SESSION_RESPONSES
from sync_pipeline.tables.ops import (
    NOTIFICATION_INTAKE,
    NOTIFICATION_ITEMS,
    REJECT_TABLES,
    SESSION_INTAKE,
)
from sync_pipeline.tables.registry import table as declared
from sync_pipeline.tables.registry import written_by
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


def tables_metadata(
    con: duckdb.DuckDBPyConnection, tables: Sequence[str], columns: Sequence[str] = PREVIEW_COLUMNS
) -> dict[str, dict[str, Any]]:
    """Per warehouse table: row count, column schema (from the table's declaration) and a small
    preview, read after the commit: the counts of all in one statement, their previews in
    another (a step reporting forty tables pays two queries, not eighty)."""
    counts = db.row_counts(con, tables)
    heads = db.table_heads(con, tables, columns, PREVIEW_ROWS)
    # the keys Dagster's UI reads for a table's row count and columns
    return {
        table: {
            "dagster/row_count": dg.MetadataValue.int(counts[table]),
            **specs.table_metadata(table),
            "preview": dg.MetadataValue.md(markdown_preview(heads[table])),
        }
        for table in tables
    }


def table_metadata(
    con: duckdb.DuckDBPyConnection, table: str, columns: Sequence[str] = PREVIEW_COLUMNS
) -> dict[str, Any]:
    """tables_metadata of one table."""
    return tables_metadata(con, [table], columns)[table]


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
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Rows from the partition's days of one landing log, inserted where their key is new (so
    re-materialising a day changes nothing); unusable items go to the asset's reject table.
    The table's key checks are read after the commit on the same connection, and reported
    after the materialisations they judge."""
    days = _days(context)
    rejects = REJECT_TABLES[kind]
    selected = context.selected_asset_check_keys

    def land() -> tuple[dict[str, int], dict[str, Any], dict[str, Any], list[dg.AssetCheckResult]]:
        # one repeatable unit (a DuckLake commit conflict runs it again from the landing log)
        deliveries = (d for day in days for d in iter_landed(warehouse.data_path, kind, day))
        counts = {"deliveries": 0, "rows": 0, "inserted": 0, "rejected": 0, "rejected_new": 0}
        with warehouse.connect(writes=written_by(context.assets_def.node_def.name)) as con:
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
                        con, rejects, rejected, context.run.run_id, _now()
                    )
            read = tables_metadata(con, [table, rejects])
            return counts, read[table], read[rejects], key_results(con, [table], selected)

    counts, metadata, reject_metadata, checks = retrying(land, what=f"landing {table}")
    window = f"{days[0]} .. {days[-1]}"
    yield dg.MaterializeResult(
        asset_key=declared(table).asset_path, metadata={**metadata, "days": window, **counts}
    )
    yield dg.MaterializeResult(
        asset_key=declared(rejects).asset_path,
        metadata={
            **reject_metadata,
            "days": window,
            "rejected": counts["rejected"],
            "rejected_new": counts["rejected_new"],
        },
    )
    yield from checks


def landing_partitions(start: dt.date) -> dg.DailyPartitionsDefinition:
    """Days are receive dates (UTC). end_offset=1 makes today a partition, so today's
    deliveries can be processed before midnight. The first day is a setting
    (SYNC_PARTITIONS_START, default a month back), so the partitions are built when the
    definitions load, not when this module is imported."""
    return dg.DailyPartitionsDefinition(start_date=start.isoformat(), end_offset=1)


def intake_assets(partitions: dg.DailyPartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The intake group over `partitions`: notification_intake (ops.notification_items and its
    rejects) and session_intake (connect.session_responses and its rejects)."""

    @dg.multi_asset(
        specs=[
            specs.table_spec(t, group_name="intake", kinds={"duckdb"})
            for t in (NOTIFICATION_ITEMS, REJECT_TABLES["notifications"])
        ],
        check_specs=key_specs([NOTIFICATION_ITEMS]),
        name=NOTIFICATION_INTAKE,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=POOL,
    )
    def notification_intake(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, upstream: UpstreamResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        """The notifications landing log → notification items (not the landing log itself);
        a notification naming another host than the configured API is rejected (rows.py)."""
        yield from _land_days(
            context,
            warehouse,
            "notifications",
            NOTIFICATION_ITEMS,
            "notification_id",
            lambda deliveries: notification_rows(deliveries, upstream.api_url),
        )

    @dg.multi_asset(
        specs=[
            specs.table_spec(t, group_name="intake", kinds={"duckdb"})
            for t in (SESSION_RESPONSES, REJECT_TABLES["sessions"])
        ],
        check_specs=key_specs([SESSION_RESPONSES]),
        name=SESSION_INTAKE,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=POOL,
    )
    def session_intake(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        yield from _land_days(
            context,
            warehouse,
            "sessions",
            SESSION_RESPONSES,
            "delivery_digest",
            session_rows,
        )

    return [notification_intake, session_intake]
