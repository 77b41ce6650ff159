"""Issue 8, crashes: the sync SIGKILLed at many points, then run again, leaves the tables an
uninterrupted run leaves; another process holding the DuckDB file makes the writer fail cleanly.

The sync runs as a real child process (`python -c` calling run_sync with settings from the
environment) against the simulator served by this test process.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from sync_pipeline.settings import Settings
from sync_pipeline.warehouse.lake import TMP_MARKER
from sync_pipeline_tests.e2e.harness import Stack
from sync_pipeline_tests.reliability.helpers import (
    connected_stack,
    duplicate_keys,
    fingerprint,
    fresh_warehouse,
    loaded_keys,
    truth_keys,
)

pytestmark = pytest.mark.slow

# How many SIGKILLs: the issue asks for 20; CI runs fewer with the same fixed seed.
KILLS = int(os.environ.get("SYNC_TEST_CRASH_KILLS", "8"))
SEED = int(os.environ.get("SYNC_TEST_CRASH_SEED", "8"))

SYNC = (
    "import sys;"
    "from sync_pipeline.settings import load_settings;"
    "from sync_pipeline.sync.run import run_sync;"
    "run_sync(load_settings(), run_id=sys.argv[1], mode='catchup');"
    "print('done', flush=True)"
)

HOLD = (
    "import sys, time, duckdb;"
    "con = duckdb.connect(sys.argv[1]);"
    "print('holding', flush=True);"
    "time.sleep(float(sys.argv[2]))"
)


def child_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "SYNC_DATA_DIR": str(settings.data_dir),
        "SYNC_API_URL": settings.api_url,
        "SYNC_AUTH_URL": settings.auth_url,
        "SYNC_CLIENT_ID": settings.client_id,
        "SYNC_CLIENT_SECRET": settings.client_secret,
    }


def start_sync(settings: Settings, run_id: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", SYNC, run_id],
        env=child_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def sync_to_completion(settings: Settings, run_id: str) -> float:
    started = time.monotonic()
    process = start_sync(settings, run_id)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()[-3000:]
    assert out.decode().strip() == "done"
    return time.monotonic() - started


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # enough records that a run takes a while: fetch, staging and commit are all worth hitting
    with connected_stack(
        tmp_path_factory.mktemp("crash") / "data", users=2, min_records=15, max_records=30
    ) as running:
        yield running


def lake_problems(lake_dir: Path) -> list[str]:
    problems = [str(p) for p in lake_dir.rglob(f"*{TMP_MARKER}*")]
    for path in lake_dir.rglob("*.parquet"):
        try:
            pq.read_table(path)
        except Exception as exc:  # any unreadable file is the finding
            problems.append(f"{path}: {exc}")
    return problems


def test_sigkill_anywhere_then_rerun_equals_an_uninterrupted_run(
    stack: Stack, tmp_path: Path
) -> None:
    baseline = fresh_warehouse(stack, tmp_path / "baseline")
    full_s = sync_to_completion(baseline, "baseline")
    expected = fingerprint(baseline.warehouse_path)
    with duckdb.connect(str(baseline.warehouse_path), read_only=True) as con:
        assert set(loaded_keys(con)) == truth_keys(stack.sim)

    crashed = fresh_warehouse(stack, tmp_path / "crashed")
    rng = random.Random(SEED)
    # spread over the whole run: interpreter start-up, fetch, Parquet staging, the commit
    delays = sorted(rng.uniform(0.3, full_s) for _ in range(KILLS))
    finished_before_kill = 0
    for n, delay in enumerate(delays):
        process = start_sync(crashed, f"killed-{n}")
        try:
            process.wait(timeout=delay)
            finished_before_kill += 1
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)
    assert finished_before_kill < KILLS, "no run was ever killed: test proves nothing"
    print(f"full run {full_s:.1f} s, kills at {[round(d, 2) for d in delays]}")

    sync_to_completion(crashed, "after-crashes")
    assert fingerprint(crashed.warehouse_path) == expected
    with duckdb.connect(str(crashed.warehouse_path), read_only=True) as con:
        assert duplicate_keys(con) == {}
        assert set(loaded_keys(con)) == truth_keys(stack.sim)
    assert lake_problems(crashed.lake_dir) == []


def test_a_process_holding_the_warehouse_makes_the_writer_fail_cleanly(
    stack: Stack, tmp_path: Path
) -> None:
    settings = fresh_warehouse(stack, tmp_path / "held")
    before = fingerprint(settings.warehouse_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(settings.warehouse_path), "60"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().decode().strip() == "holding"
        started = time.monotonic()
        process = start_sync(settings, "while-held")
        _, err = process.communicate(timeout=60)
        took = time.monotonic() - started
        assert process.returncode != 0
        assert b"lock" in err.lower(), err.decode()[-2000:]
        assert took < 30
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.communicate(timeout=10)
    assert fingerprint(settings.warehouse_path) == before  # nothing half-written
    assert lake_problems(settings.lake_dir) == []
    sync_to_completion(settings, "after-holder")
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        assert set(loaded_keys(con)) == truth_keys(stack.sim)
