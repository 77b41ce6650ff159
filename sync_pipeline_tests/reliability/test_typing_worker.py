"""A sync whose batches are typed in the worker process loads exactly what the same sync
typed in a thread loads: the worker is a place to run, not another way to type."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest

from sync_pipeline.sync import run as run_module
from sync_pipeline.sync.fetch import fetch_plan
from sync_pipeline.sync.run import SyncReport
from sync_pipeline_tests.e2e.harness import Stack
from sync_pipeline_tests.reliability.helpers import (
    connected_stack,
    fingerprint,
    fresh_warehouse,
    query,
    sync_once,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with connected_stack(tmp_path_factory.mktemp("typing"), users=3) as running:
        yield running


def _sync(
    stack: Stack, data_dir: Path, monkeypatch: pytest.MonkeyPatch, worker_min_records: int
) -> SyncReport:
    settings = fresh_warehouse(stack, data_dir)
    monkeypatch.setattr(
        run_module, "fetch_plan", partial(fetch_plan, worker_min_records=worker_min_records)
    )
    return sync_once(stack, "full", settings=settings)


def test_batches_typed_in_the_worker_process_load_what_a_thread_loads(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_worker = _sync(stack, tmp_path / "worker", monkeypatch, worker_min_records=1)
    in_thread = _sync(stack, tmp_path / "thread", monkeypatch, worker_min_records=10**9)

    assert in_worker.fetched.worker_peak_rss_mib > 0  # a worker process typed the batches
    assert in_thread.fetched.worker_peak_rss_mib == 0  # and none was started here
    assert not in_worker.summary.failed_items and not in_thread.summary.failed_items
    received = sum(in_worker.fetched.received.values())
    assert received > 100 and received == sum(in_thread.fetched.received.values())
    assert fingerprint(tmp_path / "worker" / "warehouse.duckdb") == fingerprint(
        tmp_path / "thread" / "warehouse.duckdb"
    )
    # the cursors a catch-up would continue from come from the worker's newest updatedAt too
    cursors = "SELECT human_id, endpoint, cursor_updated_since FROM ops.sync_state ORDER BY 1, 2"
    worker_cursors = query(replace(stack.settings, data_dir=tmp_path / "worker"), cursors)
    thread_cursors = query(replace(stack.settings, data_dir=tmp_path / "thread"), cursors)
    assert worker_cursors and worker_cursors == thread_cursors
