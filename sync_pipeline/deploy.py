"""Choosing the deployment by environment, not code: which Dagster instance storage and which
executor the code location's runs use.

- SYNC_DAGSTER_STORAGE: `sqlite` (default, the embedded single-machine instance under the data
  directory) or `postgres` (deploy/dagster.postgres.yaml; connection details from DAGSTER_PG_*).
- SYNC_EXECUTOR: `multiprocess` (default: each step in its own process, Dagster's default for
  launched runs), `in_process`, or `celery` (deploy/celery.yaml: steps as Celery tasks on a
  broker such as Redis; workers started with `dagster-celery worker start`).

Everything here is pure (environment in, text or config out) so `instance.py` and the CLI can
call it without knowing which deployment they are in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

# deploy/ at the repository root, beside the package (the configs are operator-facing files).
DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy"

STORAGES = ("sqlite", "postgres")
EXECUTORS = ("multiprocess", "in_process", "celery")

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


def storage(env: Mapping[str, str] | None = None) -> str:
    return _choice(os.environ if env is None else env, "SYNC_DAGSTER_STORAGE", STORAGES)


def instance_yaml(env: Mapping[str, str] | None = None) -> str:
    """The dagster.yaml text for the instance the environment selects."""
    env = os.environ if env is None else env
    if storage(env) == "postgres":
        missing = [name for name in POSTGRES_ENV if not env.get(name)]
        if missing:
            raise DeployError(
                "SYNC_DAGSTER_STORAGE=postgres needs " + ", ".join(missing) + " in the environment"
            )
        return (DEPLOY_DIR / "dagster.postgres.yaml").read_text()
    from sync_pipeline.instance import LOCAL_INSTANCE_YAML

    return LOCAL_INSTANCE_YAML


def write_instance_yaml(dagster_home: Path, env: Mapping[str, str] | None = None) -> Path:
    """Write (or replace, when the selection changed) <dagster_home>/dagster.yaml."""
    dagster_home.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = dagster_home / "dagster.yaml"
    text = instance_yaml(env)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def executor_name(env: Mapping[str, str] | None = None) -> str:
    return _choice(os.environ if env is None else env, "SYNC_EXECUTOR", EXECUTORS)


def executor_run_config(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run config selecting the executor (merge into a job's run config). Jobs built with
    `dg.multiprocess_executor | celery_executor` accept `{"execution": {"config": {...}}}`."""
    env = os.environ if env is None else env
    name = executor_name(env)
    if name == "celery":
        loaded = yaml.safe_load((DEPLOY_DIR / "celery.yaml").read_text())
        config: dict[str, Any] = loaded["execution"]["config"]["celery"]
        broker = env.get("SYNC_CELERY_BROKER")
        if broker:
            config = {**config, "broker": broker, "backend": broker}
        return {"execution": {"config": {"celery": config}}}
    return {"execution": {"config": {name: {}}}}
