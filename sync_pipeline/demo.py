"""`sync-pipeline demo`: the whole product on the bundled simulator, as Dagster runs in the
local instance, with a summary of what landed."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dagster import DagsterInstance
from rich.table import Table

from starfleet.config import SimFaults
from sync_pipeline.commands import launch, open_instance, sync_outcome
from sync_pipeline.console import console, print_outcome, step
from sync_pipeline.launch import sync_config, today_partition
from sync_pipeline.settings import Settings
from sync_pipeline.tables.registry import TABLES
from sync_pipeline.warehouse import db


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


def table_counts(settings: Settings) -> list[tuple[str, int]]:
    with db.connect(settings.warehouse, read_only=True) as con:
        return [
            (table, int(con.execute(f"SELECT count(*) FROM {db.quoted(table)}").fetchone()[0]))  # type: ignore[index]
            for table in sorted(TABLES)
        ]


def _print_summary(settings: Settings) -> None:
    table = Table(title=f"What landed in {settings.warehouse.shown}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, rows in table_counts(settings):
        table.add_row(name, f"{rows:,}", style=None if rows else "dim")
    console.print(table)


# Written into the data directory by the demo: only a warehouse next to this file is the
# demo's own to replace. Anything else is someone's data, and the demo leaves it alone.
DEMO_MARKER = ".created-by-sync-pipeline-demo"


class DataNotOurs(Exception):
    pass


def _claim_data_dir(settings: Settings) -> list[Path]:
    """What the demo will replace, after checking that it is the demo's own to replace."""
    found = [
        p for p in (settings.warehouse_path, settings.lake_dir, settings.landing_dir) if p.exists()
    ]
    if found and not (settings.data_dir / DEMO_MARKER).exists():
        raise DataNotOurs(
            f"{settings.data_dir} holds data the demo did not create "
            f"({', '.join(p.name for p in found)}); the demo never replaces it. "
            "Run it with --data-dir <an empty or new folder>, or move that data away."
        )
    return found


def _replace(found: list[Path], settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (settings.data_dir / DEMO_MARKER).write_text(
        "the demo owns the warehouse, lake and landing here\n"
    )
    for leftover in found:
        if leftover.is_dir():
            shutil.rmtree(leftover)
        else:
            leftover.unlink(missing_ok=True)


# a job, its partition and its run config
_Run = tuple[str, str | None, dict[str, Any] | None]


def _launch_in_turn(
    instance: DagsterInstance, settings: Settings, runs: list[tuple[str, _Run]]
) -> bool:
    """Launch each titled run in turn; stop at the first failure. The last run is a sync:
    print what it did."""
    for title, (job, partition, config) in runs:
        result = launch(settings, instance, title, job, partition_key=partition, config=config)
        if not result.success:
            return False
    print_outcome(sync_outcome(settings, result.run_id))
    return True


def run_demo(settings: Settings, *, users: int, seed: int) -> int:
    from starfleet.server import running_simulator
    from sync_pipeline.intake.server import running_receiver

    console.print(
        f"[bold]sync_pipeline demo[/bold]: {users} simulated users, data in {settings.data_dir}"
    )
    try:
        found = _claim_data_dir(settings)
    except DataNotOurs as refusal:
        console.print(f"[red]{refusal}[/red]")
        return 1
    if found:
        console.print(
            "  replacing the previous demo's "
            + ", ".join(str(p.relative_to(settings.data_dir)) for p in found)
            + f" in {settings.data_dir} (the Dagster instance keeps every earlier run)"
        )
    _replace(found, settings)
    private_pem, public_pem = demo_session_keys(settings.data_dir / "keys")
    settings = replace(settings, session_public_key=public_pem)
    with (
        open_instance(settings) as instance,
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
        console.print(f"  simulator {sim.base_url}   receiver {receiver.base_url}")
        # one user's source was revoked upstream and a few records arrive malformed, so the
        # demo also shows needs_reconnect, skipped users and rejected records
        refused = sim.world.users[-1].client_user_id
        sim.app_config.faults = SimFaults(refused_users=(refused,), corrupt_rate=0.01, seed=seed)
        with step("Users connect their sources (Connect sessions → receiver)") as shown:
            shown.facts["sessions"] = len(sim.post_initial_sessions())
        intake: _Run = ("intake_job", today_partition(), None)
        incremental: _Run = ("incremental_sync_job", None, sync_config("incremental", []))
        catchup: _Run = ("catchup_sync_job", None, sync_config("catchup", []))
        if not _launch_in_turn(
            instance,
            settings,
            [
                ("Dagster run: intake (landing log → tables)", intake),
                ("Dagster run: connection state (incremental sync, nothing pending)", incremental),
                ("Dagster run: catch-up sync of every connected user", catchup),
            ],
        ):
            return 1
        with step("Time passes upstream: records change, signed notifications arrive") as shown:
            shown.facts["notified changes"] = len(sim.advance(created=30, updated=20)["items"])
        if not _launch_in_turn(
            instance,
            settings,
            [
                ("Dagster run: intake of the notifications", intake),
                ("Dagster run: incremental sync of the notified changes", incremental),
            ],
        ):
            return 1
    _print_summary(settings)
    console.print(
        f"Runs are in the Dagster instance at {settings.dagster_home}: "
        f"`DAGSTER_HOME={settings.dagster_home} dagster dev` shows them."
    )
    return 0
