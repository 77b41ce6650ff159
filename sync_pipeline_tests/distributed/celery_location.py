"""The code location with the executor SYNC_EXECUTOR=celery selects, built the way
definitions.py builds it (`executor=deploy.executor_def()`) but whatever SYNC_EXECUTOR the
importing process had when definitions.py was first imported. Celery workers import this module
to run steps (it is the reconstructable target the test launches)."""

from __future__ import annotations

import dagster as dg

from sync_pipeline import deploy
from sync_pipeline.definitions import defs as base_defs

# the same parts with the celery executor (merging would refuse two executors)
defs = dg.Definitions(
    assets=base_defs.assets,
    asset_checks=base_defs.asset_checks,
    schedules=base_defs.schedules,
    sensors=base_defs.sensors,
    jobs=base_defs.jobs,
    resources=base_defs.resources,
    loggers=base_defs.loggers,
    executor=deploy.executor_def({"SYNC_EXECUTOR": "celery"}),
)


def location_job(name: str) -> dg.JobDefinition:
    return defs.resolve_job_def(name)
