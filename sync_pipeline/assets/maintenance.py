"""The DuckLake's daily maintenance: compaction, snapshot expiry, deletion of unreferenced files
(warehouse/maintenance.py). A no-op on the single-file warehouse."""

from datetime import timedelta

import dagster as dg

from sync_pipeline.assets.automation import SCHEDULE_STATUS
from sync_pipeline.assets.intake import POOL
from sync_pipeline.resources import WarehouseResource
from sync_pipeline.warehouse.maintenance import maintain_lake


@dg.op(
    pool=POOL,
    description="Merge the DuckLake's small files, expire snapshots older than "
    "SYNC_LAKE_SNAPSHOT_RETENTION_DAYS and delete the files none still needs.",
)
def lake_maintenance(context: dg.OpExecutionContext, warehouse: WarehouseResource) -> None:
    if not warehouse.location.is_lake:
        context.log.info("the warehouse is a single DuckDB file: no lake to maintain")
        return
    with warehouse.connect() as con:
        report = maintain_lake(
            con,
            retention=timedelta(days=warehouse.lake_snapshot_retention_days),
            file_grace=timedelta(hours=warehouse.lake_file_grace_hours),
        )
    context.log.info(
        "lake maintenance: %d of %d snapshots expired; data files %d → %d, %d deleted",
        report.snapshots_expired,
        report.snapshots_before,
        report.files_before,
        report.files_after,
        report.files_deleted,
    )


@dg.job(description="Daily DuckLake retention and compaction (nothing to do on a single file).")
def lake_maintenance_job() -> None:
    lake_maintenance()


# after the daily catch-up has committed, before the working day; starts running or stopped
# with the other schedules (SYNC_AUTOMATION, assets/automation.py)
lake_maintenance_schedule = dg.ScheduleDefinition(
    job=lake_maintenance_job, cron_schedule="30 4 * * *", default_status=SCHEDULE_STATUS
)
