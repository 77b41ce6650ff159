"""What the Dagster daemon does with this code location on its own, read once when it loads.

- Schedules and sensors are RUNNING by default: `dg dev` (or a deployment's daemon) lands,
  syncs and checks with nothing to switch on in the UI. `SYNC_AUTOMATION=stopped` starts them
  stopped, for an operator who turns each one on. Either way this is only the state they start
  in: a state set in the UI is kept by the instance and wins.
- Each record table carries a time-window freshness policy: FAIL once its last materialisation
  (a record sync that committed) is older than SYNC_FRESHNESS_HOURS. The daemon's freshness loop
  re-evaluates it every 30 s from the instance's event log, with no run and no warehouse handle,
  so a table goes stale in the UI even when no sync runs at all. The `fresh` check of each
  record table stays: record_sync evaluates it with every sync and judges each endpoint by its
  last sync without error, which a materialisation alone cannot tell (a run whose endpoint
  failed for every user still materialises its table).
"""

import datetime as dt

import dagster as dg

from sync_pipeline.location_settings import SETTINGS
from sync_pipeline.upstream.endpoints import ENDPOINTS

_RUNNING = SETTINGS.automation == "running"

SCHEDULE_STATUS = dg.DefaultScheduleStatus.RUNNING if _RUNNING else dg.DefaultScheduleStatus.STOPPED
SENSOR_STATUS = dg.DefaultSensorStatus.RUNNING if _RUNNING else dg.DefaultSensorStatus.STOPPED

RECORD_TABLE_KEYS = frozenset(dg.AssetKey(e.table.split(".")) for e in ENDPOINTS)
RECORD_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=dt.timedelta(hours=SETTINGS.freshness_hours)
)


def with_record_freshness(assets: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """`assets` with the record freshness policy on each record table among its specs."""
    return assets.map_asset_specs(
        lambda spec: (
            dg.apply_freshness_policy(spec, RECORD_FRESHNESS)
            if spec.key in RECORD_TABLE_KEYS
            else spec
        )
    )
