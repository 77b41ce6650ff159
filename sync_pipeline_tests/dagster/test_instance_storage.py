"""The local instance's SQLite storage with kept connections (sync_pipeline/instance_storage.py):
selected by the instance the CLI opens, the same files as Dagster's stock classes in both
directions, bounded, and safe across threads and processes."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster import DagsterInstance
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME

from sync_pipeline import instance_storage
from sync_pipeline.deploy import LOCAL_INSTANCE_YAML
from sync_pipeline.instance import ensure_local_instance
from sync_pipeline.instance_storage import PooledSqliteEventLogStorage, SqliteInstanceStorage


@dg.asset(check_specs=[dg.AssetCheckSpec("positive", asset="numbers")])
def numbers() -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    yield dg.MaterializeResult(metadata={"rows": 3})
    yield dg.AssetCheckResult(check_name="positive", passed=True)


def _materialise(instance: DagsterInstance, rows: int = 3) -> str:
    result = dg.materialize([numbers], instance=instance, tags={"rows": str(rows)})
    assert result.success
    return result.run_id


def _stock(home: Path) -> DagsterInstance:
    """The same folder opened with Dagster's own SQLite storage (no `storage:` in the yaml)."""
    (home / "dagster.yaml").write_text(LOCAL_INSTANCE_YAML)
    return DagsterInstance.from_config(str(home))


def _what_the_ui_shows(instance: DagsterInstance, run_id: str) -> tuple[object, ...]:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    events = [
        (e.dagster_event_type, e.step_key) for e in instance.all_logs(run_id) if e.is_dagster_event
    ]
    latest = instance.get_latest_materialization_event(dg.AssetKey("numbers"))
    check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("numbers"), "positive")]
    )
    return (
        run.status,
        events,
        latest.run_id if latest else None,
        [(k, v.run_id, v.status) for k, v in check.items()],
    )


def test_the_cli_instance_keeps_its_connections_in_the_usual_files(tmp_path: Path) -> None:
    home = tmp_path / "dagster"
    instance = ensure_local_instance(home, {})
    assert isinstance(instance.get_ref().storage, SqliteInstanceStorage)
    run_id = _materialise(instance)
    ours = _what_the_ui_shows(instance, run_id)
    instance.dispose()
    # Dagster's default layout: runs.db, the run's own event file and the cross-run index
    assert (home / "history" / "runs.db").exists()
    assert (home / "history" / "runs" / f"{run_id}.db").exists()
    assert (home / "history" / "runs" / f"{INDEX_SHARD_NAME}.db").exists()
    stock = _stock(home)
    assert type(stock.get_ref().storage).__name__ == "DagsterSqliteStorage"
    assert _what_the_ui_shows(stock, run_id) == ours
    assert ours[0] == dg.DagsterRunStatus.SUCCESS and len(ours[1]) > 5


def test_an_instance_written_by_dagsters_own_storage_reads_and_continues(tmp_path: Path) -> None:
    home = tmp_path / "dagster"
    home.mkdir()
    stock = _stock(home)
    first = _materialise(stock)
    before = _what_the_ui_shows(stock, first)
    stock.dispose()
    instance = ensure_local_instance(home, {})
    assert _what_the_ui_shows(instance, first) == before
    second = _materialise(instance)
    assert [r.run_id for r in instance.get_runs()] == [second, first]
    latest = instance.get_latest_materialization_event(dg.AssetKey("numbers"))
    assert latest is not None and latest.run_id == second


def test_open_run_files_are_bounded(tmp_path: Path) -> None:
    instance = ensure_local_instance(tmp_path / "dagster", {})
    storage = instance.event_log_storage
    assert isinstance(storage, PooledSqliteEventLogStorage)
    runs = [_materialise(instance) for _ in range(instance_storage.RUN_FILES_KEPT_OPEN + 3)]
    assert INDEX_SHARD_NAME in storage._engines
    assert len(storage._engines) == instance_storage.RUN_FILES_KEPT_OPEN + 1
    # an evicted run's file is opened again when read
    assert instance.get_run_by_id(runs[0]) is not None
    assert any(e.is_dagster_event for e in instance.all_logs(runs[0]))


def test_wipe_closes_connections_before_deleting_files(tmp_path: Path) -> None:
    instance = ensure_local_instance(tmp_path / "dagster", {})
    _materialise(instance)
    instance.wipe()
    assert instance.get_runs() == []
    run_id = _materialise(instance)
    assert instance.get_run_by_id(run_id) is not None
    assert instance.get_latest_materialization_event(dg.AssetKey("numbers")) is not None


def test_threads_share_one_instance(tmp_path: Path) -> None:
    """The webserver's and the daemon's thread pools write and read one instance at once."""
    instance = ensure_local_instance(tmp_path / "dagster", {})
    run_id = _materialise(instance)
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            for i in range(20):
                key = dg.AssetKey(["threads", f"t{thread}"])
                instance.report_runless_asset_event(dg.AssetMaterialization(key, metadata={"i": i}))
                assert instance.get_run_by_id(run_id) is not None
                assert any(e.is_dagster_event for e in instance.all_logs(run_id))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    for n in range(6):
        records = instance.fetch_materializations(dg.AssetKey(["threads", f"t{n}"]), limit=100)
        assert len(records.records) == 20


def _materialise_in_a_process(home: str, count: int) -> None:
    instance = ensure_local_instance(Path(home), {})
    for _ in range(count):
        _materialise(instance)


@pytest.mark.slow
def test_processes_write_one_instance_at_once(tmp_path: Path) -> None:
    """What the daemon, the webserver and run workers do: several processes, one instance."""
    home = tmp_path / "dagster"
    ensure_local_instance(home, {}).dispose()
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_materialise_in_a_process, args=(str(home), 3)) for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=180)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    instance = _stock(home)
    runs = instance.get_runs()
    assert len(runs) == 9 and {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
    materialisations = instance.fetch_materializations(dg.AssetKey("numbers"), limit=100)
    assert len(materialisations.records) == 9
