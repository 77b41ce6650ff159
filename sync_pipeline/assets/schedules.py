"""Jobs and schedules: an hourly notification-driven sync and a daily catch-up."""

from __future__ import annotations

from typing import Any

import dagster as dg

from sync_pipeline.assets.automation import SCHEDULE_STATUS


def sync_config(mode: str, users: list[str] | None = None) -> dict[str, Any]:
    """Run config of the record sync: its mode, and the users to narrow it to (all if none)."""
    return {"ops": {"record_sync": {"config": {"mode": mode, "users": users or []}}}}


RECORDS = dg.AssetSelection.assets(["medical", "allergies"]).required_multi_asset_neighbors()
CONNECT = dg.AssetSelection.assets(["connect", "app_users"]).required_multi_asset_neighbors()
# the analyst layer is rebuilt (incrementally) at the end of every sync run, so the demo, the
# hourly sync and the daily catch-up all end with analytics level with the records
ANALYTICS = dg.AssetSelection.groups("analytics")

intake_job = dg.define_asset_job(
    "intake_job",
    selection=dg.AssetSelection.groups("intake"),
    description="Turn one day of landed deliveries into ops.notification_items and "
    "connect.session_responses (and their rejects).",
)
incremental_sync_job = dg.define_asset_job(
    "incremental_sync_job",
    selection=CONNECT | RECORDS | ANALYTICS,
    config=sync_config("incremental"),
    description="Fetch what pending notifications name (no notifications → no requests).",
)
catchup_sync_job = dg.define_asset_job(
    "catchup_sync_job",
    selection=CONNECT | RECORDS | ANALYTICS,
    config=sync_config("catchup"),
    description="Every connected user and endpoint from its updated_since cursor: "
    "guarantees completeness when notifications were lost.",
)

# what `sync-pipeline sync` runs when the day's landing log changed: one run instead of two
# saves a run's start and planning; intake's steps come first (the sync's inputs depend on them)
intake_and_sync_job = dg.define_asset_job(
    "intake_and_sync_job",
    selection=dg.AssetSelection.groups("intake") | CONNECT | RECORDS | ANALYTICS,
    config=sync_config("incremental"),
    description="Intake of one landing day, then a sync (incremental unless its config says "
    "otherwise), in one run: what `sync-pipeline sync` runs when the day's landing log changed.",
)

connection_state_job = dg.define_asset_job(
    "connection_state_job",
    selection=CONNECT,
    description="Rebuild connect.app_users, connection_events and connection_history from every "
    "landed session response.",
)

analytics_job = dg.define_asset_job(
    "analytics_job",
    selection=ANALYTICS,
    description="Rebuild the analyst layer (analytics.*, ops.unmapped_codes) from the record "
    "tables: only users whose records changed, or everyone with "
    "ops.analytics_build.config.full = true.",
)

JOBS = [
    intake_job,
    connection_state_job,
    incremental_sync_job,
    catchup_sync_job,
    intake_and_sync_job,
    analytics_job,
]

SCHEDULES = [
    dg.build_schedule_from_partitioned_job(
        intake_job, minute_of_hour=55, default_status=SCHEDULE_STATUS
    ),
    dg.ScheduleDefinition(
        job=incremental_sync_job, cron_schedule="5 * * * *", default_status=SCHEDULE_STATUS
    ),
    dg.ScheduleDefinition(
        job=catchup_sync_job, cron_schedule="30 2 * * *", default_status=SCHEDULE_STATUS
    ),
]
