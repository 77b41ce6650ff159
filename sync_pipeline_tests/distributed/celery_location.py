"""The code location with the executor SYNC_EXECUTOR=celery selects, the way a deployment would
get it once definitions.py passes `executor=deploy.executor_def()`. Celery workers import this
module to run steps (it is the reconstructable target the test launches)."""

from __future__ import annotations

import dagster as dg

from sync_pipeline import deploy
from sync_pipeline.definitions import defs as base_defs

defs = dg.Definitions.merge(
    base_defs, dg.Definitions(executor=deploy.executor_def({"SYNC_EXECUTOR": "celery"}))
)


def location_job(name: str) -> dg.JobDefinition:
    return defs.resolve_job_def(name)
