"""Resources for tests that run assets, checks and sensors: built from settings given as values
(never from this process's environment), on a temporary data directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

from sync_pipeline.resources import build_resources
from sync_pipeline.settings import Settings, load_settings


def settings_for(data_dir: Path, **env: str) -> Settings:
    """Settings with the data dir `data_dir`, other values from `env` (SYNC_* names) or defaults."""
    return load_settings({"SYNC_DATA_DIR": str(data_dir), **env})


def resources_for(data_dir: Path, **replace: Any) -> dict[str, dg.ConfigurableResource]:
    """The code location's resources on `data_dir`; keyword arguments replace one by key."""
    return {**build_resources(settings_for(data_dir)), **replace}


def settings_env(settings: Settings) -> dict[str, str]:
    """SYNC_* variables under which a spawned process's `load_settings()` says what `settings`
    say about the upstream and the data: for the `env=` of a subprocess (a Celery worker loading
    the code location), never for this process's environment."""
    env = {
        "SYNC_DATA_DIR": str(settings.data_dir),
        "SYNC_AUTH_URL": settings.auth_url,
        "SYNC_API_URL": settings.api_url,
        "SYNC_CLIENT_ID": settings.client_id,
        "SYNC_CLIENT_SECRET": settings.client_secret,
    }
    optional = {
        "SYNC_SESSION_PUBLIC_KEY": settings.session_public_key,
        "SYNC_RATE_BACKEND": settings.rate_backend,
        "SYNC_LAKE_URL": settings.lake_url,
        "SYNC_LAKE_ENDPOINT_URL": settings.lake_endpoint_url,
        "SYNC_WAREHOUSE": settings.warehouse_lake,
        "SYNC_WAREHOUSE_KEY": settings.warehouse_key,
    }
    return {**env, **{name: value for name, value in optional.items() if value}}
