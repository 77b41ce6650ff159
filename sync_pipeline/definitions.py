"""The one Definitions object of the sync_pipeline code location."""

from __future__ import annotations

import dagster as dg

from sync_pipeline import deploy
from sync_pipeline.assets.analytics import ANALYTICS_CHECKS, analytics_build
from sync_pipeline.assets.checks import CHECKS
from sync_pipeline.assets.connect import CONNECT_CHECKS, connection_state
from sync_pipeline.assets.intake import notification_intake, session_intake
from sync_pipeline.assets.records import record_sync
from sync_pipeline.assets.resources import SyncSettings
from sync_pipeline.assets.schedules import JOBS, SCHEDULES
from sync_pipeline.assets.sensors import SENSORS
from sync_pipeline.assets.views import VIEW_SPECS

defs = dg.Definitions(
    # executors are fixed when the code location loads: SYNC_EXECUTOR picks one (deploy.py)
    executor=deploy.executor_def(),
    # each table is written by exactly one of these assets (its registry owner); the views are
    # external assets (no step writes them) so the graph shows what they read
    assets=[
        notification_intake,
        session_intake,
        connection_state,
        record_sync,
        analytics_build,
        *VIEW_SPECS,
    ],
    asset_checks=[*CHECKS, *CONNECT_CHECKS, *ANALYTICS_CHECKS],
    jobs=JOBS,
    schedules=SCHEDULES,
    sensors=SENSORS,
    resources={"sync": SyncSettings()},
)
