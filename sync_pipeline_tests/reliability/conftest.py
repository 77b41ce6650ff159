from __future__ import annotations

import pytest

from sync_pipeline_tests.reliability.flow import Flow, run_flow


@pytest.fixture(scope="session")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Flow:
    """The one Dagster flow (see flow.py) the secrets, hostile and reporting tests read."""
    return run_flow(tmp_path_factory.mktemp("flow") / "data")
