"""The benchmark's runs against one simulator process: ours (full, incremental, nothing new),
dlt's, DuckDB's read_json, and the receiver load."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import httpx
from dagster import DagsterInstance

from benchmarks.measure import peak_rss_mib, percentile, reset_peak_rss, sync_stage_clock
from benchmarks.simproc import SimProcess, SimSize, jsonl_name, simulator_process
from benchmarks.webhook_senders import drive_receiver
from starfleet.config import SimFaults
from sync_pipeline.intake.landing import iter_landed, landed_days
from sync_pipeline.intake.server import running_receiver
from sync_pipeline.launch import run_job, today_partition
from sync_pipeline.settings import Settings
from sync_pipeline.sync.plan import SyncMode
from sync_pipeline.sync.run import run_sync
from sync_pipeline.warehouse import db

TOKEN_TEMPLATE = "connect/token"


def _request_figures(sim: SimProcess, seconds: float, limit: float | None) -> dict[str, Any]:
    stats = sim.stats()
    total = int(stats["total"])
    tokens = int(stats["by_path"].get(TOKEN_TEMPLATE, 0))
    rate_limited = int(stats["rate_limited"])
    per_s = total / seconds if seconds > 0 else None
    return {
        "requests": total,
        "data_requests": total - tokens,
        "token_requests": tokens,
        "rate_limited_429": rate_limited,
        "share_429": rate_limited / total if total else 0.0,
        "requests_per_s": per_s,
        "requests_per_s_over_limit": per_s / limit if per_s is not None and limit else None,
    }


def _latencies_ms(settings: Settings, run_id: str) -> list[float]:
    with db.connect(settings.warehouse, read_only=True) as con:
        rows = con.execute(
            "SELECT duration_ms FROM ops.http_requests WHERE run_id = ?", [run_id]
        ).fetchall()
    return [float(r[0]) for r in rows if r[0] is not None]


@contextmanager
def prepared_workload(
    settings: Settings, size: SimSize, faults: SimFaults, work: Path, instance: DagsterInstance
) -> Iterator[tuple[Settings, SimProcess, dict[str, Any]]]:
    """What every bench mode starts from: a receiver, the simulator in its own process, and its
    users connected and landed. Yields the settings pointed at that simulator."""
    with (
        running_receiver(settings) as receiver,
        simulator_process(
            size,
            faults=faults,
            receiver_url=receiver.base_url,
            session_key_file=work / "keys" / "session_private.pem",
            jsonl_dir=work / "jsonl",
            client_id=settings.client_id,
            client_secret=settings.client_secret,
        ) as sim,
    ):
        settings = settings.with_upstream(sim.base_url)
        yield settings, sim, prepare_users(settings, sim, instance)


def prepare_users(settings: Settings, sim: SimProcess, instance: DagsterInstance) -> dict[str, Any]:
    """Every user connects (Connect sessions through the real receiver), then intake and
    connection state run as Dagster runs, so connect.users lists everyone."""
    started = time.perf_counter()
    sessions = sim.post_initial_sessions()
    run_job("intake_job", settings=settings, instance=instance, partition_key=today_partition())
    run_job("connection_state_job", settings=settings, instance=instance)
    return {"sessions": len(sessions), "seconds": time.perf_counter() - started}


def our_sync(
    settings: Settings,
    sim: SimProcess,
    mode: SyncMode,
    *,
    limit: float | None,
    profile_to: Path | None = None,
) -> dict[str, Any]:
    """One `run_sync` through the real code path, timed per stage."""
    sim.reset_stats()
    reset_peak_rss()
    run_id = f"bench-{mode}-{uuid.uuid4().hex[:12]}"
    profiler: Any = None
    if profile_to is not None:
        from pyinstrument import Profiler

        profiler = Profiler(async_mode="enabled")
        profiler.start()
    with sync_stage_clock() as clock:
        started = time.perf_counter()
        report = run_sync(settings, run_id=run_id, mode=mode)
        wall = time.perf_counter() - started
    if profiler is not None and profile_to is not None:
        profiler.stop()
        profile_to.write_text(profiler.output_text(unicode=True, color=False, show_all=False))
        profile_to.with_suffix(".html").write_text(profiler.output_html())
    # the typing worker's peak adds to this process's during the fetch (both resident at
    # once; summing two peaks may overstate it); the commit runs after the worker exited
    worker_peak = report.fetched.worker_peak_rss_mib
    fetch_peak = clock.fetch_peak_rss_mib or 0.0
    peak = max(fetch_peak + worker_peak, peak_rss_mib())
    s = clock.seconds
    fetch_phase = s.get("fetch_phase", 0.0)
    normalise, stage, commit = report.fetched.typing_s, s.get("stage", 0.0), s.get("commit", 0.0)
    records = sum(report.fetched.received.values())
    latencies = _latencies_ms(settings, run_id)
    load = stage + commit
    return {
        "run_id": run_id,
        "mode": mode,
        "records": records,
        "wall_s": wall,
        "records_per_s": records / wall if wall > 0 else None,
        "stages_s": {
            "plan": s.get("plan", 0.0),
            # the phase's wall time: typing (in the worker process) and staging overlap it
            "fetch": fetch_phase,
            "normalise": normalise,
            # the typing worker decoding raw pages again (the fetch decoded them once already)
            "decode_again": report.fetched.decode_s,
            "load": load,
            "load_stage_parquet": stage,
            "load_commit": commit,
        },
        "normalise_load_records_per_s": records / (normalise + load)
        if normalise + load > 0
        else None,
        "decode_normalise_load_records_per_s": records
        / (report.fetched.decode_s + normalise + load)
        if normalise + load > 0
        else None,
        **_request_figures(sim, fetch_phase, limit),
        "p95_request_ms": percentile(latencies, 0.95),
        "p50_request_ms": percentile(latencies, 0.50),
        "peak_rss_mib": peak,
        "fetch_peak_rss_mib": fetch_peak,
        "worker_peak_rss_mib": worker_peak,
        "failed_items": len(report.summary.failed_items),
        "profiled": profile_to is not None,
    }


def incremental_after_batch(
    settings: Settings,
    sim: SimProcess,
    instance: DagsterInstance,
    *,
    created: int,
    updated: int,
    limit: float | None,
) -> dict[str, Any]:
    """Time moves upstream; its notifications reach the receiver; intake; an incremental sync."""
    moved = sim.advance(created=created, updated=updated)
    if moved.get("delivery_status") != 200:
        raise RuntimeError(f"notification delivery answered {moved.get('delivery_status')}")
    started = time.perf_counter()
    run_job("intake_job", settings=settings, instance=instance, partition_key=today_partition())
    intake_s = time.perf_counter() - started
    result = our_sync(settings, sim, "incremental", limit=limit)
    notifications = len(moved["items"])
    result.update(
        notifications=notifications,
        intake_s=intake_s,
        data_requests_per_notification=result["data_requests"] / notifications
        if notifications
        else None,
    )
    return result


def dlt_sync(
    sim: SimProcess, settings: Settings, workdir: Path, *, limit: float | None, users: int
) -> dict[str, Any]:
    from benchmarks.dlt_run import run_dlt

    sim.reset_stats()
    reset_peak_rss()
    out = run_dlt(
        api_url=settings.api_url,
        auth_url=settings.auth_url,
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        client_user_ids=[u["client_user_id"] for u in sim.users_list()][:users],
        workdir=workdir,
        page_size=settings.page_size,
        workers=settings.http_concurrency,
    )
    steps = out["steps"]
    wall = out["wall_s"]
    return {
        "records": out["records"],
        "wall_s": wall,
        "records_per_s": out["records"] / wall if wall > 0 else None,
        "stages_s": {
            "fetch": steps.get("extract"),
            "normalise": steps.get("normalize"),
            "load": steps.get("load"),
        },
        **_request_figures(sim, steps.get("extract") or wall, limit),
        "p95_request_ms": None,  # dlt keeps no per-request audit
        "peak_rss_mib": peak_rss_mib(),
        "tables": len(out["tables"]),
        "users": users,
    }


def read_json_load(
    jsonl_dir: Path, records_by_path: dict[str, int], workdir: Path
) -> dict[str, Any]:
    """DuckDB's native JSON reader loading the same records, one table per endpoint."""
    workdir.mkdir(parents=True, exist_ok=True)
    reset_peak_rss()
    path = workdir / "read_json.duckdb"
    started = time.perf_counter()
    with duckdb.connect(str(path)) as con:
        for index, endpoint_path in enumerate(sorted(records_by_path)):
            if not records_by_path[endpoint_path]:
                continue
            source = str(jsonl_dir / jsonl_name(endpoint_path))
            con.execute(
                f"CREATE TABLE t{index} AS SELECT * FROM read_json(?, format='newline_delimited')",
                [source],
            )
    wall = time.perf_counter() - started
    records = sum(records_by_path.values())
    return {
        "records": records,
        "wall_s": wall,
        "records_per_s": records / wall if wall > 0 else None,
        "jsonl_mib": round(sum(f.stat().st_size for f in jsonl_dir.iterdir()) / 2**20, 1),
        "peak_rss_mib": peak_rss_mib(),
    }


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def receiver_load(
    settings: Settings, data_dir: Path, *, deliveries: int, senders: int
) -> dict[str, Any]:
    """`sync-pipeline receiver` in its own process on a fresh data dir, driven over loopback."""
    import os

    port = _free_port()
    env = {
        **os.environ,
        "SYNC_DATA_DIR": str(data_dir),
        "SYNC_CLIENT_SECRET": settings.client_secret,
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sync_pipeline.cli",
            "receiver",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the receiver process did not start")
            time.sleep(0.05)
        result = asyncio.run(
            drive_receiver(base_url, settings.client_secret, senders=senders, deliveries=deliveries)
        )
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    landed = sum(
        1
        for day in landed_days(data_dir, "notifications")
        for _ in iter_landed(data_dir, "notifications", day)
    )
    result["landed"] = landed
    result["lost"] = int(result["acknowledged"]) - landed
    shutil.rmtree(data_dir, ignore_errors=True)
    return result
