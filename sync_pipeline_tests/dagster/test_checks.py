"""Asset checks: they pass on a warehouse the pipeline wrote, and a bad key inserted by SQL fails
its check and (blocking checks) stops what is downstream of the table in the same run. The
checks are check specs of the step that writes their table, evaluated in that step."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from sync_pipeline.assets.checks import FRESH, LEDGER, NON_NULL, UNIQUE
from sync_pipeline.assets.intake import intake_assets, landing_partitions
from sync_pipeline.assets.records import record_sync
from sync_pipeline.tables.registry import CHILD_TABLES, RECORD_TABLES, owner_of
from sync_pipeline.upstream.endpoints import ENDPOINTS
from sync_pipeline.warehouse import db
from sync_pipeline_tests.e2e.harness import running_stack
from sync_pipeline_tests.resources import resources_for

pytestmark = pytest.mark.slow

# the intake group over the fixed test days (2025)
notification_intake, _ = intake_assets(landing_partitions(dt.date(2025, 1, 1)))


def test_checks_pass_on_a_synced_warehouse(tmp_path: Path) -> None:
    with running_stack(tmp_path / "data", users=2, min_records=3, max_records=6) as stack:
        stack.sim.post_initial_sessions()
        evaluations = [
            *stack.intake().get_asset_check_evaluations(),
            *stack.sync("catchup").get_asset_check_evaluations(),
        ]
        by_name: dict[str, list[dg.AssetCheckEvaluation]] = {}
        for evaluation in evaluations:
            by_name.setdefault(evaluation.check_name, []).append(evaluation)
        # intake (2 tables) + connect (2) + record tables, children and codes + the sync's
        # notification statuses
        assert (
            len(by_name[UNIQUE])
            == len(by_name[NON_NULL])
            == 4 + len(RECORD_TABLES) + len(CHILD_TABLES) + 1
        )
        assert len(by_name[LEDGER]) == len(by_name[FRESH]) == len(ENDPOINTS)
        failed = [e.asset_check_key.to_user_string() for e in evaluations if not e.passed]
        # a table never synced (an endpoint none of the users has data for) may be stale;
        # everything the catch-up just synced is fresh, and nothing else may fail (the
        # simulator keeps percentages at or below 100, so the analytics bounds hold)
        assert all(name.endswith(f":{FRESH}") for name in failed), failed
        fresh = [e for e in by_name[FRESH] if e.passed]
        assert len(fresh) >= 10


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@dg.asset(deps=[["medical", "allergies"], ["ops", "notification_items"]])
def downstream_probe() -> None:
    """Stands for anything built on the checked tables."""


@dataclass(frozen=True)
class BadLoad:
    sql: str
    check: str  # asset:check expected to fail
    blocks: bool


BAD_LOADS = {
    "duplicate record key": BadLoad(
        "INSERT INTO medical.allergies (human_id, record_id) VALUES ('h', 'r'), ('h', 'r')",
        f"medical/allergies:{UNIQUE}",
        blocks=True,
    ),
    "null child key": BadLoad(
        "INSERT INTO medical.test_result_components (human_id, record_id, position) "
        "VALUES ('h', NULL, 0)",
        f"medical/test_result_components:{NON_NULL}",
        blocks=True,
    ),
    "duplicate notification": BadLoad(
        "INSERT INTO ops.notification_items (notification_id) VALUES ('n'), ('n')",
        f"ops/notification_items:{UNIQUE}",
        blocks=True,
    ),
    "unbalanced load log": BadLoad(
        "INSERT INTO ops.load_log (run_id, table_name, received, loaded, rejected, committed_at) "
        "VALUES ('r', 'medical.allergies', 5, 3, 1, now())",
        f"medical/allergies:{LEDGER}",
        blocks=False,
    ),
}


@pytest.mark.parametrize("bad", BAD_LOADS.values(), ids=BAD_LOADS.keys())
def test_bad_load_fails_its_check(data_dir: Path, bad: BadLoad) -> None:
    with db.connect(data_dir / "warehouse.duckdb") as con:
        con.execute(bad.sql)
    with dg.instance_for_test() as instance:
        # an incremental sync with nothing pending makes no requests: no upstream needed
        result = dg.materialize(
            [notification_intake, record_sync, downstream_probe],
            selection=dg.AssetSelection.assets(
                ["ops", "notification_items"], downstream_probe
            ).required_multi_asset_neighbors()
            | dg.AssetSelection.assets(["medical", "allergies"]).required_multi_asset_neighbors(),
            partition_key="2025-03-01",
            resources=resources_for(data_dir),
            instance=instance,
            raise_on_error=False,
        )
    failed = [
        e.asset_check_key.to_user_string()
        for e in result.get_asset_check_evaluations()
        if not e.passed and e.check_name != FRESH
    ]
    assert failed == [bad.check]
    probe_ran = bool(result.asset_materializations_for_node("downstream_probe"))
    assert probe_ran is not bad.blocks
    assert result.success is not bad.blocks
    # evaluated in the step that writes the table (its registry owner), after that step's
    # materialisations; a failed blocking check fails that step, nothing else does
    table = ".".join(bad.check.split(":")[0].split("/"))
    writer = owner_of(table)
    events = result.all_node_events
    steps = {e.step_key for e in events if e.event_type == dg.DagsterEventType.STEP_START}
    # no check step: the assets' own steps, the writer among them
    assert writer in steps <= {"notification_intake", "record_sync", "downstream_probe"}
    (evaluation,) = [
        e
        for e in events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        and e.asset_check_evaluation_data.asset_check_key.to_user_string() == bad.check
    ]
    assert evaluation.step_key == writer
    assert result.asset_materializations_for_node(writer)
    failures = [e for e in events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert [e.step_key for e in failures] == ([writer] if bad.blocks else [])
    for failure in failures:
        assert failure.step_failure_data.error is not None
        assert failure.step_failure_data.error.cls_name == "DagsterAssetCheckFailedError"
