"""The one Definitions object of the sync_pipeline code location.

The environment is read once, when the code location loads (`location_settings.SETTINGS`);
the resources every asset, check and sensor receives are built from those settings
(sync_pipeline/resources.py; secrets bound as dg.EnvVar). Runs never read settings back from
the environment.
"""

from __future__ import annotations

import os

import dagster as dg

from sync_pipeline import deploy
from sync_pipeline.assets.analytics import analytics_build
from sync_pipeline.assets.automation import with_record_freshness
from sync_pipeline.assets.connect import connection_state
from sync_pipeline.assets.intake import intake_assets, landing_partitions
from sync_pipeline.assets.maintenance import lake_maintenance_job, lake_maintenance_schedule
from sync_pipeline.assets.records import record_sync
from sync_pipeline.assets.schedules import JOBS, SCHEDULES
from sync_pipeline.assets.sensors import SENSORS
from sync_pipeline.assets.views import VIEW_SPECS
from sync_pipeline.location_settings import SETTINGS
from sync_pipeline.resources import build_resources

defs = dg.Definitions(
    # executors are fixed when the code location loads: SYNC_EXECUTOR picks one for every job,
    # or (unset) each run gets the one that fits its job's shape when it starts (deploy.py)
    executor=deploy.executor_def(os.environ),
    # each table is written by exactly one of these assets (its registry owner), which also
    # evaluates the table's asset checks (its check specs) right after its commit; the views are
    # external assets (no step writes them) so the graph shows what they read
    assets=[
        *intake_assets(landing_partitions(SETTINGS.partitions_start)),
        connection_state,
        # freshness the daemon evaluates with no run (assets/automation.py)
        with_record_freshness(record_sync),
        analytics_build,
        *VIEW_SPECS,
    ],
    jobs=[*JOBS, lake_maintenance_job],
    schedules=[*SCHEDULES, lake_maintenance_schedule],
    sensors=SENSORS,
    resources=build_resources(SETTINGS, os.environ),
)
