"""Launching the code location's jobs as Dagster runs from Python (the CLI, tests, benchmarks)."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from dagster import DagsterInstance, ExecuteInProcessResult

from sync_pipeline.assets.schedules import sync_config
from sync_pipeline.instance import process_tags
from sync_pipeline.settings import Settings

__all__ = ["RunFailed", "export_settings", "run_job", "sync_config", "today_partition"]


class RunFailed(RuntimeError):
    pass


def export_settings(settings: Settings) -> None:
    """Dagster resources read settings from the environment when a run starts: make the
    environment say what `settings` says (secrets stay in the environment, never in run config)."""
    os.environ["SYNC_DATA_DIR"] = str(settings.data_dir)
    os.environ["SYNC_AUTH_URL"] = settings.auth_url
    os.environ["SYNC_API_URL"] = settings.api_url
    os.environ["SYNC_CLIENT_ID"] = settings.client_id
    os.environ["SYNC_CLIENT_SECRET"] = settings.client_secret
    if settings.session_public_key:
        os.environ["SYNC_SESSION_PUBLIC_KEY"] = settings.session_public_key


def today_partition() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def run_job(
    name: str,
    *,
    instance: DagsterInstance,
    partition_key: str | None = None,
    config: dict[str, Any] | None = None,
    raise_on_failure: bool = True,
    console_log_level: str = "WARNING",
    tags: dict[str, str] | None = None,
) -> ExecuteInProcessResult:
    """Execute one job of the code location in this process, recorded in `instance` and tagged
    with this process, so a later command can tell if it died mid-run (instance.reap_dead_runs)."""
    from sync_pipeline.definitions import defs

    job = defs.resolve_job_def(name)
    # callers show their own progress; Dagster's event stream stays in the instance
    quiet = {"loggers": {"console": {"config": {"log_level": console_log_level}}}}
    result = job.execute_in_process(
        instance=instance,
        partition_key=partition_key,
        run_config={**(config or {}), **quiet},
        raise_on_error=False,
        tags={**(tags or {}), **process_tags()},
    )
    if raise_on_failure and not result.success:
        raise RunFailed(f"Dagster run {result.run_id} of {name} failed")
    return result
