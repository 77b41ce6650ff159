"""`sync-pipeline bench` in its smallest form, in a subprocess: it runs every part end to end and
writes the result file. Figures are measured, never asserted; the invariants are."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sync_pipeline.bench.dlt_run import NOT_INSTALLED, dlt_available
from sync_pipeline.bench.measure import percentile

RUNS = ("ours_full", "dlt", "read_json", "ours_incremental", "ours_nothing_new")
RATIOS = (
    "fetch_requests_per_s_over_limit",
    "fetch_share_429",
    "ours_over_dlt_records_per_s",
    "normalise_load_over_read_json",
    "nothing_new_data_requests",
    "incremental_data_requests_per_notification",
    "peak_rss_mib",
    "receiver_deliveries_per_s",
    "receiver_p99_ms",
    "receiver_lost",
)


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
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
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


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [([], 0.95, None), ([5.0], 0.95, 5.0), ([float(v) for v in range(1, 101)], 0.95, 95.0)],
)
def test_percentile(values: list[float], fraction: float, expected: float | None) -> None:
    assert percentile(values, fraction) == expected
