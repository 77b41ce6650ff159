"""The loopback services the distributed tests use (started by .ci/services), and a stack like
the e2e harness's but on a PostgreSQL-backed Dagster instance.

A missing service is a failure with the command that fixes it, never a skip: CI starts both."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path

import psycopg2
import pytest
from dagster import DagsterInstance

from starfleet.server import running_simulator
from sync_pipeline import deploy
from sync_pipeline.demo import demo_session_keys
from sync_pipeline.intake.server import running_receiver
from sync_pipeline.settings import load_settings
from sync_pipeline_tests.e2e.harness import Stack

PG = {
    "DAGSTER_PG_HOST": os.environ.get("DAGSTER_PG_HOST", "127.0.0.1"),
    "DAGSTER_PG_PORT": os.environ.get("DAGSTER_PG_PORT", "5432"),
    "DAGSTER_PG_USER": os.environ.get("DAGSTER_PG_USER", "sync_test"),
    "DAGSTER_PG_PASSWORD": os.environ.get("DAGSTER_PG_PASSWORD", "sync_test"),
    "DAGSTER_PG_DB": os.environ.get("DAGSTER_PG_DB", "sync_test"),
}
REDIS_URL = os.environ.get("SYNC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
START_THEM = "start them with `.ci/services` (installs and starts PostgreSQL and Redis on loopback)"


def _pg_connect(db: str) -> psycopg2.extensions.connection:
    try:
        con = psycopg2.connect(
            host=PG["DAGSTER_PG_HOST"],
            port=int(PG["DAGSTER_PG_PORT"]),
            user=PG["DAGSTER_PG_USER"],
            password=PG["DAGSTER_PG_PASSWORD"],
            dbname=db,
            connect_timeout=5,
        )
    except psycopg2.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG['DAGSTER_PG_HOST']}:{PG['DAGSTER_PG_PORT']} "
            f"as {PG['DAGSTER_PG_USER']}: {exc}; {START_THEM}",
            pytrace=False,
        )
    con.autocommit = True
    return con


@contextmanager
def fresh_pg_database() -> Iterator[dict[str, str]]:
    """A new, empty database for one test (so runs of other tests never show), dropped after.
    Yields the DAGSTER_PG_* environment pointing at it."""
    name = f"sync_t_{uuid.uuid4().hex[:12]}"
    admin = _pg_connect(PG["DAGSTER_PG_DB"])
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        try:
            yield {**PG, "DAGSTER_PG_DB": name}
        finally:
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


def require_redis() -> str:
    host, port = "127.0.0.1", 6379
    try:
        with socket.create_connection((host, port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(16)
    except OSError as exc:
        pytest.fail(f"Redis is not reachable at {host}:{port}: {exc}; {START_THEM}", pytrace=False)
    assert answer.startswith(b"+PONG"), answer
    return REDIS_URL


@contextmanager
def postgres_instance(dagster_home: Path) -> Iterator[DagsterInstance]:
    """A Dagster instance from deployment/dagster.postgres.yaml in a fresh database, selected the
    way a deployment selects it: SYNC_DAGSTER_STORAGE=postgres plus DAGSTER_PG_* in the env."""
    saved = dict(os.environ)
    try:
        with fresh_pg_database() as pg_env:
            os.environ.update(pg_env)
            os.environ["SYNC_DAGSTER_STORAGE"] = "postgres"
            deploy.write_instance_yaml(dagster_home, os.environ)
            os.environ["DAGSTER_HOME"] = str(dagster_home)
            instance = DagsterInstance.from_config(str(dagster_home))
            try:
                yield instance
            finally:
                instance.dispose()
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextmanager
def postgres_stack(data_dir: Path, *, users: int = 2, seed: int = 11) -> Iterator[Stack]:
    """The e2e harness's stack (simulator, receiver, its settings) on a PostgreSQL-backed
    instance instead of instance_for_test's SQLite one. The environment change is the
    instance's (DAGSTER_PG_*, postgres_instance); other processes get the settings as `env=`
    (sync_pipeline_tests.resources.settings_env)."""
    saved = dict(os.environ)
    try:
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
                    min_records=3,
                    max_records=10,
                    port=0,
                )
            )
            settings = settings.with_upstream(sim.base_url)
            instance = stack.enter_context(postgres_instance(data_dir / "dagster"))
            yield Stack(
                settings=settings, sim=sim, receiver_url=receiver.base_url, instance=instance
            )
    finally:
        os.environ.clear()
        os.environ.update(saved)
