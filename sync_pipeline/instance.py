"""The local Dagster instance under the data directory (runs recorded there show in `dagster dev`
started with the same DAGSTER_HOME)."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import DagsterInstance

# One warehouse pool slot: steps that open the DuckDB file run one at a time, across runs.
# No network here, so no telemetry.
LOCAL_INSTANCE_YAML = """\
telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: 1
"""


def ensure_local_instance(dagster_home: Path) -> DagsterInstance:
    """Point DAGSTER_HOME at `dagster_home`, whose dagster.yaml is the one the environment
    selects (SYNC_DAGSTER_STORAGE: the embedded SQLite default, or Postgres)."""
    from sync_pipeline.deploy import write_instance_yaml

    write_instance_yaml(dagster_home)
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    instance = DagsterInstance.get()
    # create the storage now: several processes creating an empty SQLite home at once race
    # on its schema migration
    instance.get_run_records(limit=1)
    return instance
