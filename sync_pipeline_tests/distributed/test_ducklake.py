"""Issue 17's acceptance: the warehouse as a DuckLake with its catalog in PostgreSQL and its data
on S3 (moto), both on loopback. Two shards sync in two worker processes that commit into the
one lake at the same time (no pool of one: conflicts are the catalog's, retried); every table is
then level with the simulator's truth. After upstream updates a third round of runs changes
exactly the updated rows, and the lake's previous snapshot still returns the earlier values."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import s3fs

from sync_pipeline.sync.plan import shard_of
from sync_pipeline.tables.registry import CHILD_TABLES, TABLES
from sync_pipeline.upstream.endpoints import ENDPOINTS
from sync_pipeline.warehouse import db
from sync_pipeline.warehouse.location import parse as parse_warehouse
from sync_pipeline_tests.distributed.services import fresh_pg_database
from sync_pipeline_tests.e2e.harness import Stack, running_stack
from sync_pipeline_tests.e2e.test_record_sync import (
    assert_level_with_truth,
    assert_no_duplicate_keys,
)
from sync_pipeline_tests.resources import settings_env

REPO = Path(__file__).resolve().parents[2]
RECORD_TABLES = [e.table for e in ENDPOINTS]


def start_worker(
    stack: Stack, mode: str, index: int, count: int, run_id: str
) -> subprocess.Popen[bytes]:
    """A worker process on the stack's settings, handed over as its SYNC_* environment (this
    process's own environment is not changed; PGPASSWORD and the AWS_* credentials come
    from it)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sync_pipeline_tests.distributed.lake_worker",
            mode,
            str(index),
            str(count),
            run_id,
        ],
        env={**os.environ, **settings_env(stack.settings), "PYTHONPATH": str(REPO)},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def run_shards(stack: Stack, mode: str, count: int = 2) -> list[dict[str, Any]]:
    """`count` worker processes, one shard each, started together and committing concurrently
    into the lake; their summaries, in shard order."""
    procs = [
        start_worker(stack, mode, index, count, f"{mode}-{index}-{uuid.uuid4().hex[:8]}")
        for index in range(count)
    ]
    summaries = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()[-4000:]
        summary = json.loads(out.decode().strip().splitlines()[-1])
        assert summary["failed"] == [], summary
        # kept beside the test's data: the conflict retries, if any, are logged there
        (stack.settings.data_dir / f"{summary['run_id']}.log").write_bytes(err)
        summaries.append(summary)
    return summaries


def row_hashes(stack: Stack) -> dict[tuple[str, str, str], int]:
    """(table, human, record) → the hash of the whole row (raw, typed columns, deleted_at)."""
    return {
        (table, str(h), str(r)): int(x)
        for table in RECORD_TABLES
        for h, r, x in stack.query(f"SELECT human_id, record_id, hash(t) FROM {table} t")
    }


@contextmanager
def lake_stack(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    lake_url: str | None = None,
    lake_endpoint_url: str | None = None,
    **stack_args: int,
) -> Iterator[Stack]:
    """The e2e stack with its warehouse a DuckLake in a fresh PostgreSQL database (its data
    under the lake: `lake_url`, else the data directory's), sessions landed and connection state
    built: ready for sync workers."""
    with fresh_pg_database() as pg:
        # the password through libpq's own variable, never in the setting
        monkeypatch.setenv("PGPASSWORD", pg["DAGSTER_PG_PASSWORD"])
        warehouse = parse_warehouse(
            f"ducklake:postgres:dbname={pg['DAGSTER_PG_DB']} host={pg['DAGSTER_PG_HOST']} "
            f"port={pg['DAGSTER_PG_PORT']} user={pg['DAGSTER_PG_USER']}"
        )
        with running_stack(tmp_path / "data", **stack_args) as stack:
            # the stack's runs get the warehouse and the lake from these settings (resources)
            stack.settings = replace(
                stack.settings,
                warehouse_lake=warehouse,
                lake_url=lake_url,
                lake_endpoint_url=lake_endpoint_url,
            )
            assert stack.settings.warehouse.many_writers
            stack.sim.post_initial_sessions()
            stack.intake()
            stack.run("connection_state_job")
            yield stack


@pytest.mark.slow
def test_two_shards_commit_into_one_ducklake_on_postgres_and_s3(
    tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}).mkdir(bucket)
    with lake_stack(
        tmp_path,
        monkeypatch,
        lake_url=f"s3://{bucket}/lake",
        lake_endpoint_url=s3_endpoint,
        users=4,
        min_records=3,
        max_records=10,
    ) as stack:
        # 1 + 2: two shards, two processes, one lake, at the same time
        first = run_shards(stack, "catchup")
        users = stack.query("SELECT human_id FROM connect.users")
        assert len(users) == 4
        assert_level_with_truth(stack)
        assert_no_duplicate_keys(stack)
        # cursors: each user's, per endpoint, once, advanced by the run of its shard
        synced_by = stack.query("SELECT DISTINCT human_id, last_run_id FROM ops.sync_state")
        assert {h for h, _ in synced_by} == {h for (h,) in users}
        assert all(run == first[shard_of(h, 2)]["run_id"] for h, run in synced_by)
        assert stack.query(
            "SELECT count(*) FROM ops.sync_state WHERE cursor_updated_since IS NOT NULL"
        )[0][0] == sum(s["cursors"] for s in first)
        assert {r for (r,) in stack.query("SELECT DISTINCT run_id FROM ops.load_log")} == {
            s["run_id"] for s in first
        }
        # the lake's own data files are on S3 (DATA_PATH), written by the DuckLake
        lake_files = stack.query(
            "SELECT data_file FROM ducklake_list_files('warehouse', 'test_results', "
            "schema => 'medical')"
        )
        assert lake_files
        assert all(f.startswith(f"s3://{bucket}/lake/ducklake/") for (f,) in lake_files)

        # 3: upstream updates; a third round changes exactly the updated rows
        (version,) = stack.query("SELECT max(snapshot_id) FROM warehouse.snapshots()")[0]
        before = row_hashes(stack)
        items = stack.sim.advance(updated=8)["items"]
        assert items and {i["action"] for i in items} == {"updated"}
        stack.intake()
        run_shards(stack, "incremental")
        assert_level_with_truth(stack)
        assert_no_duplicate_keys(stack)
        after = row_hashes(stack)
        assert set(after) == set(before)  # nothing created, nothing lost
        changed = {key for key in after if after[key] != before[key]}
        updated = {(h, r) for _, h, r in changed}
        assert updated == {(i["humanId"], i["objectId"]) for i in items}

        # 4: time travel: the snapshot before the third round has the earlier values
        for table, human_id, record_id in changed:
            (earlier,) = stack.query(
                f"SELECT hash(t) FROM (SELECT * FROM {table} AT (VERSION => {int(version)})) t "
                "WHERE human_id = ? AND record_id = ?",
                [human_id, record_id],
            )[0]
            assert int(earlier) == before[(table, human_id, record_id)]


@pytest.mark.slow
def test_a_worker_killed_in_its_commit_leaves_the_lake_readable_and_the_next_run_converges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL as soon as the worker's commit has written its first data file into the lake
    (DuckLake writes a transaction's Parquet first and commits its catalog rows last): the lake
    stays readable, the run is in it wholly or not at all, and the next run converges."""
    # data path: <data>/lake/ducklake/
    with lake_stack(tmp_path, monkeypatch, users=3, min_records=15, max_records=30) as stack:
        data_path = Path(str(stack.settings.warehouse.data_path))
        before = set(data_path.rglob("*.parquet"))
        worker = start_worker(stack, "catchup", 0, 1, "killed")
        deadline = time.monotonic() + 300
        while worker.poll() is None and time.monotonic() < deadline:
            if set(data_path.rglob("*.parquet")) - before:
                os.kill(worker.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        worker.communicate(timeout=60)
        assert worker.returncode == -signal.SIGKILL, "the worker was not killed in its commit"

        # readable: every table, and the killed run wholly committed or not at all
        for table in TABLES:
            stack.query(f"SELECT count(*) FROM {db.quoted(table)}")
        logged = stack.query("SELECT count(*) FROM ops.load_log WHERE run_id = 'killed'")[0][0]
        assert logged in (0, len(RECORD_TABLES) + len(CHILD_TABLES))
        if logged == 0:
            assert stack.query("SELECT count(*) FROM ops.sync_state") == [(0,)]

        # the next run is the Dagster catch-up job (connection state, record sync, analytics,
        # checks), in this process, on the lake
        result = stack.sync("catchup")
        assert result.success
        checks = [
            e.asset_check_evaluation_data
            for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
        ]
        assert checks and all(c.passed for c in checks), [c for c in checks if not c.passed]
        assert stack.query("SELECT count(*) FROM analytics.observations")[0][0] > 0
        assert_level_with_truth(stack)
        assert_no_duplicate_keys(stack)
