"""Issue 8, hostile input through the receiver and the sync: SQL-looking identifiers are
stored literally or rejected and harm no table; a notification naming another host never
makes the pipeline send that host anything (least of all a token)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from sync_pipeline.demo import demo_session_keys
from sync_pipeline.simulator import delivery
from sync_pipeline.warehouse.db import all_schemas
from sync_pipeline_tests.reliability.helpers import connected_stack, sync_once

pytestmark = pytest.mark.slow

EVIL = "x'); DROP TABLE t;--"


class _Recorder(BaseHTTPRequestHandler):
    seen: list[str] = []  # noqa: RUF012 - class-level on purpose: one evil server per test

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


def existing_tables(stack_query: object) -> set[str]:
    rows = stack_query(  # type: ignore[operator]
        "SELECT table_schema || '.' || table_name FROM information_schema.tables"
    )
    return {r[0] for r in rows}


def test_hostile_identifiers_and_a_foreign_host_harm_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with connected_stack(data_dir, users=1) as stack, evil_server() as (evil_url, evil_seen):
        sync_once(stack)
        user = stack.sim.world.users[0]
        record = stack.sim.world.records(user.human_id, "medical/test_results")[0]
        upstream = "https://api.humanapi.co/v1/human"
        base = {"updatedAt": "2026-01-01T00:00:00.000Z", "type": "medical", "model": "testresult"}
        items = [
            # names another host: must never be fetched from there
            {**base, "humanId": user.human_id, "action": "updated", "objectId": record["id"],
             "endpoint": f"{evil_url}/v1/human/medical/test_results"},
            {**base, "humanId": EVIL, "action": "updated", "objectId": record["id"],
             "endpoint": f"{upstream}/medical/test_results"},
            {**base, "humanId": user.human_id, "action": "updated", "objectId": EVIL,
             "endpoint": f"{upstream}/medical/test_results"},
            {**base, "humanId": user.human_id, "action": "updated", "objectId": record["id"],
             "endpoint": f"{upstream}/{EVIL}"},
        ]  # fmt: skip
        body, headers = delivery.signed_notification(
            items,
            stack.settings.client_secret,
            timestamp_ms=int(time.time() * 1000),
            nonce=delivery.new_nonce(),
        )
        posted = httpx.post(f"{stack.receiver_url}/notifications", content=body, headers=headers)
        assert posted.status_code == 200

        # a Connect session for a client_user_id that looks like SQL
        private_pem, _ = demo_session_keys(data_dir / "keys")
        token = delivery.session_token(
            private_pem, client_user_id=EVIL, human_id="ab" * 16, now=int(time.time())
        )
        session = delivery.session_body(
            "close", "SUCCESS", connected=[], disconnected=[], current=[]
        )
        answer = httpx.post(
            f"{stack.receiver_url}/connect/sessions",
            json=session,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.status_code == 200

        stack.intake()
        stack.sync("incremental")

        assert evil_seen == []  # the foreign host received nothing at all
        # every table still exists
        assert set(all_schemas()) <= existing_tables(stack.query)
        rejected = stack.query("SELECT raw, reason FROM ops.rejected_records")
        assert any(evil_url in raw for raw, _ in rejected), rejected
        # the SQL-looking values are stored literally (as data) or rejected with a reason
        stored = stack.query(
            "SELECT count(*) FROM ops.notifications WHERE human_id = ? OR object_id = ? "
            "OR endpoint LIKE '%' || ? || '%'",
            [EVIL, EVIL, EVIL],
        )[0][0]
        rejected_evil = sum(
            1 for raw, _ in rejected if EVIL.replace("'", "") in raw.replace("'", "")
        )
        assert stored + rejected_evil >= 3
        users = stack.query("SELECT client_user_id FROM connect.users")
        sessions = stack.query("SELECT client_user_id FROM connect.session_responses")
        assert (EVIL,) in users or (EVIL,) in sessions or any(EVIL in raw for raw, _ in rejected)
        # the real user's record is still there and unharmed
        assert stack.query(
            "SELECT count(*) FROM medical.test_results WHERE record_id = ?", [record["id"]]
        ) == [(1,)]
