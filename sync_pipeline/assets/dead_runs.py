"""The daemon notices runs whose run worker died (instance.reap_dead_runs), so nobody has to run
a command: a run launched by the daemon or the UI whose worker was SIGKILLed or OOM-killed would
otherwise stay STARTED and hold the one warehouse pool slot for hours, blocking every writer."""

from __future__ import annotations

import dagster as dg

from sync_pipeline.assets.automation import SENSOR_STATUS
from sync_pipeline.instance import reap_dead_runs

# a dead worker's slot is back within this long (plus the daemon's tick); each check is a few
# indexed reads of the instance
INTERVAL_S = 60


@dg.sensor(
    minimum_interval_seconds=INTERVAL_S,
    default_status=SENSOR_STATUS,
    description="Marks failed the runs whose run worker process died (killed, out of memory, a "
    "reboot) and frees the pool slots ended runs still hold. Starts no run.",
)
def dead_run_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    cleanup = reap_dead_runs(context.instance, by="dead_run_sensor")
    if cleanup.dead_runs or cleanup.freed_runs:
        context.log.warning(cleanup.describe())
        return dg.SkipReason(cleanup.describe())
    return dg.SkipReason("no dead runs")
