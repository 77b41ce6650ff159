"""`sync-pipeline bench` in its smallest form, in a subprocess: it runs every part end to end and
writes the result file. Figures are measured, never asserted; the invariants are."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.dlt_run import NOT_INSTALLED, dlt_available
from benchmarks.measure import percentile
from benchmarks.user_path import RunTimeline, breakdown

CLI_RUNS = ("cli_first_sync", "cli_nothing_pending", "cli_catchup_nothing_new")
RUNS = ("ours_full", "dlt", "read_json", "ours_incremental", "ours_nothing_new", *CLI_RUNS)
RATIOS = (
    "fetch_requests_per_s_over_limit",
    "fetch_share_429",
    "ours_over_dlt_records_per_s",
    "normalise_load_over_read_json",
    "decode_normalise_load_over_read_json",
    "nothing_new_data_requests",
    "incremental_data_requests_per_notification",
    "peak_rss_mib",
    "receiver_deliveries_per_s",
    "receiver_p99_ms",
    "receiver_lost",
    "cli_first_sync_share_of_rate_bound",
    "cli_nothing_pending_s",
    "cli_nothing_pending_data_requests",
    "cli_catchup_nothing_new_s",
)
# the parts of a CLI run's wall time (user_path.breakdown), which add up to it
WALL_PARTS = (
    "process_start", "run_start", "steps", "between_steps", "run_end", "between_runs", "exit",
)  # fmt: skip


@pytest.mark.slow
def test_smallest_bench_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    command = [
        sys.executable, "-m", "sync_pipeline.cli", "bench",
        "--users", "2", "--min-records", "2", "--max-records", "6",
        "--batch", "6", "--deliveries", "40", "--senders", "4",
        "--out", str(out), "--work-dir", str(tmp_path / "work"),
    ]  # fmt: skip
    env = {**os.environ, "SYNC_DATA_DIR": str(tmp_path / "unused")}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())

    assert set(result["runs"]) == set(RUNS)
    assert set(result["ratios"]) == set(RATIOS)
    assert result["environment"]["cores"] == os.cpu_count()
    records = result["workload"]["records"]
    full = result["runs"]["ours_full"]
    assert full["records"] == records > 0
    assert full["failed_items"] == 0
    assert set(full["stages_s"]) >= {"fetch", "normalise", "load"}
    assert full["p95_request_ms"] is not None
    assert result["runs"]["read_json"]["records"] == records
    incremental = result["runs"]["ours_incremental"]
    assert incremental["notifications"] == 6
    assert 0 < incremental["data_requests"] <= 6
    nothing = result["runs"]["ours_nothing_new"]
    assert nothing["data_requests"] == 0
    assert result["ratios"]["nothing_new_data_requests"]["met"] is True
    receiver = result["receiver"]
    assert receiver["acknowledged"] == receiver["landed"] == 40
    if dlt_available():
        assert result["runs"]["dlt"]["records"] == records
    else:
        assert result["runs"]["dlt"] == {"not_run": NOT_INSTALLED}
    assert "ours_full" in done.stdout and "Targets" in done.stdout
    _assert_user_path(result["runs"])
    assert "User's path" in done.stdout


def _assert_user_path(runs: dict[str, Any]) -> None:
    """`sync-pipeline sync` ran three times as its own process, and each run's figures exist
    and are sane (no timing asserted: only signs, counts and that the parts make the whole)."""
    for name in CLI_RUNS:
        run = runs[name]
        assert run["exit_code"] == 0, run.get("stderr_tail")
        assert run["wall_s"] > 0
        assert run["bound_s"] >= 0
        assert 0 <= run["share_of_bound"] < 1
        assert run["fixed_overhead_s"] == pytest.approx(run["wall_s"] - run["bound_s"])
        parts = run["breakdown_s"]
        assert all(parts[p] >= 0 for p in WALL_PARTS)
        assert parts["process_start"] > 0
        assert 0 <= parts["planning"] <= parts["run_start"]
        assert 0 <= parts["checks"] <= parts["steps"]
        assert sum(parts[p] for p in WALL_PARTS) == pytest.approx(run["wall_s"], rel=0.01)
        steps = {key for r in parts["runs"] for key in r["steps_s"]}
        if name == "cli_nothing_pending":
            # nothing landed since the last intake, nothing pending: the CLI launches no run
            assert parts["dagster_runs"] == 0 and "record_sync" not in steps
        else:
            assert parts["dagster_runs"] >= 1 and parts["steps"] > 0
            assert "record_sync" in steps
            # no check steps: the checks are timed inside the steps that write the tables
            assert not any("check" in key for key in steps), steps
            checked = {key for r in parts["runs"] for key in r["checks_s"]}
            assert {"record_sync", "connection_state", "analytics_build"} <= checked <= steps
            assert parts["checks"] == pytest.approx(
                sum(sum(r["checks_s"].values()) for r in parts["runs"])
            )
    first = runs["cli_first_sync"]
    assert first["users"] == first["sessions_landed"] == 2
    assert first["requests"] > 0 and first["data_requests"] > 0 and first["records"] > 0
    assert first["bound_s"] > 0
    assert first["breakdown_s"]["commit"] is not None and first["breakdown_s"]["commit"] >= 0
    assert runs["cli_nothing_pending"]["data_requests"] == 0
    assert runs["cli_catchup_nothing_new"]["users"] == 2
    assert runs["cli_catchup_nothing_new"]["data_requests"] > 0


def test_breakdown_parts_make_the_wall_time() -> None:
    """Two runs on a made-up clock: every second between process start and exit lands in
    exactly one part; checks (each step's last materialisation → its last check evaluation)
    and commit are read off the steps."""
    intake = RunTimeline("a", "intake_job", "SUCCESS", first_event=10.0, last_event=13.0)
    intake.run_started = 11.0
    intake.steps = {"notification_intake": (12.0, 12.5), "session_intake": (12.6, 12.8)}
    intake.last_materialization = {"notification_intake": 12.3, "session_intake": 12.7}
    intake.last_check = {"notification_intake": 12.4, "session_intake": 12.75}
    sync = RunTimeline("b", "catchup_sync_job", "SUCCESS", first_event=14.0, last_event=30.0)
    sync.run_started = 15.5
    sync.steps = {"record_sync": (16.0, 25.0), "analytics_build": (25.0, 29.0)}
    sync.first_materialization = {"record_sync": 21.0, "analytics_build": 27.0}
    sync.last_materialization = {"record_sync": 22.0, "analytics_build": 28.0}
    # record_sync's checks run after its materialisations; analytics_build has no check here
    sync.last_check = {"record_sync": 24.5}
    parts = breakdown([intake, sync], started=8.0, ended=31.0, committed_at=20.5)
    assert parts["process_start"] == 2.0
    assert parts["run_start"] == 2.0 + 2.0
    assert parts["planning"] == 1.0 + 1.5
    assert parts["steps"] == pytest.approx(0.5 + 0.2 + 9.0 + 4.0)
    assert parts["between_steps"] == pytest.approx(0.1)
    assert parts["run_end"] == pytest.approx(0.2 + 1.0)
    assert parts["between_runs"] == 1.0
    assert parts["exit"] == 1.0
    assert parts["checks"] == pytest.approx(0.1 + 0.05 + 2.5)
    assert parts["commit"] == 0.5
    assert sum(parts[p] for p in WALL_PARTS) == pytest.approx(31.0 - 8.0)
    runs = parts["runs"]
    assert runs[1]["steps_s"] == {"record_sync": 9.0, "analytics_build": 4.0}
    assert runs[1]["checks_s"] == {"record_sync": 2.5}
    assert runs[0]["checks_s"] == pytest.approx(
        {"notification_intake": 0.1, "session_intake": 0.05}
    )


def test_breakdown_of_a_process_that_started_no_run() -> None:
    parts = breakdown([], started=1.0, ended=3.5, committed_at=None)
    assert parts["process_start"] == 2.5 and parts["dagster_runs"] == 0
    assert all(parts[p] == 0 for p in WALL_PARTS if p != "process_start")
    assert parts["commit"] is None and parts["runs"] == []


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [([], 0.95, None), ([5.0], 0.95, 5.0), ([float(v) for v in range(1, 101)], 0.95, 95.0)],
)
def test_percentile(values: list[float], fraction: float, expected: float | None) -> None:
    assert percentile(values, fraction) == expected
