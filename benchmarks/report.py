"""What the benchmark reports: the machine, the issue's target ratios, and a printed table."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

from rich.console import Console
from rich.table import Table

PACKAGES = ("dagster", "duckdb", "pyarrow", "httpx", "pandas", "dlt")


def environment() -> dict[str, Any]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cores": os.cpu_count(), "platform": platform.platform(), "versions": versions}


def _div(a: Any, b: Any) -> float | None:
    if a is None or b is None or not b:
        return None
    return float(a) / float(b)


def _target(value: float | None, target: str, met: bool | None) -> dict[str, Any]:
    return {"value": value, "target": target, "met": met}


def ratios(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The issue's targets, each with its value from this invocation and whether it was met."""
    runs = result["runs"]
    full, dlt, read_json = runs["ours_full"], runs["dlt"], runs["read_json"]
    incremental, nothing = runs["ours_incremental"], runs["ours_nothing_new"]
    receiver = result["receiver"]
    first = runs.get("cli_first_sync", {})
    idle = runs.get("cli_nothing_pending", {})
    few = runs.get("cli_catchup_nothing_new", {})

    def at_most(value: float | None, bound: float) -> bool | None:
        return None if value is None else value <= bound

    def at_least(value: float | None, bound: float) -> bool | None:
        return None if value is None else value >= bound

    fetch = full["requests_per_s_over_limit"]
    vs_dlt = _div(full["records_per_s"], dlt.get("records_per_s"))
    vs_read_json = _div(full["normalise_load_records_per_s"], read_json["records_per_s"])
    with_decode = _div(full.get("decode_normalise_load_records_per_s"), read_json["records_per_s"])
    rss = max(full["peak_rss_mib"], incremental["peak_rss_mib"], nothing["peak_rss_mib"])
    return {
        "fetch_requests_per_s_over_limit": _target(fetch, ">= 0.9", at_least(fetch, 0.9)),
        "fetch_share_429": _target(full["share_429"], "<= 0.01", full["share_429"] <= 0.01),
        "ours_over_dlt_records_per_s": _target(vs_dlt, ">= 3", at_least(vs_dlt, 3.0)),
        "normalise_load_over_read_json": _target(
            vs_read_json, ">= 0.5", at_least(vs_read_json, 0.5)
        ),
        # the same with the worker's second decode of each page counted too (read_json's time
        # includes its own parse; ours parsed once in the fetch, counted there)
        "decode_normalise_load_over_read_json": _target(with_decode, "(informative)", None),
        "nothing_new_data_requests": _target(
            nothing["data_requests"], "== 0", nothing["data_requests"] == 0
        ),
        "incremental_data_requests_per_notification": _target(
            incremental["data_requests_per_notification"],
            "scales with notifications (about 1)",
            None,
        ),
        "peak_rss_mib": _target(rss, f"< 1024 at 1M records (ran {full['records']:,})", rss < 1024),
        "receiver_deliveries_per_s": _target(
            receiver["deliveries_per_s"], ">= 500", at_least(receiver["deliveries_per_s"], 500)
        ),
        "receiver_p99_ms": _target(receiver["p99_ms"], "< 100", receiver["p99_ms"] < 100),
        "receiver_lost": _target(receiver["lost"], "== 0", receiver["lost"] == 0),
        # the user's path (user_path.py): `sync-pipeline sync` as its own process
        "cli_first_sync_share_of_rate_bound": _target(
            first.get("share_of_bound"),
            f">= 0.7 ({_fmt(first.get('users'))} users, {_fmt(first.get('records'))} records)",
            at_least(first.get("share_of_bound"), 0.7),
        ),
        "cli_nothing_pending_s": _target(
            idle.get("wall_s"), "<= 4", at_most(idle.get("wall_s"), 4.0)
        ),
        "cli_nothing_pending_data_requests": _target(
            idle.get("data_requests"),
            "== 0",
            None if idle.get("data_requests") is None else idle["data_requests"] == 0,
        ),
        "cli_catchup_nothing_new_s": _target(
            few.get("wall_s"),
            f"<= 5 + the requests' bound ({_fmt(few.get('bound_s'), 2)} s)",
            at_most(few.get("wall_s"), 5.0 + float(few.get("bound_s") or 0.0)),
        ),
    }


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if abs(value) >= 0.01 or value == 0 else f"{value:.4f}"
    return str(value)


def print_report(result: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(width=180)
    workload = result["workload"]
    env = result["environment"]
    console.print(
        f"[bold]sync-pipeline bench[/bold]: {workload.get('records', 0):,} records, "
        f"{workload['users']} users, +{workload['latency_ms']:g} ms/request, "
        f"limit {workload['rate_limit_per_s']:g} req/s; {env['cores']} cores, "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    )
    runs = Table(title="Runs (same data, same invocation)")
    for column in (
        "run",
        "records",
        "wall s",
        "records/s",
        "req",
        "req/s",
        "÷ limit",
        "429s",
        "p95 ms",
        "fetch s",
        "normalise s",
        "load s",
        "peak RSS MiB",
    ):
        runs.add_column(column, justify="left" if column == "run" else "right")
    for name, run in result["runs"].items():
        if "not_run" in run:
            runs.add_row(name, f"[dim]{run['not_run']}[/dim]")
            continue
        stages = run.get("stages_s", {})
        runs.add_row(
            name,
            _fmt(run.get("records")),
            _fmt(run.get("wall_s"), 2),
            _fmt(run.get("records_per_s"), 0),
            _fmt(run.get("requests")),
            _fmt(run.get("requests_per_s")),
            _fmt(run.get("requests_per_s_over_limit"), 2),
            _fmt(run.get("rate_limited_429")),
            _fmt(run.get("p95_request_ms")),
            _fmt(stages.get("fetch"), 2),
            _fmt(stages.get("normalise"), 2),
            _fmt(stages.get("load"), 2),
            _fmt(run.get("peak_rss_mib")),
        )
    console.print(runs)
    console.print(
        "[dim]fetch s: the fetch phase's wall time, which typing (in a worker process) and "
        "staging overlap; normalise s: typing time where it ran; load s: staging Parquet + "
        "commit; peak RSS: the larger of the fetch (the sync's process plus its typing "
        "worker, which exits with the fetch) and the commit[/dim]"
    )
    for name, run in result["runs"].items():
        if run.get("failed_items"):
            console.print(
                f"[red]{name}: {run['failed_items']:,} (user, endpoint) items failed: its "
                "records/s counts only what arrived[/red]"
            )
    _print_user_path(result["runs"], console)
    receiver = result["receiver"]
    console.print(
        f"receiver: {_fmt(receiver['deliveries_per_s'])} deliveries/s, "
        f"p50 {_fmt(receiver['p50_ms'], 2)} ms, p99 {_fmt(receiver['p99_ms'], 2)} ms, "
        f"{receiver['acknowledged']:,} acknowledged, {receiver['landed']:,} landed"
    )
    targets = Table(title="Targets")
    for column in ("ratio", "value", "target", "met"):
        targets.add_column(column)
    for name, row in result["ratios"].items():
        met = row["met"]
        mark = "–" if met is None else ("[green]yes[/green]" if met else "[red]no[/red]")
        targets.add_row(name, _fmt(row["value"], 3), row["target"], mark)
    console.print(targets)


def _print_user_path(runs: dict[str, Any], console: Console) -> None:
    """The `sync-pipeline sync` processes: wall time against the rate-limit bound, and where
    the rest went (from the Dagster instance's events; user_path.breakdown)."""
    cli = {name: run for name, run in runs.items() if "breakdown_s" in run}
    if not cli:
        return
    table = Table(title="User's path: `sync-pipeline sync` as its own process (seconds)")
    columns = (
        "run", "exit", "records", "req", "wall", "bound", "bound÷wall", "overhead", "start",
        "run start", "planning", "steps", "checks", "commit", "glue", "end",
    )  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "run" else "right", no_wrap=True)
    for name, run in cli.items():
        b = run["breakdown_s"]
        glue = sum(b.get(k, 0.0) for k in ("between_steps", "between_runs", "run_end"))
        table.add_row(
            name,
            _fmt(run["exit_code"]),
            _fmt(run["records"]),
            _fmt(run["requests"]),
            _fmt(run["wall_s"], 2),
            _fmt(run["bound_s"], 2),
            _fmt(run["share_of_bound"], 2),
            _fmt(run["fixed_overhead_s"], 2),
            _fmt(b.get("process_start"), 2),
            _fmt(b.get("run_start"), 2),
            _fmt(b.get("planning"), 2),
            _fmt(b.get("steps"), 2),
            _fmt(b.get("checks"), 2),
            _fmt(b.get("commit"), 2),
            _fmt(glue, 2),
            _fmt(b.get("exit"), 2),
        )
    console.print(table)
    console.print(
        "[dim]bound: requests ÷ limit (the fastest possible); overhead: wall − bound; start: "
        "process start → the first run's first event (interpreter, imports, instance set-up); "
        "run start: → each run's first step (planning: its planned-asset/check events); steps: "
        "sum of step durations (checks: each step's last materialisation → its last check "
        "evaluation, commit: ops.load_log.committed_at → "
        "record_sync's first materialisation); glue: between steps and runs, run ends; end: "
        "last event → process exit[/dim]"
    )
    for name, run in cli.items():
        console.print(f"[bold]{name}[/bold]: {run['command']}")
        for dagster_run in run["breakdown_s"].get("runs", []):
            checks = dagster_run.get("checks_s", {})
            steps = ", ".join(
                f"{k} {v:.2f}" + (f" (checks {checks[k]:.2f})" if k in checks else "")
                for k, v in dagster_run["steps_s"].items()
            )
            console.print(
                f"  {dagster_run['job']} ({dagster_run['status']}, "
                f"{dagster_run['seconds']:.2f} s): {steps}"
            )
        if run["exit_code"] != 0:
            console.print(f"[red]  exited {run['exit_code']}: {run.get('stderr_tail', '')}[/red]")
