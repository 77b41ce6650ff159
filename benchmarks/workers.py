"""`sync-pipeline bench --workers N`: 1..N worker processes syncing the users' shards in
parallel against one simulator, all paced by one request-rate budget in Redis.

What is measured, per worker count n:
- n processes (spawned, so each has its own interpreter, event loop and HTTP client) each run
  `run_sync(mode="full", shard=Shard(i, n))` with SYNC_RATE_BACKEND pointing at Redis: the
  upstream's limit is shared, not multiplied;
- each worker plans, fetches, stages and commits into a data directory of its own (a copy of
  the same prepared warehouse): DuckDB takes one writing process per file, and what the shared
  budget governs is the fetch, so the fetch is what runs in parallel here. Merging the shards'
  warehouses (or one committing step reading every worker's staged lake) is not timed;
- fetch throughput = records fetched by all workers / the fetch window (first worker's start to
  the last worker's end of fetching); requests/s over the simulator's limit and the share of
  429s come from the simulator's own counters over the round. The end-to-end wall time (with
  the commits) is reported beside it.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import time
import uuid
from dataclasses import replace
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from sync_pipeline.settings import Settings

DEFAULT_BACKEND = "redis://127.0.0.1:6379/0"


def _worker(settings: Settings, index: int, count: int, out: Queue) -> None:
    """One worker process: the full sync of its shard, timed by stage."""
    from benchmarks.measure import sync_stage_clock
    from sync_pipeline.sync.plan import Shard
    from sync_pipeline.sync.run import run_sync

    run_id = f"bench-w{index}of{count}-{uuid.uuid4().hex[:8]}"
    with sync_stage_clock() as clock:
        started = time.time()
        report = run_sync(settings, run_id=run_id, mode="full", shard=Shard(index, count))
        ended = time.time()
    s = clock.seconds
    fetch_end = started + s.get("plan", 0.0) + s.get("fetch_phase", 0.0)
    out.put(
        {
            "index": index,
            "users": len({i.user.human_id for i in report.plan.items}),
            "records": sum(report.fetched.received.values()),
            "started": started,
            "fetch_end": fetch_end,
            "ended": ended,
            "fetch_s": s.get("fetch_phase", 0.0),
            "commit_s": s.get("commit", 0.0),
            "failed_items": len(report.summary.failed_items),
        }
    )


def _round(
    base: Settings, sim: Any, backend: str, count: int, work: Path, limit: float
) -> dict[str, Any]:
    from sync_pipeline.upstream.shared_budget import SharedBudget

    SharedBudget.for_upstream(backend, base.api_url).reset()  # no pace learned by a prior round
    settings_for = []
    for index in range(count):
        data_dir = work / f"workers-{count}" / f"w{index}"
        data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(base.warehouse_path, data_dir / "warehouse.duckdb")
        settings_for.append(replace(base, data_dir=data_dir.resolve(), rate_backend=backend))
    ctx = mp.get_context("spawn")
    out: Queue = ctx.Queue()
    sim.reset_stats()
    procs = [
        ctx.Process(target=_worker, args=(s, i, count, out)) for i, s in enumerate(settings_for)
    ]
    for p in procs:
        p.start()
    workers = sorted((out.get(timeout=600) for _ in procs), key=lambda w: int(w["index"]))
    for p in procs:
        p.join(timeout=60)
        if p.exitcode != 0:
            raise RuntimeError(f"worker process exited with {p.exitcode}")
    stats = sim.stats()
    fetch_window = max(w["fetch_end"] for w in workers) - min(w["started"] for w in workers)
    wall = max(w["ended"] for w in workers) - min(w["started"] for w in workers)
    records = sum(int(w["records"]) for w in workers)
    total = int(stats["total"])
    rate_limited = int(stats["rate_limited"])
    per_s = total / fetch_window if fetch_window > 0 else 0.0
    return {
        "workers": count,
        "records": records,
        "fetch_window_s": fetch_window,
        "wall_s_with_commits": wall,
        "fetch_records_per_s": records / fetch_window if fetch_window > 0 else None,
        "requests": total,
        "rate_limited_429": rate_limited,
        "share_429": rate_limited / total if total else 0.0,
        "requests_per_s": per_s,
        "requests_per_s_over_limit": per_s / limit,
        "per_worker": workers,
    }


def run_workers_bench(
    settings: Settings, args: argparse.Namespace, size: Any, work: Path
) -> dict[str, Any]:
    """Prepare one world and one warehouse, then a round per worker count 1..args.workers."""
    from benchmarks import scenarios
    from benchmarks.report import environment
    from starfleet.config import SimFaults
    from sync_pipeline.demo import demo_session_keys
    from sync_pipeline.instance import ensure_local_instance

    backend = args.rate_backend or settings.rate_backend or DEFAULT_BACKEND
    started = time.perf_counter()
    _, public_pem = demo_session_keys(work / "keys")
    base = replace(settings, data_dir=(work / "base").resolve(), session_public_key=public_pem)
    base.data_dir.mkdir(parents=True, exist_ok=True)
    instance = ensure_local_instance(base.dagster_home, os.environ)
    limit = float(args.rate_limit)
    out: dict[str, Any] = {
        "command": f"sync-pipeline bench --workers {args.workers}"
        + (" --quick" if args.quick else ""),
        "measured": "fetch throughput of N parallel full syncs (one shard each, own data dir), "
        "one shared Redis rate budget; commits not merged",
        "environment": environment(),
        "workload": {
            "users": size.users,
            "records_per_user_endpoint": [size.min_records, size.max_records],
            "seed": size.seed,
            "latency_ms": args.latency_ms,
            "rate_limit_per_s": limit,
            "page_size": base.page_size,
            "http_concurrency_per_worker": base.http_concurrency,
            "rate_backend": backend,
        },
        "rounds": [],
    }
    faults = SimFaults(latency_ms=args.latency_ms, rate_limit_per_s=limit)
    with scenarios.prepared_workload(base, size, faults, work, instance) as (base, sim, setup):
        out["workload"]["records"] = sim.records
        out["setup"] = setup
        for count in range(1, args.workers + 1):
            out["rounds"].append(_round(base, sim, backend, count, work, limit))
    rounds = out["rounds"]
    one = rounds[0]["fetch_records_per_s"]
    for r in rounds:
        r["scaling_vs_1_worker"] = r["fetch_records_per_s"] / one if one else None
    out["targets"] = {
        "share_429_at_most_1pct": all(r["share_429"] <= 0.01 for r in rounds),
        "requests_per_s_never_over_limit": all(
            r["requests_per_s_over_limit"] <= 1.0 for r in rounds
        ),
    }
    out["total_s"] = time.perf_counter() - started
    return out


def print_workers_report(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['command']} ({result['measured']})")
    for column in (
        "workers",
        "records",
        "fetch s",
        "records/s",
        "req/s ÷ limit",
        "429 share",
        "scaling",
        "wall s (+commits)",
    ):
        table.add_column(column, justify="right")
    for r in result["rounds"]:
        table.add_row(
            str(r["workers"]),
            str(r["records"]),
            f"{r['fetch_window_s']:.1f}",
            f"{r['fetch_records_per_s']:,.0f}",
            f"{r['requests_per_s_over_limit']:.2f}",
            f"{r['share_429']:.2%}",
            f"{r['scaling_vs_1_worker']:.2f}x",
            f"{r['wall_s_with_commits']:.1f}",
        )
    Console().print(table)
