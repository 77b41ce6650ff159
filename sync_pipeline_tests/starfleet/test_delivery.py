"""What the simulator posts to a receiver: signed notifications (B1) and Connect sessions (B2)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from starfleet import SimulatorHandle, running_simulator
from sync_pipeline.intake.signature import sign
from sync_pipeline.settings import DEMO_CLIENT_SECRET
from sync_pipeline_tests.starfleet.conftest import Receiver, bearer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def key_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture
def wired(receiver: Receiver, key_pair: tuple[str, str]) -> Iterator[SimulatorHandle]:
    with running_simulator(
        users=3, seed=4, receiver_url=receiver.url, session_private_key_pem=key_pair[0]
    ) as handle:
        yield handle


def test_advance_posts_signed_notifications(wired: SimulatorHandle, receiver: Receiver) -> None:
    result = wired.advance(created=3, updated=2)
    assert result["delivery_status"] == 200
    assert len(receiver.received) == 1
    delivery = receiver.received[0]
    assert delivery.path == "/notifications"
    signature = sign(
        delivery.body,
        delivery.headers["x-humanapi-timestamp"],
        delivery.headers["x-humanapi-nonce"],
        DEMO_CLIENT_SECRET,
    )
    assert delivery.headers["x-humanapi-signature"] == signature
    assert len(delivery.headers["x-humanapi-timestamp"]) == 13  # milliseconds
    items = json.loads(delivery.body)
    assert items == result["items"]
    assert [i["action"] for i in items] == ["created"] * 3 + ["updated"] * 2
    for item in items:
        assert set(item) == {
            "humanId",
            "updatedAt",
            "endpoint",
            "type",
            "model",
            "action",
            "objectId",
        }
        assert item["endpoint"].startswith("https://api.humanapi.co/v1/human/")


def test_notified_records_are_served_with_their_new_stamp(
    wired: SimulatorHandle, receiver: Receiver
) -> None:
    items = wired.advance(created=1, updated=1)["items"]
    with httpx.Client(base_url=wired.base_url, timeout=10) as http:
        for item in items:
            user = wired.world.user_by_human_id(item["humanId"])
            assert user is not None
            path = item["endpoint"].removeprefix("https://api.humanapi.co/v1/human/")
            if path == "medical/profile":
                url = "/v1/human/medical/profile"
            else:
                url = f"/v1/human/{path}/{item['objectId']}"
            response = http.get(url, headers=bearer(http, user.client_user_id))
            assert response.status_code == 200
            assert response.json()["updatedAt"] == item["updatedAt"]


def _claims(token_header: str, public_pem: str) -> dict[str, object]:
    scheme, _, token = token_header.partition(" ")
    assert scheme == "Bearer"
    return jwt.decode(token, public_pem, algorithms=["RS256"])


def test_initial_sessions_carry_a_verifiable_jwt_per_user(
    wired: SimulatorHandle, receiver: Receiver, key_pair: tuple[str, str]
) -> None:
    results = wired.post_initial_sessions()
    assert [r["delivery_status"] for r in results] == [200] * 3
    assert [c.path for c in receiver.received] == ["/connect/sessions"] * 3
    for user, delivery in zip(wired.world.users, receiver.received, strict=True):
        claims = _claims(delivery.headers["authorization"], key_pair[1])
        assert claims["client_user_id"] == user.client_user_id
        assert claims["human_id"] == user.human_id
        assert isinstance(claims["exp"], int) and isinstance(claims["iat"], int)
        body = json.loads(delivery.body)
        current = [{"name": s.name, "id": s.id} for s in user.sources]
        assert body == {
            "event": "close",
            "response": {
                "status": "SUCCESS",
                "sessionResults": {"connectedSources": current, "disconnectedSources": []},
                "currentConnections": current,
            },
        }


def test_disconnect_session_changes_sources(
    wired: SimulatorHandle, receiver: Receiver, key_pair: tuple[str, str]
) -> None:
    user = wired.world.users[0]
    gone = user.sources[0]
    result = wired.post_session(user.client_user_id, "disconnect_source", disconnect=[gone.id])
    assert result["delivery_status"] == 200
    body = json.loads(receiver.received[-1].body)
    assert body["event"] == "disconnect_source"
    assert body["response"]["status"] == "DISCONNECTED_SOURCE"
    assert body["response"]["sessionResults"]["disconnectedSources"] == [
        {"name": gone.name, "id": gone.id}
    ]
    assert gone.id not in {s["id"] for s in body["response"]["currentConnections"]}
    with httpx.Client(base_url=wired.base_url, timeout=10) as http:
        sources = http.get("/v1/human/sources", headers=bearer(http, user.client_user_id))
        assert gone.id not in {s["id"] for s in sources.json()}
    wired.post_session(user.client_user_id, "connect_source", connect=[gone.id])
    assert gone.id in {s.id for s in user.sources}
    assert _claims(receiver.received[-1].headers["authorization"], key_pair[1])


def test_failed_session_status_changes_nothing(wired: SimulatorHandle) -> None:
    user = wired.world.users[1]
    before = list(user.connections)
    result = wired.post_session(
        user.client_user_id, "close", disconnect=before[:1], status="SESSION_TOKEN_EXPIRED"
    )
    assert result["body"]["response"]["status"] == "SESSION_TOKEN_EXPIRED"
    assert list(user.connections) == before
