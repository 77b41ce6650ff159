"""Poison deliveries among good ones, through the real receiver and the real Dagster intake
assets: the day's partitions succeed, the good rows land, the poison is rejected with reasons.

Before, a Connect body {"event":"close","response":{"status":"\\ud800"}} with a valid session
JWT was acknowledged and then failed connect.session_responses for that day on every run, and a
signed notification with such a `model` did the same to ops.notifications.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import jwt
import pytest

from sync_pipeline.assets import intake as intake_module
from sync_pipeline.assets.connect import connection_state
from sync_pipeline.assets.intake import intake_assets, landing_partitions
from sync_pipeline.intake.server import running_receiver
from sync_pipeline.settings import load_settings
from sync_pipeline.warehouse import db
from sync_pipeline_tests.intake.conftest import SECRET, make_keypair, signed_headers
from sync_pipeline_tests.resources import resources_for

# the intake group with today among its days (the tests land today's deliveries)
INTAKE = intake_assets(landing_partitions(dt.datetime.now(dt.UTC).date() - dt.timedelta(days=7)))

ALICE = "0123456789abcdef0123456789abcdef"
BOB = "fedcba9876543210fedcba9876543210"
FITBIT = {"name": "Fitbit", "id": "5b1daf3f079c652eaf41fd23"}


def item(human_id: str, object_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        "humanId": human_id,
        "updatedAt": "2024-05-01T11:59:58.250Z",
        "endpoint": "https://api.humanapi.co/v1/human/sleeps",
        "type": "wellness",
        "model": "sleep",
        "action": "created",
        "objectId": object_id,
        **overrides,
    }


def test_poison_deliveries_reject_alone_and_the_partitions_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # two deliveries per chunk: the three batches span two chunks of one transaction
    monkeypatch.setattr(intake_module, "CHUNK_DELIVERIES", 2)
    keys = make_keypair()
    data_dir = tmp_path / "data"
    settings = dataclasses.replace(
        load_settings({}),
        data_dir=data_dir,
        client_secret=SECRET,
        session_public_key=keys.public_pem,
    )
    # json.dumps writes the lone surrogates as "\ud800" escapes: valid JSON, valid UTF-8
    batches = [
        [item(ALICE, "a" * 24)],
        [item(BOB, "b" * 24, model="\ud800")],  # a descriptive label: repaired, loaded
        [item(BOB, "c" * 24), item("\ud800", "d" * 24), item(ALICE, "e" * 24, updatedAt=[[]])],
    ]
    now = int(time.time())
    sessions = [
        (ALICE, {"event": "connect_source", "response": _connected()}),
        (BOB, {"event": "close", "response": {"status": "\ud800"}}),
        (BOB, {"event": "close", "response": {"status": "SUCCESS", "currentConnections": []}}),
    ]
    with (
        running_receiver(settings) as receiver,
        httpx.Client(base_url=receiver.base_url, timeout=10) as client,
    ):
        for n, batch in enumerate(batches):
            body = json.dumps(batch).encode()
            answer = client.post(
                "/notifications", content=body, headers=signed_headers(body, nonce=str(n))
            )
            assert answer.status_code == 200
        for human_id, document in sessions:
            token = jwt.encode(
                {
                    "client_user_id": f"user-{human_id[:4]}",
                    "human_id": human_id,
                    "iat": now,
                    "exp": now + 600,
                },
                keys.private,
                algorithm="RS256",
            )
            answer = client.post(
                "/connect/sessions",
                content=json.dumps(document).encode(),
                headers={"Authorization": f"Bearer {token}"},
            )
            assert answer.status_code == 200

    today = dt.datetime.now(dt.UTC).date().isoformat()
    resources = resources_for(data_dir)
    with dg.instance_for_test() as instance:
        intake = dg.materialize(
            INTAKE,
            partition_key=today,
            resources=resources,
            instance=instance,
        )
        assert intake.success
        counted = {
            key.to_user_string(): {
                name: intake.asset_materializations_for_node(node)[0].metadata[name].value
                for name in ("deliveries", "rows", "rejected")
            }
            for key, node in [
                (dg.AssetKey(["ops", "notifications"]), "ops__notifications"),
                (dg.AssetKey(["connect", "session_responses"]), "connect__session_responses"),
            ]
        }
        assert counted == {
            "ops/notifications": {"deliveries": 3, "rows": 3, "rejected": 2},
            "connect/session_responses": {"deliveries": 3, "rows": 2, "rejected": 1},
        }
        assert dg.materialize([connection_state], resources=resources, instance=instance).success

    with db.connect(data_dir / "warehouse.duckdb", read_only=True) as con:
        notified = con.execute(
            "select object_id, model from ops.notifications order by object_id"
        ).fetchall()
        rejected = con.execute(
            "select table_name, reason from ops.rejected_records order by table_name, reason"
        ).fetchall()
        statuses = con.execute(
            "select human_id, status from connect.session_responses order by human_id"
        ).fetchall()
        open_sources = con.execute(
            "select human_id, source_id from connect.connection_history where valid_to is null"
        ).fetchall()
    assert notified == [("a" * 24, "sleep"), ("b" * 24, "\ufffd"), ("c" * 24, "sleep")]
    assert rejected == [
        ("connect.session_responses", "response status is not valid text"),
        ("ops.notifications", "humanId is not an id"),
        ("ops.notifications", "missing or invalid updatedAt"),
    ]
    assert statuses == [(ALICE, "CONNECTED_SOURCE"), (BOB, "SUCCESS")]
    assert open_sources == [(ALICE, FITBIT["id"])]


def _connected() -> dict[str, Any]:
    return {
        "status": "CONNECTED_SOURCE",
        "sessionResults": {"connectedSources": [FITBIT], "disconnectedSources": []},
    }
