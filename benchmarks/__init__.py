"""`sync-pipeline bench`: throughput of the sync and the receiver, measured, not asserted.

One invocation starts the simulator in its own process (latency and a rate limit on), lands
every user's Connect session through the real receiver, then on the same data runs: our full
sync, a dlt pipeline, DuckDB's read_json over the same records as JSONL, an incremental sync
after a small batch of notifications, and one with nothing new; then drives a fresh receiver.
Results go to a JSON file and a table (report.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from sync_pipeline.settings import Settings

PRESETS: dict[str, dict[str, int]] = {
    # ~200,000 records: 200 users x 27 list endpoints x 20..55 records (+ profiles)
    "full": {
        "users": 200,
        "min_records": 20,
        "max_records": 55,
        "deliveries": 2000,
        "dlt_users": 40,
        # the reference first sync: 40 users (~30k records at its record counts)
        "cli_users": 40,
    },
    # ~20,000 records: a laptop minute
    "quick": {
        "users": 20,
        "min_records": 20,
        "max_records": 55,
        "deliveries": 500,
        "dlt_users": 20,
        "cli_users": 10,
    },
}


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def bench_parser() -> argparse.ArgumentParser:
    """The arguments of `sync-pipeline bench` (the CLI hands this parser what follows `bench`)."""
    parser = argparse.ArgumentParser(
        prog="sync-pipeline bench",
        description="Measure sync and intake throughput against the upstream's rate limit, "
        "with dlt and DuckDB read_json on the same data (see the README's Performance section).",
    )
    add_bench_arguments(parser)
    return parser


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="~20k records: a laptop minute")
    parser.add_argument("--users", type=int, default=None, help="simulated users (preset)")
    parser.add_argument(
        "--min-records", type=int, default=None, help="fewest records per user and endpoint"
    )
    parser.add_argument(
        "--max-records", type=int, default=None, help="most records per user and endpoint"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--latency-ms", type=float, default=50.0, help="added per request")
    parser.add_argument("--rate-limit", type=float, default=200.0, help="requests/s (429 above)")
    parser.add_argument("--batch", type=int, default=100, help="changes before the incremental")
    parser.add_argument("--deliveries", type=int, default=None, help="receiver load deliveries")
    parser.add_argument("--senders", type=int, default=8, help="receiver load senders")
    parser.add_argument(
        "--dlt-users",
        type=int,
        default=None,
        help="users the dlt run syncs (its records/s is compared; the full preset uses a "
        "subset to stay within minutes)",
    )
    parser.add_argument("--no-dlt", action="store_true", help="skip the dlt comparison")
    parser.add_argument(
        "--cli-users",
        type=_at_least_one,
        default=None,
        help="users of the first `sync-pipeline sync` (its own process) into a fresh data "
        "dir: the user's path, benchmarks/user_path.py (preset: 40, --quick 10)",
    )
    parser.add_argument(
        "--cli-catchup-users",
        type=_at_least_one,
        default=5,
        help="users of the no-op `sync --user ...` catch-up (5)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="profile our full sync with pyinstrument into this text file (+ .html); "
        "slows that run down",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="instead of the usual runs: full syncs by 1..N worker processes (one shard each) "
        "sharing one Redis rate budget (benchmarks/workers.py)",
    )
    parser.add_argument(
        "--rate-backend",
        default=None,
        help="Redis URL of the shared budget for --workers (default: SYNC_RATE_BACKEND, "
        "else redis://127.0.0.1:6379/0)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results.json"))
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="keep the runs' data here (default: temp)"
    )


def run_bench(settings: Settings, args: argparse.Namespace) -> int:
    from benchmarks.report import print_report
    from benchmarks.simproc import SimSize

    preset = PRESETS["quick" if args.quick else "full"]
    size = SimSize(
        users=args.users if args.users is not None else preset["users"],
        min_records=args.min_records if args.min_records is not None else preset["min_records"],
        max_records=args.max_records if args.max_records is not None else preset["max_records"],
        seed=args.seed,
    )
    deliveries = args.deliveries if args.deliveries is not None else preset["deliveries"]
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="sync-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.workers:
            from benchmarks.workers import run_workers_bench

            result = run_workers_bench(settings, args, size, work)
        else:
            result = _bench(settings, args, size, deliveries, preset, work)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    if args.workers:
        from benchmarks.workers import print_workers_report

        print_workers_report(result)
    else:
        print_report(result)
    print(f"results written to {args.out}")
    return 0


def _bench(
    settings: Settings,
    args: argparse.Namespace,
    size: Any,
    deliveries: int,
    preset: dict[str, int],
    work: Path,
) -> dict[str, Any]:
    from benchmarks import scenarios
    from benchmarks.dlt_run import NOT_INSTALLED, dlt_available
    from benchmarks.report import environment, ratios
    from benchmarks.user_path import user_path_runs
    from starfleet.config import SimFaults
    from sync_pipeline.demo import demo_session_keys
    from sync_pipeline.instance import ensure_local_instance

    started = time.perf_counter()
    _, public_pem = demo_session_keys(work / "keys")
    settings = replace(settings, data_dir=(work / "ours").resolve(), session_public_key=public_pem)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    instance = ensure_local_instance(settings.dagster_home, os.environ)
    faults = SimFaults(latency_ms=args.latency_ms, rate_limit_per_s=args.rate_limit)
    limit = args.rate_limit
    out: dict[str, Any] = {
        "command": _command(args),
        "environment": environment(),
        "workload": {
            "users": size.users,
            "records_per_user_endpoint": [size.min_records, size.max_records],
            "seed": size.seed,
            "latency_ms": args.latency_ms,
            "rate_limit_per_s": limit,
            "page_size": settings.page_size,
            "http_concurrency": settings.http_concurrency,
        },
        "runs": {},
    }
    run_results: dict[str, Any] = out["runs"]
    with scenarios.prepared_workload(settings, size, faults, work, instance) as (
        settings,
        sim,
        setup,
    ):
        out["workload"]["records"] = sim.records
        out["setup"] = setup
        run_results["ours_full"] = scenarios.our_sync(
            settings, sim, "full", limit=limit, profile_to=args.profile
        )
        if args.no_dlt:
            run_results["dlt"] = {"not_run": "skipped with --no-dlt"}
        elif not dlt_available():
            run_results["dlt"] = {"not_run": NOT_INSTALLED}
        else:
            dlt_users = args.dlt_users if args.dlt_users is not None else preset["dlt_users"]
            run_results["dlt"] = scenarios.dlt_sync(
                sim, settings, work / "dlt", limit=limit, users=dlt_users
            )
        run_results["read_json"] = scenarios.read_json_load(
            work / "jsonl", sim.records_by_path, work / "read_json"
        )
        created = args.batch // 2
        run_results["ours_incremental"] = scenarios.incremental_after_batch(
            settings, sim, instance, created=created, updated=args.batch - created, limit=limit
        )
        run_results["ours_nothing_new"] = scenarios.our_sync(
            settings, sim, "incremental", limit=limit
        )
        # the user's path last: `sync-pipeline sync` processes on a fresh data dir, with the
        # sessions the receiver landed above
        cli_users = args.cli_users if args.cli_users is not None else preset["cli_users"]
        run_results.update(
            user_path_runs(
                settings,
                sim,
                settings.data_dir,
                work / "cli",
                users=min(cli_users, size.users),
                catchup_users=args.cli_catchup_users,
                limit=limit,
            )
        )
    out["receiver"] = scenarios.receiver_load(
        settings, work / "receiver", deliveries=deliveries, senders=args.senders
    )
    out["ratios"] = ratios(out)
    out["total_s"] = time.perf_counter() - started
    return out


def _command(args: argparse.Namespace) -> str:
    parts = ["sync-pipeline bench"]
    if args.quick:
        parts.append("--quick")
    for name in ("users", "min_records", "max_records", "deliveries", "dlt_users", "cli_users"):
        value = getattr(args, name)
        if value is not None:
            parts.append(f"--{name.replace('_', '-')} {value}")
    if args.no_dlt:
        parts.append("--no-dlt")
    return " ".join(parts)
