"""The demo's path as a test: sessions and notifications through the receiver, Dagster runs,
tables level with the simulator."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync_pipeline_tests.e2e.harness import running_stack

pytestmark = pytest.mark.slow


def test_catchup_then_incremental_then_nothing_new(tmp_path: Path) -> None:
    with running_stack(tmp_path / "data") as stack:
        stack.sim.post_initial_sessions()
        stack.intake()
        stack.sync("catchup")
        assert stack.query("SELECT count(*) FROM connect.users") == [(3,)]
        first = stack.query("SELECT count(*) FROM medical.test_results")[0][0]
        assert first > 0

        stack.reset_stats()
        stack.sync("incremental")
        assert stack.data_requests() == 0  # nothing new: no data requests

        changes = stack.sim.advance(created=10, updated=5)["items"]
        stack.intake()
        stack.reset_stats()
        stack.sync("incremental")
        assert 0 < stack.data_requests() <= len(changes)
        pending = stack.query(
            "SELECT count(*) FROM ops.notifications WHERE status NOT IN ('synced', 'gone')"
        )
        assert pending == [(0,)]
