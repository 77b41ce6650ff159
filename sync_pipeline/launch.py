"""Launching the code location's jobs as Dagster runs from Python (the CLI, tests, benchmarks)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from dagster import DagsterInstance, ExecuteInProcessResult

from sync_pipeline.assets.schedules import sync_config
from sync_pipeline.instance import process_tags
from sync_pipeline.resources import run_resources
from sync_pipeline.settings import Settings

__all__ = ["RunFailed", "run_job", "sync_config", "today_partition"]


class RunFailed(RuntimeError):
    pass


def today_partition() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def run_job(
    name: str,
    *,
    settings: Settings,
    instance: DagsterInstance,
    partition_key: str | None = None,
    config: dict[str, Any] | None = None,
    raise_on_failure: bool = True,
    console_log_level: str = "WARNING",
    tags: dict[str, str] | None = None,
) -> ExecuteInProcessResult:
    """Execute one job of the code location in this process, on resources built from
    `settings` (not the environment the definitions loaded from), recorded in `instance` and
    tagged with this process, so a later command can tell if it died mid-run
    (instance.reap_dead_runs)."""
    from sync_pipeline.definitions import defs

    job = defs.resolve_job_def(name)
    # callers show their own progress; Dagster's event stream stays in the instance
    quiet = {"loggers": {"console": {"config": {"log_level": console_log_level}}}}
    result = job.execute_in_process(
        instance=instance,
        partition_key=partition_key,
        run_config={**(config or {}), **quiet},
        resources=run_resources(settings),
        raise_on_error=False,
        tags={**(tags or {}), **process_tags()},
    )
    if raise_on_failure and not result.success:
        raise RunFailed(f"Dagster run {result.run_id} of {name} failed")
    return result
