"""The one Definitions object of the sync_pipeline code location."""

from __future__ import annotations

import dagster as dg

from sync_pipeline import deploy
from sync_pipeline.assets.analytics import ANALYTICS_CHECKS, analytics_build
from sync_pipeline.assets.checks import CHECKS
from sync_pipeline.assets.connect import CONNECT_CHECKS, connection_state
from sync_pipeline.assets.intake import notification_log, session_responses
from sync_pipeline.assets.maintenance import lake_maintenance_job, lake_maintenance_schedule
from sync_pipeline.assets.records import record_sync
from sync_pipeline.assets.resources import SyncSettings
from sync_pipeline.assets.schedules import JOBS, SCHEDULES
from sync_pipeline.assets.sensors import SENSORS

defs = dg.Definitions(
    # executors are fixed when the code location loads: SYNC_EXECUTOR picks one (deploy.py)
    executor=deploy.executor_def(),
    assets=[notification_log, session_responses, connection_state, record_sync, analytics_build],
    asset_checks=[*CHECKS, *CONNECT_CHECKS, *ANALYTICS_CHECKS],
    jobs=[*JOBS, lake_maintenance_job],
    schedules=[*SCHEDULES, lake_maintenance_schedule],
    sensors=SENSORS,
    resources={"sync": SyncSettings()},
)
