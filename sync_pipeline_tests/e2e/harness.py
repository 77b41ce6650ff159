"""A whole stack on loopback for end-to-end tests: the simulator, the receiver, a data directory,
a Dagster instance, and helpers to run the code location's jobs as real Dagster runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
from dagster import DagsterInstance, ExecuteInProcessResult, instance_for_test

from starfleet.config import SimFaults
from starfleet.server import SimulatorHandle, running_simulator
from sync_pipeline.demo import demo_session_keys
from sync_pipeline.intake.server import running_receiver
from sync_pipeline.launch import run_job, sync_config, today_partition
from sync_pipeline.settings import Settings, load_settings
from sync_pipeline.warehouse import db


@dataclass
class Stack:
    settings: Settings
    sim: SimulatorHandle
    receiver_url: str
    instance: DagsterInstance

    def run(
        self,
        name: str,
        *,
        partition_key: str | None = None,
        config: dict[str, Any] | None = None,
        raise_on_failure: bool = True,
        settings: Settings | None = None,
    ) -> ExecuteInProcessResult:
        """Run `name` on the stack's settings (or `settings`, e.g. the stack's with tighter
        limits)."""
        return run_job(
            name,
            settings=settings or self.settings,
            instance=self.instance,
            partition_key=partition_key,
            config=config,
            raise_on_failure=raise_on_failure,
        )

    def intake(self) -> ExecuteInProcessResult:
        """Turn today's landing log into rows (the sync jobs rebuild connection state first)."""
        return self.run("intake_job", partition_key=today_partition())

    def sync(
        self, mode: str = "incremental", users: list[str] | None = None
    ) -> ExecuteInProcessResult:
        return self.run(
            f"{'incremental' if mode == 'incremental' else 'catchup'}_sync_job",
            config=sync_config(mode, users),
        )

    def sim_stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.sim.base_url}/_sim/stats", timeout=10).raise_for_status().json()  # type: ignore[no-any-return]

    def reset_stats(self) -> None:
        httpx.post(f"{self.sim.base_url}/_sim/stats/reset", timeout=10).raise_for_status()

    def data_requests(self) -> int:
        """Requests to data endpoints (everything but tokens) since the last reset."""
        stats = self.sim_stats()
        return sum(n for path, n in stats["by_path"].items() if path != "connect/token")

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        with db.connect(self.settings.warehouse, read_only=True) as con:
            return con.execute(sql, params or []).fetchall()


@contextmanager
def running_stack(
    data_dir: Path,
    *,
    users: int = 3,
    seed: int = 11,
    faults: SimFaults | None = None,
    min_records: int = 5,
    max_records: int = 20,
) -> Iterator[Stack]:
    """Everything the demo runs, on free loopback ports, with its own data dir and instance.
    Runs get the stack's settings as resources: the environment is neither read nor changed."""
    with ExitStack() as stack:
        settings = load_settings({"SYNC_DATA_DIR": str(data_dir)})
        private_pem, public_pem = demo_session_keys(data_dir / "keys")
        settings = replace(settings, session_public_key=public_pem)
        receiver = stack.enter_context(running_receiver(settings))
        sim = stack.enter_context(
            running_simulator(
                users=users,
                seed=seed,
                receiver_url=receiver.base_url,
                session_private_key_pem=private_pem,
                client_id=settings.client_id,
                client_secret=settings.client_secret,
                faults=faults,
                min_records=min_records,
                max_records=max_records,
                port=0,
            )
        )
        settings = settings.with_upstream(sim.base_url)
        (data_dir / "dagster").mkdir(parents=True, exist_ok=True)
        instance = stack.enter_context(instance_for_test(temp_dir=str(data_dir / "dagster")))
        yield Stack(settings=settings, sim=sim, receiver_url=receiver.base_url, instance=instance)
