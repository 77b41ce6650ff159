"""`sync-pipeline demo` and `sync-pipeline sync`: Dagster runs in the local instance, with a
progress display and a summary of what landed."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from rich.console import Console
from rich.table import Table

from sync_pipeline.instance import ensure_local_instance
from sync_pipeline.runs import RunFailed, export_settings, run_job, sync_config, today_partition
from sync_pipeline.settings import Settings
from sync_pipeline.simulator.config import SimFaults
from sync_pipeline.warehouse import db

console = Console()


def demo_session_keys(folder: Path) -> tuple[str, str]:
    """The RSA pair the demo's stand-in app backend signs session JWTs with (owner-only files)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    private_path, public_path = folder / "session_private.pem", folder / "session_public.pem"
    if not private_path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        for path, content in ((private_path, private), (public_path, public)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(content)
    return private_path.read_text(), public_path.read_text()


@contextmanager
def _step(title: str) -> Iterator[dict[str, Any]]:
    facts: dict[str, Any] = {}
    started = time.monotonic()
    with console.status(f"[bold]{title}…"):
        yield facts
    detail = ", ".join(f"{k} {v}" for k, v in facts.items())
    console.print(
        f"[green]✓[/green] {title} [dim]({time.monotonic() - started:.1f}s)[/dim]"
        + (f": {detail}" if detail else "")
    )


def _run_job(
    name: str, *, partition_key: str | None = None, config: dict[str, Any] | None = None
) -> str:
    instance = ensure_local_instance(Path(os.environ["DAGSTER_HOME"]))
    try:
        return run_job(name, instance=instance, partition_key=partition_key, config=config).run_id
    except RunFailed as exc:
        raise SystemExit(f"{exc}: see `dagster dev`") from exc


def table_counts(settings: Settings) -> list[tuple[str, int]]:
    with db.connect(settings.warehouse_path, read_only=True, key=settings.warehouse_key) as con:
        return [
            (table, int(con.execute(f"SELECT count(*) FROM {db.quoted(table)}").fetchone()[0]))  # type: ignore[index]
            for table in sorted(db.all_schemas())
        ]


def _print_summary(settings: Settings) -> None:
    table = Table(title=f"What landed in {settings.warehouse_path}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, rows in table_counts(settings):
        table.add_row(name, f"{rows:,}", style=None if rows else "dim")
    console.print(table)


def run_demo(settings: Settings, *, users: int, seed: int) -> int:
    from sync_pipeline.intake.server import running_receiver
    from sync_pipeline.simulator.server import running_simulator

    console.print(
        f"[bold]sync_pipeline demo[/bold]: {users} simulated users, data in {settings.data_dir}"
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # a demo starts from an empty warehouse; the Dagster instance keeps every earlier run
    for leftover in (settings.warehouse_path, settings.lake_dir, settings.landing_dir):
        if leftover.is_dir():
            shutil.rmtree(leftover)
        else:
            leftover.unlink(missing_ok=True)
    private_pem, public_pem = demo_session_keys(settings.data_dir / "keys")
    settings = replace(settings, session_public_key=public_pem)
    ensure_local_instance(settings.dagster_home)

    with (
        running_receiver(settings) as receiver,
        running_simulator(
            users=users,
            seed=seed,
            receiver_url=receiver.base_url,
            session_private_key_pem=private_pem,
            client_id=settings.client_id,
            client_secret=settings.client_secret,
        ) as sim,
    ):
        settings = settings.with_upstream(sim.base_url)
        export_settings(settings)
        console.print(f"  simulator {sim.base_url}   receiver {receiver.base_url}")
        http = httpx.Client(base_url=sim.base_url, timeout=30)
        # one user's source was revoked upstream and a few records arrive malformed, so the
        # demo also shows needs_reconnect, sync failures and rejected records
        refused = sim.world.users[-1].client_user_id
        sim.app_config.faults = SimFaults(refused_users=(refused,), corrupt_rate=0.01, seed=seed)
        with _step("Users connect their sources (Connect sessions → receiver)") as facts:
            facts["sessions"] = len(sim.post_initial_sessions())
        with _step("Dagster run: intake (landing log → tables) and connection state"):
            _run_job("intake_job", partition_key=today_partition())
            _run_job("incremental_sync_job", config=sync_config("incremental", []))
        with _step("Dagster run: catch-up sync of every connected user") as facts:
            _run_job("catchup_sync_job", config=sync_config("catchup", []))
            facts["upstream requests"] = http.get("/_sim/stats").json().get("total")
        with _step("Time passes upstream: records change, signed notifications arrive") as facts:
            facts["notified changes"] = len(sim.advance(created=30, updated=20)["items"])
        with _step("Dagster run: intake + incremental sync of the notified changes") as facts:
            before = http.get("/_sim/stats").json().get("total", 0)
            _run_job("intake_job", partition_key=today_partition())
            _run_job("incremental_sync_job", config=sync_config("incremental", []))
            facts["upstream requests"] = http.get("/_sim/stats").json().get("total", 0) - before
    _print_summary(settings)
    console.print(
        f"Runs are in the Dagster instance at {settings.dagster_home}: "
        f"`DAGSTER_HOME={settings.dagster_home} dagster dev` shows them."
    )
    return 0


def run_sync_command(settings: Settings, *, mode: str, users: list[str]) -> int:
    ensure_local_instance(settings.dagster_home)
    export_settings(settings)
    console.print(f"sync ({mode}) against {settings.api_url}, data in {settings.data_dir}")
    with _step("Dagster run: intake of today's landing log"):
        _run_job("intake_job", partition_key=today_partition())
    job = "incremental_sync_job" if mode == "incremental" else "catchup_sync_job"
    with _step(f"Dagster run: {mode} sync"):
        _run_job(job, config=sync_config(mode, users))
    _print_summary(settings)
    return 0
