"""One whole Dagster flow shared by the secrets, hostile-input and failure-reporting tests.

Dagster runs are the slow part of these tests, so they happen once: intake, a catch-up sync
with one endpoint failing on every request, new data plus hostile deliveries (SQL-looking ids,
a notification naming a foreign host), intake again and an incremental sync, all with DEBUG
logging kept in a file. The stack is closed before the tests look: they read what the flow
left (log lines, Dagster events, the data directory, the warehouse file). Runs get their
settings as resources, so nothing here touches the environment other test modules see.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from dagster import DagsterEventType

from starfleet import delivery
from starfleet.config import SimFaults
from sync_pipeline.demo import demo_session_keys
from sync_pipeline.launch import sync_config
from sync_pipeline_tests.e2e.harness import Stack, running_stack

EVIL = "x'); DROP TABLE t;--"
# fails on every request during the catch-up (not one the PHI or hostile checks rely on)
BROKEN = "sleeps"
UPSTREAM = "https://api.humanapi.co/v1/human"


@dataclass(frozen=True)
class Flow:
    data_dir: Path
    log_lines: list[str]
    dagster_events: list[str]
    tokens: list[str]
    client_secret: str
    phi: list[str]
    humans: list[str]
    # the catch-up run with BROKEN failing: its log messages, materialised failure counts, and
    # whether the run itself succeeded (it must not: items were left behind)
    failing_run_messages: list[str]
    failing_run_counts: set[Any]
    failing_run_succeeded: bool
    # that run's record_sync step: its events' types in order, and its check evaluations
    # (check key → passed)
    failing_step_events: list[str]
    failing_step_checks: dict[str, bool]
    # what the host named by a hostile notification received
    evil_url: str
    evil_seen: list[str]
    # a real record the hostile deliveries point at
    real_record_id: str

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"


class _Recorder(BaseHTTPRequestHandler):
    seen: list[str] = []  # noqa: RUF012 - class-level on purpose: one evil server per flow

    def _any(self) -> None:
        type(self).seen.append(f"{self.command} {self.path} {dict(self.headers)}")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"[]")

    do_GET = do_POST = _any

    def log_message(self, format: str, *args: object) -> None:
        return


@contextmanager
def evil_server() -> Iterator[tuple[str, list[str]]]:
    """Another HTTP server on loopback: the host a hostile notification names."""
    seen: list[str] = []
    handler = type("EvilHandler", (_Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def debug_log_file(path: Path) -> Iterator[None]:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    saved_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_level)
        handler.close()


@dataclass(frozen=True)
class FailingRun:
    messages: list[str]
    counts: set[Any]
    succeeded: bool
    step_events: list[str]
    step_checks: dict[str, bool]


def failing_catchup(stack: Stack) -> FailingRun:
    """A catch-up through Dagster with BROKEN answering 500 to every request."""
    stack.sim.app_config.faults = SimFaults(fail_paths=(BROKEN,))
    impatient = replace(stack.settings, http_max_attempts=2, http_deadline_s=5)
    try:
        result = stack.run(
            "catchup_sync_job",
            config=sync_config("catchup"),
            raise_on_failure=False,
            settings=impatient,
        )
    finally:
        stack.sim.app_config.faults = SimFaults()
    logs = stack.instance.all_logs(result.run_id)
    messages = [e.message for e in logs if e.message]
    counts = {
        event.materialization.metadata["failed_items"].value
        for event in result.get_asset_materialization_events()
        if "failed_items" in event.materialization.metadata
    }
    step = [
        e.dagster_event
        for e in logs
        if e.dagster_event is not None and e.dagster_event.step_key == "record_sync"
    ]
    checks = {
        event.asset_check_evaluation_data.asset_check_key.to_user_string(): (
            event.asset_check_evaluation_data.passed
        )
        for event in step
        if event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
    }
    return FailingRun(messages, counts, result.success, [e.event_type_value for e in step], checks)


def post_hostile(stack: Stack, evil_url: str, record_id: str) -> None:
    """Notifications with SQL-looking ids and a foreign host, and a Connect session for a
    client_user_id that looks like SQL: all signed, all acknowledged."""
    user = stack.sim.world.users[0]
    base = {"updatedAt": "2026-01-01T00:00:00.000Z", "type": "medical", "model": "testresult"}
    items = [
        # names another host: must never be fetched from there
        {**base, "humanId": user.human_id, "action": "updated", "objectId": record_id,
         "endpoint": f"{evil_url}/v1/human/medical/test_results"},
        {**base, "humanId": EVIL, "action": "updated", "objectId": record_id,
         "endpoint": f"{UPSTREAM}/medical/test_results"},
        {**base, "humanId": user.human_id, "action": "updated", "objectId": EVIL,
         "endpoint": f"{UPSTREAM}/medical/test_results"},
        {**base, "humanId": user.human_id, "action": "updated", "objectId": record_id,
         "endpoint": f"{UPSTREAM}/{EVIL}"},
    ]  # fmt: skip
    body, headers = delivery.signed_notification(
        items,
        stack.settings.client_secret,
        timestamp_ms=int(time.time() * 1000),
        nonce=delivery.new_nonce(),
    )
    posted = httpx.post(f"{stack.receiver_url}/notifications", content=body, headers=headers)
    assert posted.status_code == 200

    private_pem, _ = demo_session_keys(stack.settings.data_dir / "keys")
    token = delivery.session_token(
        private_pem, client_user_id=EVIL, human_id="ab" * 16, now=int(time.time())
    )
    session = delivery.session_body("close", "SUCCESS", connected=[], disconnected=[], current=[])
    answer = httpx.post(
        f"{stack.receiver_url}/connect/sessions",
        json=session,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 200


def run_flow(data_dir: Path) -> Flow:
    log_path = data_dir.parent / "debug.log"
    with (
        debug_log_file(log_path),
        running_stack(data_dir, users=2, min_records=3, max_records=8) as stack,
        evil_server() as (evil_url, evil_seen),
    ):
        stack.sim.post_initial_sessions()
        stack.intake()
        failing = failing_catchup(stack)
        user = stack.sim.world.users[0]
        record_id = str(stack.sim.world.records(user.human_id, "medical/test_results")[0]["id"])
        stack.sim.advance(created=4, updated=3)
        post_hostile(stack, evil_url, record_id)
        stack.intake()
        stack.sync("incremental")
        tokens = list(stack.sim.app._tokens)  # every access token the simulator issued
        medications = {
            str(r["name"])
            for u in stack.sim.world.users
            for r in stack.sim.world.records(u.human_id, "medical/medications")
            if isinstance(r.get("name"), str) and len(r["name"]) >= 6
        }
        events = [
            str(event)
            for run in stack.instance.get_runs()
            for event in stack.instance.all_logs(run.run_id)
        ]
        humans = [u.human_id for u in stack.sim.world.users]
        secret = stack.settings.client_secret
    # the fixtures' patient family name, and medication names from the simulated records
    phi = ["Plasty", *sorted(medications)[:2]]
    assert tokens and phi and events
    return Flow(
        data_dir=data_dir,
        log_lines=log_path.read_text(encoding="utf-8", errors="replace").splitlines(),
        dagster_events=events,
        tokens=tokens,
        client_secret=secret,
        phi=phi,
        humans=humans,
        failing_run_messages=failing.messages,
        failing_run_counts=failing.counts,
        failing_run_succeeded=failing.succeeded,
        failing_step_events=failing.step_events,
        failing_step_checks=failing.step_checks,
        evil_url=evil_url,
        evil_seen=list(evil_seen),
        real_record_id=record_id,
    )
