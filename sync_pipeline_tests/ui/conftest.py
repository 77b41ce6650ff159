"""A data directory filled by a small real sync, shared by the UI and example-query tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from sync_pipeline_tests.e2e.harness import running_stack


@dataclass(frozen=True)
class SyncedData:
    data_dir: Path
    dagster_home: Path
    catchup_run_id: str

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"


@pytest.fixture(scope="session")
def synced_data(tmp_path_factory: pytest.TempPathFactory) -> SyncedData:
    """Sessions posted, intake and a catch-up run as real Dagster runs, then everything stopped:
    what is left is the warehouse and the Dagster instance, as after `sync-pipeline demo`."""
    data_dir = tmp_path_factory.mktemp("ui") / "data"
    with running_stack(data_dir, users=2, seed=7, min_records=4, max_records=8) as stack:
        stack.sim.post_initial_sessions()
        stack.intake()
        result = stack.sync("catchup")
    return SyncedData(
        data_dir=data_dir, dagster_home=data_dir / "dagster", catchup_run_id=result.run_id
    )
