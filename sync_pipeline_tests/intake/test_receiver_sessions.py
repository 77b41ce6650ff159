"""POST /connect/sessions against a real receiver on 127.0.0.1 (uvicorn in a thread)."""

import base64
import dataclasses
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from sync_pipeline.intake.server import running_receiver
from sync_pipeline.settings import Settings
from sync_pipeline_tests.intake.conftest import KeyPair, landed_lines

HUMAN = "2f8b6c3a9d4e5f60718293a4b5c6d7e8"
BODY = {
    "event": "connect_source",
    "response": {
        "status": "CONNECTED_SOURCE",
        "sessionResults": {"connectedSources": [{"name": "Starfleet Medical", "id": "s1"}]},
    },
}


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"client_user_id": "user-7", "human_id": HUMAN, "iat": now, "exp": now + 600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def rs256(keys: KeyPair, payload: dict[str, Any]) -> str:
    return jwt.encode(payload, keys.private, algorithm="RS256")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A token pyjwt would refuse to make: "alg: none", or HS256 keyed with a public key."""
    signing_input = (
        f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(payload).encode())}"
    )
    if key is None:
        return signing_input + "."
    mac = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(mac)}"


def post(client: httpx.Client, token: str | None, body: Any = BODY) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.post("/connect/sessions", content=content, headers=headers)


def test_a_valid_session_response_lands_with_claims_but_not_the_token(
    client: httpx.Client, settings: Settings, keys: KeyPair
) -> None:
    token = rs256(keys, claims())
    response = post(client, token)
    assert response.json() == {"status": "accepted", "duplicate": False}
    assert post(client, token).json() == {"status": "accepted", "duplicate": True}
    [line] = landed_lines(settings.data_dir, "sessions")
    landed = json.loads(line)
    assert landed["claims"]["client_user_id"] == "user-7"
    assert json.loads(landed["body"]) == BODY
    assert token not in line and token.split(".")[2] not in line


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [
        (lambda k, o: handmade({"alg": "none", "typ": "JWT"}, claims(), None), "token not valid"),
        (
            lambda k, o: handmade({"alg": "HS256", "typ": "JWT"}, claims(), k.public_pem.encode()),
            "token not valid",
        ),
        (lambda k, o: rs256(o, claims()), "token not valid"),
        (lambda k, o: rs256(k, claims(exp=int(time.time()) - 5)), "token expired"),
        (lambda k, o: rs256(k, claims(exp=None)), "token not valid"),
        (lambda k, o: rs256(k, claims(human_id=None)), "token not valid"),
        (
            lambda k, o: rs256(k, claims(client_user_id="")),
            "token claim client_user_id must be a non-empty string",
        ),
        (lambda k, o: rs256(k, claims())[:-4] + "AAAA", "token not valid"),
        (lambda k, o: "not-a-jwt", "token not valid"),
    ],
    ids=[
        "alg-none",
        "hs256-public-key",
        "wrong-key",
        "expired",
        "no-exp",
        "no-human-id",
        "empty-user",
        "tampered",
        "garbage",
    ],
)
def test_bad_tokens_are_refused(
    client: httpx.Client,
    settings: Settings,
    keys: KeyPair,
    other_keys: KeyPair,
    make_token: Any,
    reason: str,
) -> None:
    response = post(client, make_token(keys, other_keys))
    assert (response.status_code, response.json()) == (401, {"error": reason})
    assert landed_lines(settings.data_dir, "sessions") == []


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Basic dXNlcjpwYXNz", "Bearer  x y"])
def test_a_missing_bearer_token_is_refused(client: httpx.Client, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.post("/connect/sessions", content=json.dumps(BODY), headers=headers)
    assert response.status_code == 401


@pytest.mark.parametrize(
    "mismatch",
    [
        {"humanId": "ffffffffffffffffffffffffffffffff"},
        {"clientUserId": "someone-else"},
        {"human_id": "ffffffffffffffffffffffffffffffff"},
    ],
)
@pytest.mark.parametrize("where", ["response", "top"])
def test_claims_that_disagree_with_the_body_are_refused(
    client: httpx.Client, settings: Settings, keys: KeyPair, mismatch: dict[str, str], where: str
) -> None:
    body = json.loads(json.dumps(BODY))
    (body["response"] if where == "response" else body).update(mismatch)
    response = post(client, rs256(keys, claims()), body)
    assert response.status_code == 401
    assert landed_lines(settings.data_dir, "sessions") == []


def test_claims_that_agree_with_the_body_are_accepted(client: httpx.Client, keys: KeyPair) -> None:
    body = json.loads(json.dumps(BODY))
    body["response"].update({"humanId": HUMAN, "clientUserId": "user-7"})
    assert post(client, rs256(keys, claims()), body).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"{", 400, "body is not valid JSON"),
        (b'{"event":"close","response":{"status":"\xff"}}', 400, "body is not valid UTF-8"),
        (b"[]", 400, "body must be a JSON object"),
        ({"event": "open", "response": {"status": "SUCCESS"}}, 422, None),
        ({"event": "close", "response": "SUCCESS"}, 422, "response must be a JSON object"),
        (
            {"event": "close", "response": {"sessionResults": {}}},
            422,
            "response.status must be a non-empty string",
        ),
    ],
)
def test_unusable_bodies_are_refused(
    client: httpx.Client,
    settings: Settings,
    keys: KeyPair,
    body: Any,
    status: int,
    reason: str | None,
) -> None:
    response = post(client, rs256(keys, claims()), body)
    assert response.status_code == status
    if reason is not None:
        assert response.json() == {"error": reason}
    assert landed_lines(settings.data_dir, "sessions") == []


def test_the_public_key_may_be_a_file_path(
    settings: Settings, keys: KeyPair, tmp_path: Path
) -> None:
    pem_file = tmp_path / "session.pem"
    pem_file.write_text(keys.public_pem)
    settings = dataclasses.replace(settings, session_public_key=str(pem_file))
    with running_receiver(settings) as receiver, httpx.Client(base_url=receiver.base_url) as http:
        assert post(http, rs256(keys, claims())).status_code == 200


def test_without_a_public_key_sessions_are_unavailable_not_accepted(
    settings: Settings, keys: KeyPair
) -> None:
    settings = dataclasses.replace(settings, session_public_key=None)
    with running_receiver(settings) as receiver, httpx.Client(base_url=receiver.base_url) as http:
        assert post(http, rs256(keys, claims())).status_code == 503
        assert http.get("/healthz").status_code == 200
    assert landed_lines(settings.data_dir, "sessions") == []
