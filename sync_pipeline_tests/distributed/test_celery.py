"""Steps as Celery tasks: a Redis broker on loopback (.ci/services), a `dagster-celery worker`
subprocess, a Postgres-backed instance, and the lake on S3 (moto): sessions → intake → catch-up
sync in two shards (two runs, one shared Redis rate budget), every step executed by the worker;
then the acceptance check: every table level with the simulator's truth."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import s3fs
from dagster._core.definitions.reconstruct import build_reconstructable_job

from sync_pipeline import deploy
from sync_pipeline.launch import sync_config, today_partition
from sync_pipeline.settings import Settings
from sync_pipeline.sync.plan import shard_of
from sync_pipeline.upstream.shared_budget import SharedBudget
from sync_pipeline_tests.distributed.services import postgres_stack, require_redis
from sync_pipeline_tests.e2e.test_record_sync import assert_level_with_truth
from sync_pipeline_tests.resources import settings_env

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@contextmanager
def celery_worker(tmp: Path, settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    """`dagster-celery worker start` with deployment/celery.yaml, in its own process group (so the
    celery process it execs is stopped with it). The worker loads the code location from its
    environment: `settings` are handed to it there, as its own `env=`."""
    env = {
        **os.environ,
        **settings_env(settings),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env["PYTHONPATH"] = str(REPO)
    log = (tmp / "worker.log").open("wb")
    proc = subprocess.Popen(
        [
            str(BIN / "dagster-celery"),
            "worker",
            "start",
            "-A",
            "dagster_celery.app",
            "-y",
            str(deploy.DEPLOY_DIR / "celery.yaml"),
            "-n",
            f"sync-test-{uuid.uuid4().hex[:6]}",
            "--",
            "--concurrency=2",
        ],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def run_on_celery(
    instance: dg.DagsterInstance,
    name: str,
    *,
    tags: dict[str, str] | None = None,
    config: dict[str, Any] | None = None,
) -> dg.ExecutionResult:
    job = build_reconstructable_job(
        "sync_pipeline_tests.distributed.celery_location", "location_job", (name,)
    )
    result = dg.execute_job(job, instance=instance, tags=tags, run_config=config)
    steps = {
        e.step_key
        for e in instance.all_logs(result.run_id)
        if e.dagster_event is not None and "Submitting celery task" in (e.message or "")
    }
    assert steps, "no step went through Celery"
    return result


@pytest.mark.slow
# dagster-celery registers its `execute_plan` task on a fresh Celery app per run; Celery 5.7 warns
# about the name being re-registered. Dagster's doing, harmless, and not ours to change.
@pytest.mark.filterwarnings("ignore::celery.exceptions.DuplicateTaskNameWarning")
def test_sync_on_celery_workers_with_postgres_and_s3(
    tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = require_redis()
    # a Redis database of its own, so a stale queue of another run is never consumed here
    redis_db = broker.rsplit("/", 1)[0] + f"/{random.randint(1, 15)}"
    # the executor's config names the broker by variable (deployment/celery.yaml): Dagster reads
    # it in this process, which launches the runs, and in the worker
    monkeypatch.setenv("SYNC_CELERY_BROKER", redis_db)
    rate_backend = redis_db  # the shared request-rate budget, keyed by the simulator's host
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}).mkdir(bucket)
    with ExitStack() as running:
        stack = running.enter_context(postgres_stack(tmp_path / "data"))
        worker_settings = replace(
            stack.settings,
            rate_backend=rate_backend,
            lake_url=f"s3://{bucket}/lake",
            lake_endpoint_url=s3_endpoint,
        )
        running.enter_context(celery_worker(tmp_path, worker_settings))
        stack.sim.post_initial_sessions()
        intake = run_on_celery(
            stack.instance, "intake_job", tags={"dagster/partition": today_partition()}
        )
        assert intake.success, (tmp_path / "worker.log").read_text()[-3000:]
        # the catch-up fanned out over two runs, one shard of the users each, pacing against
        # one Redis budget for the simulator's host
        syncs = []
        for index in range(2):
            config = sync_config("catchup")
            config["ops"]["record_sync"]["config"].update(shard_index=index, shard_count=2)
            sync = run_on_celery(stack.instance, "catchup_sync_job", config=config)
            assert sync.success, (tmp_path / "worker.log").read_text()[-3000:]
            syncs.append(sync)
        assert stack.query("SELECT count(*) FROM connect.users") == [(2,)]
        # each user was synced by the run of its shard, and only by it
        synced_by = stack.query("SELECT DISTINCT human_id, last_run_id FROM ops.sync_state")
        assert len(synced_by) == 2
        assert all(run == syncs[shard_of(h, 2)].run_id for h, run in synced_by)
        assert_level_with_truth(stack)
        budget = SharedBudget.for_upstream(rate_backend, stack.settings.api_url).state()
        assert budget["win_n"] > 0  # the workers' requests went through the shared budget
        lake_files = stack.query("SELECT lake_files FROM ops.load_log WHERE lake_files <> ''")
        assert lake_files
        assert all(f.startswith(f"s3://{bucket}/") for (fs,) in lake_files for f in fs.split())
        runs = stack.instance.get_runs()
        assert {r.run_id for r in runs} == {intake.run_id, *(s.run_id for s in syncs)}
