"""Dagster resources: settings come from the environment when a run starts."""

from dataclasses import replace
from pathlib import Path

import dagster as dg

from sync_pipeline.settings import Settings, load_settings


class SyncSettings(dg.ConfigurableResource):
    """Typed settings for a run. Secrets (client secret, session key) are read from the
    environment only, never from run config, so they never show in the UI or event log."""

    data_dir: str | None = None  # overrides SYNC_DATA_DIR, e.g. for tests

    def load(self) -> Settings:
        settings = load_settings()
        if self.data_dir:
            settings = replace(settings, data_dir=Path(self.data_dir).resolve())
        return settings
