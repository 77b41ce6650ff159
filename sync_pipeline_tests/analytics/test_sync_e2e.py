"""Issue 15's "Done when", against the simulator + receiver + real Dagster runs: after a
catch-up, analytics holds every numeric vital, lab component and wellness reading with lineage,
in UCUM units and LOINC codes; after notified changes the incremental build equals a full one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from dagster import AssetCheckSeverity, ExecuteInProcessResult
from ucumvert import PintUcumRegistry

from sync_pipeline.upstream.endpoints import READING_TYPES
from sync_pipeline_tests.e2e.harness import Stack, running_stack

pytestmark = pytest.mark.slow

_OBSERVED = f"""
    SELECT 'medical.vital_results', r.human_id, r.record_id, r.position
    FROM medical.vital_results r JOIN medical.vitals v USING (human_id, record_id)
    WHERE v.deleted_at IS NULL
    UNION ALL
    SELECT 'medical.test_result_components', c.human_id, c.record_id, c.position
    FROM medical.test_result_components c JOIN medical.test_results t USING (human_id, record_id)
    WHERE t.deleted_at IS NULL
    UNION ALL
    {
    " UNION ALL ".join(
        f"SELECT 'wellness.{k}', human_id, record_id, p FROM wellness.{k}, "
        f"(SELECT unnest(range({3 if k == 'blood_pressure' else 1})) AS p) WHERE deleted_at IS NULL"
        for k in READING_TYPES
    )
}
"""


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Stack, ExecuteInProcessResult]]:
    data_dir = tmp_path_factory.mktemp("analytics_e2e") / "data"
    with running_stack(data_dir, users=2, seed=15, min_records=8, max_records=12) as stack:
        stack.sim.post_initial_sessions()
        stack.intake()
        yield stack, stack.sync("catchup")


def _checks(result: ExecuteInProcessResult) -> dict[str, Any]:
    return {
        e.check_name: e.passed
        for e in result.get_asset_check_evaluations()
        if e.asset_key.path[0] == "analytics"
    }


def test_catchup_run_builds_observations_with_lineage(
    stack: tuple[Stack, ExecuteInProcessResult],
) -> None:
    s, result = stack
    checks = _checks(result)
    assert checks["traces_to_record"] and checks["coded_values_have_ucum_units"]
    # the simulator jitters SpO2 readings by ±20% around 98, so some exceed 100%: the bounds
    # check warns about exactly those (WARN severity, counts per code in its metadata)
    bounds = next(
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == "values_within_plausible_bounds"
    )
    over = s.query(
        "SELECT count(*) FROM analytics.observations WHERE code = '59408-5' AND value_numeric > 100"
    )[0][0]
    assert bounds.severity == AssetCheckSeverity.WARN
    assert bounds.passed == (over == 0)
    assert bounds.metadata["rows_out_of_bounds"].value == over
    # every measured value of every record row is one observation, and nothing else is
    expected = set(s.query(_OBSERVED))
    observed = set(
        s.query("SELECT record_table, human_id, record_id, position FROM analytics.observations")
    )
    assert expected and observed == expected
    assert len(observed) == s.query("SELECT count(*) FROM analytics.observations")[0][0]
    codes = s.query(
        "SELECT count(DISTINCT code) FROM analytics.observations WHERE code_system = 'LOINC'"
    )[0][0]
    assert codes >= 20


def test_every_unit_is_ucum_and_vitals_and_readings_all_map(
    stack: tuple[Stack, ExecuteInProcessResult],
) -> None:
    s, _ = stack
    ureg = PintUcumRegistry()
    units = [u for (u,) in s.query("SELECT DISTINCT unit FROM analytics.observations") if u]
    assert "mm[Hg]" in units and "cm" in units
    for unit in units:
        ureg.from_ucum(unit)  # raises on anything outside UCUM
    assert s.query(
        "SELECT count(*) FROM analytics.observations WHERE category IN ('vital', 'device') "
        "AND (mapping = 'unmapped' OR unit IS NULL)"
    ) == [(0,)]
    unmapped = s.query("SELECT DISTINCT record_table FROM ops.unmapped_codes")
    assert set(unmapped) <= {("medical.test_result_components",)}
    # the simulator's heights are millimetre readings: every one converted to centimetres
    heights = s.query(
        "SELECT count(*), count(*) FILTER (WHERE unit = 'cm' AND source_unit = 'mm' "
        "AND abs(value_numeric * 10 - CAST(source_value AS DOUBLE)) < 1e-6) "
        "FROM analytics.observations WHERE record_table = 'wellness.height'"
    )[0]
    assert heights[0] > 0 and heights[0] == heights[1]


def test_latest_and_coverage_are_built(stack: tuple[Stack, ExecuteInProcessResult]) -> None:
    s, _ = stack
    users = s.query("SELECT count(DISTINCT human_id) FROM analytics.latest_observations")
    assert users == [(2,)]
    reasons = dict(
        s.query("SELECT coalesce(reason, 'data'), count(*) FROM analytics.coverage GROUP BY 1")
    )
    assert reasons.get("data", 0) > 0 and reasons.get("no_data", 0) > 0
    assert set(reasons) <= {"data", "no_data", "not_connected", "needs_reconnect", "sync_failing"}
    # every landed weight reading in the window is counted on its day
    landed = s.query(
        "SELECT count(*) FROM wellness.weight WHERE deleted_at IS NULL "
        "AND created_at >= (SELECT min(day) FROM analytics.coverage)"
    )[0][0]
    counted = s.query(
        "SELECT sum(records) FROM analytics.coverage WHERE data_type = 'wellness.weight'"
    )[0][0]
    assert landed > 0 and counted == landed


def _changed(result: ExecuteInProcessResult) -> dict[str, int]:
    """Per analytics asset materialised by the run: its `changed` metadata (users rebuilt)."""
    return {
        "/".join(e.asset_key.path): int(e.materialization.metadata["changed"].value)  # type: ignore[arg-type]
        for e in result.get_asset_materialization_events()
        if "changed" in e.materialization.metadata
    }


def test_a_run_with_nothing_new_writes_nothing(
    stack: tuple[Stack, ExecuteInProcessResult],
) -> None:
    s, catchup = stack
    assert _changed(catchup) == {"analytics/coverage": 2, "ops/unmapped_codes": 2}
    state = s.query("SELECT * FROM ops.analytics_state ORDER BY ALL")
    tables = _tables(s)
    # a notified sync with nothing pending: nothing the analytics read has changed
    result = s.sync("incremental")
    assert _changed(result) == {"analytics/coverage": 0, "ops/unmapped_codes": 0}
    assert _users_rebuilt(result) == 0
    assert s.query("SELECT * FROM ops.analytics_state ORDER BY ALL") == state
    assert _tables(s) == tables
    # the analytics job alone: the warehouse file is left byte for byte as it was
    path = s.settings.warehouse.path
    assert path is not None
    before = path.read_bytes()
    result = s.run("analytics_job")
    assert _changed(result) == {"analytics/coverage": 0, "ops/unmapped_codes": 0}
    assert path.read_bytes() == before


def _users_rebuilt(result: ExecuteInProcessResult) -> int:
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.path == ["analytics", "observations"]
    ]
    return int(event.materialization.metadata["users_rebuilt"].value)  # type: ignore[arg-type]


def _tables(s: Stack) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table: s.query(f"SELECT * FROM {table} ORDER BY ALL")
        for table in (
            "analytics.observations",
            "analytics.latest_observations",
            "analytics.coverage",
            "ops.unmapped_codes",
        )
    }


def test_incremental_after_notified_changes_equals_a_full_rebuild(
    stack: tuple[Stack, ExecuteInProcessResult],
) -> None:
    s, _ = stack
    before = s.query("SELECT count(*) FROM analytics.observations")[0][0]
    items = s.sim.advance(created=12, updated=8)["items"]
    assert items
    s.intake()
    result = s.sync("incremental")
    checks = _checks(result)
    assert checks["traces_to_record"] and checks["coded_values_have_ucum_units"]
    incremental = _tables(s)
    assert len(incremental["analytics.observations"]) != before or any(
        i["action"] == "updated" for i in items
    )
    assert set(s.query(_OBSERVED)) == set(
        s.query("SELECT record_table, human_id, record_id, position FROM analytics.observations")
    )
    assert _users_rebuilt(result) >= 1
    assert _users_rebuilt(s.run("analytics_job")) == 0  # nothing changed since: nobody rebuilt
    full = s.run("analytics_job", config={"ops": {"analytics_build": {"config": {"full": True}}}})
    assert _users_rebuilt(full) == 2
    assert _tables(s) == incremental
