"""`sync-pipeline sync` as a real process, killed, stopped and pointed at a dead upstream.

The upstream (simulator) and the receiver run in this test process on loopback; the sync is a
subprocess with its own data directory and Dagster instance, exactly as an operator runs it.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import duckdb
import httpx
import pytest
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.instance.ref import InstanceRef

from starfleet.config import SimFaults
from starfleet.server import SimulatorHandle, running_simulator
from sync_pipeline.demo import demo_session_keys
from sync_pipeline.intake.server import running_receiver
from sync_pipeline.settings import load_settings

from .test_cli import cli, cli_env

pytestmark = pytest.mark.slow


@contextmanager
def connected_upstream(data: Path, *, users: int = 3) -> Iterator[SimulatorHandle]:
    """A simulator whose users have connected (their sessions are in `data`'s landing log)."""
    settings = load_settings({"SYNC_DATA_DIR": str(data)})
    private_pem, public_pem = demo_session_keys(data / "keys")
    settings = replace(settings, session_public_key=public_pem)
    with (
        running_receiver(settings) as receiver,
        running_simulator(
            users=users,
            seed=5,
            receiver_url=receiver.base_url,
            session_private_key_pem=private_pem,
            min_records=5,
            max_records=15,
        ) as sim,
    ):
        sim.post_initial_sessions()
        yield sim


def start_sync(data: Path, upstream: str) -> subprocess.Popen[str]:
    env = cli_env(data, SYNC_API_URL=upstream, SYNC_AUTH_URL=upstream)
    return subprocess.Popen(
        cli("sync"), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wait_for_requests(sim: SimulatorHandle, at_least: int, timeout_s: float = 120) -> None:
    """Until the sync is fetching (it then holds the warehouse pool slot)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = httpx.get(f"{sim.base_url}/_sim/stats", timeout=10).json()
        if sum(n for path, n in stats["by_path"].items() if path != "connect/token") >= at_least:
            return
        time.sleep(0.2)
    pytest.fail(f"the sync made fewer than {at_least} data requests in {timeout_s} s")


def run_statuses(data: Path) -> list[DagsterRunStatus]:
    return [status for _, status in runs_of(data)]


def runs_of(data: Path) -> list[tuple[str, DagsterRunStatus]]:
    """(job, status) of every run in the data dir's instance, newest first."""
    instance = DagsterInstance.from_ref(InstanceRef.from_dir(str(data / "dagster")))
    try:
        return [(r.dagster_run.job_name, r.dagster_run.status) for r in instance.get_run_records()]
    finally:
        instance.dispose()


def test_a_sync_killed_mid_run_does_not_block_the_next_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with connected_upstream(data) as sim:
        sim.app_config.faults = SimFaults(latency_ms=300)
        killed = start_sync(data, sim.base_url)
        wait_for_requests(sim, 3)
        killed.send_signal(signal.SIGKILL)
        killed.communicate(timeout=30)
        assert DagsterRunStatus.STARTED in run_statuses(data)  # what a SIGKILL leaves behind

        sim.app_config.faults = SimFaults()
        done = subprocess.run(
            cli("sync"),
            env=cli_env(data, SYNC_API_URL=sim.base_url, SYNC_AUTH_URL=sim.base_url),
            capture_output=True,
            text=True,
            timeout=240,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cleaned up: marked 1 run(s) whose process died as failed" in done.stdout
    statuses = run_statuses(data)
    assert DagsterRunStatus.STARTED not in statuses
    assert DagsterRunStatus.FAILURE in statuses  # the dead run, marked


def test_sigterm_stops_a_sync_within_seconds_and_commits_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with connected_upstream(data) as sim:
        sim.app_config.faults = SimFaults(latency_ms=300)
        running = start_sync(data, sim.base_url)
        wait_for_requests(sim, 3)
        stopped_at = time.monotonic()
        running.send_signal(signal.SIGTERM)
        output, _ = running.communicate(timeout=60)
        took = time.monotonic() - stopped_at
    assert running.returncode == 128 + signal.SIGTERM, output
    assert took < 10, f"SIGTERM took {took:.1f} s to stop the sync"
    assert "sync stopped by SIGTERM before its commit: nothing was committed" in output
    assert "Traceback" not in output
    # intake and the sync are one run: marked failed, not left running; intake's step had
    # committed the landed sessions before the sync's step was stopped
    assert runs_of(data) == [("intake_and_sync_job", DagsterRunStatus.FAILURE)]
    warehouse = load_settings({"SYNC_DATA_DIR": str(data)}).warehouse_path
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM ops.load_log").fetchone() == (0,)
        sessions = con.execute("SELECT count(*) FROM connect.session_responses").fetchone()
        assert sessions is not None and sessions[0] > 0


def test_a_sync_against_a_closed_port_fails_fast_and_briefly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with connected_upstream(data) as sim:
        dead = sim.base_url  # closed once the simulator stops at the end of this block
    started = time.monotonic()
    done = subprocess.run(
        cli("sync"),
        env=cli_env(data, SYNC_API_URL=dead, SYNC_AUTH_URL=dead),
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert took < 60, f"{took:.0f} s to give up on a closed port"
    assert len(output.splitlines()) < 30, output
    assert f"auth service at {dead} is unreachable" in output
    assert "Traceback" not in output


def table_counts(data: Path) -> dict[str, int]:
    warehouse = load_settings({"SYNC_DATA_DIR": str(data)}).warehouse_path
    with duckdb.connect(str(warehouse), read_only=True) as con:
        # tables and views (connect.users, ops.notifications are views over one-writer tables)
        tables = con.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('information_schema', 'pg_catalog')"
        ).fetchall()
        return {
            t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
            for (t,) in tables
        }


def test_the_demo_twice_gives_the_same_tables(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = cli_env(data)
    first = subprocess.run(
        cli("demo", "--users", "2"), env=env, capture_output=True, text=True, timeout=600
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert "replacing" not in first.stdout
    counts = table_counts(data)
    assert counts["medical.test_results"] > 0 and counts["connect.users"] == 2
    second = subprocess.run(
        cli("demo", "--users", "2"), env=env, capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert "replacing the previous demo's warehouse.duckdb, lake, landing" in second.stdout
    assert table_counts(data) == counts


def test_an_incremental_sync_with_nothing_new_launches_no_run(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with connected_upstream(data) as sim:
        env = cli_env(data, SYNC_API_URL=sim.base_url, SYNC_AUTH_URL=sim.base_url)

        def sync(*args: str) -> str:
            done = subprocess.run(
                cli("sync", *args), env=env, capture_output=True, text=True, timeout=240
            )
            assert done.returncode == 0, done.stdout + done.stderr
            return done.stdout

        sync()  # the first catch-up: intake of the landed sessions and the sync, one run
        assert runs_of(data) == [("intake_and_sync_job", DagsterRunStatus.SUCCESS)]
        runs = len(run_statuses(data))
        output = sync("--mode", "incremental")
        # the landing log is as the last intake run found it, and nothing is pending
        assert "intake: nothing has landed since the last intake run" in output
        assert "nothing pending, no run needed" in output
        assert len(run_statuses(data)) == runs

        changes = sim.advance(created=3, updated=2)["items"]  # signed notifications land
        assert changes
        output = sync("--mode", "incremental")
        assert "nothing has landed" not in output and "nothing pending" not in output
        # intake and the incremental sync, in one run
        assert len(run_statuses(data)) == runs + 1
        assert runs_of(data)[0] == ("intake_and_sync_job", DagsterRunStatus.SUCCESS)
        assert "0 records received" not in output
