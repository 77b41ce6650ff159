"""deployment/k8s/executor.yaml validated against dagster-k8s's k8s_job_executor config schema (not
run: no cluster here), and the executor selection by SYNC_EXECUTOR."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest
from dagster_k8s import k8s_job_executor

from sync_pipeline import deploy
from sync_pipeline.definitions import defs as base_defs


def _job(executor: dg.ExecutorDefinition) -> dg.JobDefinition:
    # the same parts with another executor (merging refuses two: definitions.py selects one)
    defs = dg.Definitions(
        assets=base_defs.assets,
        asset_checks=base_defs.asset_checks,
        jobs=base_defs.jobs,
        resources=base_defs.resources,
        executor=executor,
    )
    return defs.resolve_job_def("catchup_sync_job")


def _run_config(execution: dict[str, Any]) -> dict[str, Any]:
    return {"execution": {"config": execution}}


def test_k8s_executor_yaml_is_valid_for_k8s_job_executor() -> None:
    config = deploy.executor_config("k8s/executor.yaml")
    resolved = dg.validate_run_config(_job(k8s_job_executor), _run_config(config))
    execution = resolved["execution"]["k8s"]  # resolved config is keyed by executor name
    assert execution["job_namespace"] == "sync-pipeline"
    assert execution["max_concurrent"] == 3
    assert "sync-pipeline-secrets" in execution["env_secrets"]


@pytest.mark.parametrize(
    "mutation",
    [
        {"max_concurrent": "three"},  # wrong type
        {"job_namespaces": "typo"},  # unknown key
        {"step_k8s_config": {"container_config": "not a mapping"}},
    ],
)
def test_the_validation_rejects_broken_k8s_config(mutation: dict[str, Any]) -> None:
    config = {**deploy.executor_config("k8s/executor.yaml"), **mutation}
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.validate_run_config(_job(k8s_job_executor), _run_config(config))


@pytest.mark.parametrize(
    ("selected", "expected"),
    [
        (None, "by_shape"),  # per job: in the run worker when its steps are serial
        ("", "by_shape"),
        ("multiprocess", "multiprocess"),
        ("in_process", "in_process"),
        ("celery", "celery"),
        ("k8s", "k8s"),
    ],
)
def test_sync_executor_selects_the_executor(
    selected: str | None, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNC_CELERY_BROKER", "redis://127.0.0.1:6379/0")  # read at run start
    env = {} if selected is None else {"SYNC_EXECUTOR": selected}
    executor = deploy.executor_def(env)
    assert executor.name == expected
    # the configured executors' deployment/*.yaml config is complete: no run config needed
    dg.validate_run_config(_job(executor), {})


def test_unknown_executor_is_refused() -> None:
    with pytest.raises(deploy.DeployError, match="SYNC_EXECUTOR"):
        deploy.executor_def({"SYNC_EXECUTOR": "dask"})
