"""`sync-pipeline simulator` as a real process: contract part D's users listing and credentials."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from starfleet import build_world
from sync_pipeline_tests.test_cli import cli, cli_env, free_port, serving

pytestmark = pytest.mark.slow

HUMAN_ID = re.compile(r"^[0-9a-f]{32}$")


def test_simulator_command_serves_its_seeded_users_for_the_configured_client(
    tmp_path: Path,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = cli("simulator", "--host", "127.0.0.1", "--port", str(port), "--users", "3")
    args += ["--seed", "5"]
    env = cli_env(tmp_path, SYNC_CLIENT_ID="cli-test-client", SYNC_CLIENT_SECRET="cli-test-secret")
    with serving(args, env, f"{base}/_sim/users") as url:
        users = httpx.get(url, timeout=5).json()

        assert isinstance(users, list) and len(users) == 3
        assert all(set(u) == {"client_user_id", "human_id"} for u in users)
        assert all(isinstance(u["client_user_id"], str) and u["client_user_id"] for u in users)
        assert all(HUMAN_ID.match(u["human_id"]) for u in users)
        assert len({u["client_user_id"] for u in users}) == 3
        # --users and --seed were honoured: the same world as built in-process
        expected = build_world(3, 5).users
        assert users == [
            {"client_user_id": u.client_user_id, "human_id": u.human_id} for u in expected
        ]

        # part A on the same port, for SYNC_CLIENT_ID/SECRET and nothing else
        def token(client_id: str, secret: str) -> httpx.Response:
            body = {
                "client_id": client_id,
                "client_secret": secret,
                "client_user_id": users[0]["client_user_id"],
                "type": "access",
            }
            return httpx.post(f"{base}/v1/connect/token", json=body, timeout=5)

        granted = token("cli-test-client", "cli-test-secret")
        assert granted.status_code == 200 and granted.json()["human_id"] == users[0]["human_id"]
        assert token("starfleet-demo-client", "starfleet-demo-secret").status_code == 401
        access = granted.json()["access_token"]
        listed = httpx.get(
            f"{base}/v1/human/activities",
            headers={"Authorization": f"Bearer {access}"},
            timeout=5,
        )
        assert listed.status_code == 200 and int(listed.headers["X-Total-Count"]) >= 10
