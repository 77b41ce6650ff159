"""Choosing the deployment by environment, not code: which Dagster instance storage and which
executor the code location's runs use.

- SYNC_DAGSTER_STORAGE: `sqlite` (default, the embedded single-machine instance under the data
  directory) or `postgres` (deployment/dagster.postgres.yaml; connection details from DAGSTER_PG_*).
- SYNC_EXECUTOR, for runs the daemon or the UI launches: unset (the default), each job gets the
  executor that fits its shape, decided when a run starts (shape_executor.py): in the run worker
  when its steps can never run at the same time (they form a chain, or all hold the one-slot
  warehouse pool: every job today), a process per step otherwise. Set, it applies to every job:
  `multiprocess` (each step in its own process), `in_process`, `celery` (deployment/celery.yaml:
  steps as Celery tasks on a broker such as Redis; workers started with
  `dagster-celery worker start`), or `k8s`
  (deployment/k8s/executor.yaml: each step a Kubernetes Job, dagster-k8s).

Everything here is pure (an environment mapping in, text or config out): the two places that
read the process environment pass it in, `definitions.py` when the code location loads (the
executor) and the CLI when a command starts (the instance, `instance.ensure_local_instance`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from sync_pipeline import shape_executor
from sync_pipeline.warehouse.location import pool_limit

# The operator-facing configs ship inside the package (package data), so an install from a wheel
# has them too, not only a checkout.
DEPLOY_DIR = Path(__file__).resolve().parent / "deployment"

# One warehouse pool slot: steps that open the DuckDB file run one at a time, across runs
# (instance_yaml gives a DuckLake on PostgreSQL SYNC_WAREHOUSE_WRITERS slots instead).
# No network here, so no telemetry. Run monitoring (where the daemon runs) fails runs stuck
# starting or running past any sane length and frees the slots of ended runs; runs whose process
# died (a CLI run, or a launched run's worker) are noticed sooner by instance.reap_dead_runs,
# which the CLI calls and the daemon's dead_run_sensor runs every minute.
LOCAL_INSTANCE_YAML = """\
telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: 1
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  max_runtime_seconds: 21600
  free_slots_after_run_end_seconds: 30
  poll_interval_seconds: 30
"""

STORAGES = ("sqlite", "postgres")
EXECUTORS = ("multiprocess", "in_process", "celery", "k8s")
BY_SHAPE = shape_executor.NAME  # SYNC_EXECUTOR unset

# Variables the Postgres instance yaml reads; all must be set when SYNC_DAGSTER_STORAGE=postgres.
POSTGRES_ENV = (
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_USER",
    "DAGSTER_PG_PASSWORD",
    "DAGSTER_PG_DB",
)


class DeployError(ValueError):
    """The environment names a deployment that does not exist or is incomplete."""


def _choice(env: Mapping[str, str], name: str, options: tuple[str, ...]) -> str:
    value = (env.get(name) or options[0]).strip().lower()
    if value not in options:
        raise DeployError(f"{name} must be one of {', '.join(options)}; got {value!r}")
    return value


def storage(env: Mapping[str, str]) -> str:
    return _choice(env, "SYNC_DAGSTER_STORAGE", STORAGES)


def local_storage_yaml(dagster_home: Path) -> str:
    """The embedded instance's storage: Dagster's SQLite files under `dagster_home`, through
    the subclasses that keep their connections open (instance_storage.py). The path is
    absolute because Dagster resolves it from whatever directory a process starts in."""
    home = json.dumps(str(dagster_home.resolve()))  # a YAML string, whatever the path holds
    return (
        "storage:\n"
        "  custom:\n"
        "    module: sync_pipeline.instance_storage\n"
        "    class: SqliteInstanceStorage\n"
        "    config:\n"
        f"      base_dir: {home}\n"
    )


def instance_yaml(env: Mapping[str, str], dagster_home: Path) -> str:
    """The dagster.yaml text for the instance in `dagster_home` that the environment selects."""
    if storage(env) == "postgres":
        missing = [name for name in POSTGRES_ENV if not env.get(name)]
        if missing:
            raise DeployError(
                "SYNC_DAGSTER_STORAGE=postgres needs " + ", ".join(missing) + " in the environment"
            )
        text = (DEPLOY_DIR / "dagster.postgres.yaml").read_text()
    else:
        text = LOCAL_INSTANCE_YAML + local_storage_yaml(dagster_home)
    # the warehouse pool's slots: one writer for a DuckDB file, several for a DuckLake on
    # PostgreSQL (SYNC_WAREHOUSE, SYNC_WAREHOUSE_WRITERS)
    try:
        limit = pool_limit(env)
    except ValueError as exc:
        raise DeployError(str(exc)) from None
    return text.replace("    default_limit: 1\n", f"    default_limit: {limit}\n")


def write_instance_yaml(dagster_home: Path, env: Mapping[str, str]) -> Path:
    """Write (or replace, when the selection changed) <dagster_home>/dagster.yaml."""
    dagster_home.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = dagster_home / "dagster.yaml"
    text = instance_yaml(env, dagster_home)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def executor_name(env: Mapping[str, str]) -> str:
    """The executor SYNC_EXECUTOR names, or `by_shape` (per job, shape_executor.py) unset."""
    if not (env.get("SYNC_EXECUTOR") or "").strip():
        return BY_SHAPE
    return _choice(env, "SYNC_EXECUTOR", EXECUTORS)


def executor_config(file: str) -> dict[str, Any]:
    """The executor config in deployment/<file> (env references resolved when a run starts)."""
    loaded = yaml.safe_load((DEPLOY_DIR / file).read_text())
    config: dict[str, Any] = loaded["execution"]["config"]
    return config


def executor_def(env: Mapping[str, str]) -> dg.ExecutorDefinition:
    """The executor the environment selects, configured, for `Definitions(executor=...)`.

    This is what runs launched by the daemon, the UI or `dagster job execute` use: with
    SYNC_EXECUTOR unset, the executor that runs each job in its run worker when its steps are
    serial and a process per step otherwise; `execute_in_process` (tests, `sync-pipeline`
    commands via runs.run_job) runs every step in the calling process whatever is selected
    here. celery needs a broker in
    SYNC_CELERY_BROKER and workers started with
    `dagster-celery worker start -A dagster_celery.app -y sync_pipeline/deployment/celery.yaml`."""
    name = executor_name(env)
    if name == "celery":
        from dagster_celery import celery_executor

        celery: dg.ExecutorDefinition = celery_executor.configured(
            executor_config("celery.yaml"), name="celery"
        )
        return celery
    if name == "k8s":
        from dagster_k8s import k8s_job_executor

        k8s: dg.ExecutorDefinition = k8s_job_executor.configured(
            executor_config("k8s/executor.yaml"), name="k8s"
        )
        return k8s
    if name == "in_process":
        return dg.in_process_executor
    if name == "multiprocess":
        return dg.multiprocess_executor
    return shape_executor.by_shape_executor
