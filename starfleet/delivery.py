"""What the simulator sends to the app's receiver: signed notifications (B1), Connect sessions (B2).

Builders are pure; the two `post_*` coroutines do the HTTP.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any

import httpx
import jwt

from starfleet.sources import Source
from sync_pipeline.intake.signature import sign

SESSION_JWT_TTL_S = 300
DELIVERY_TIMEOUT_S = 10.0

# The status Connect reports for each event when the session went well.
SUCCESS_STATUS_BY_EVENT = {
    "close": "SUCCESS",
    "connect_source": "CONNECTED_SOURCE",
    "disconnect_source": "DISCONNECTED_SOURCE",
}


def signed_notification(
    items: Sequence[dict[str, str]], secret: str, *, timestamp_ms: int, nonce: str
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one webhook delivery, signed over the exact bytes sent."""
    body = json.dumps(list(items), separators=(",", ":")).encode()
    timestamp = str(timestamp_ms)
    headers = {
        "Content-Type": "application/json",
        "X-HumanAPI-Signature": sign(body, timestamp, nonce, secret),
        "X-HumanAPI-Timestamp": timestamp,
        "X-HumanAPI-Nonce": nonce,
    }
    return body, headers


def new_nonce() -> str:
    # digits only, like the upstream's own nonces (e.g. 105850310064852240)
    return str(secrets.randbelow(10**18))


def session_body(
    event: str,
    status: str,
    *,
    connected: Sequence[Source],
    disconnected: Sequence[Source],
    current: Sequence[Source],
) -> dict[str, Any]:
    """What an app's front end posts to /connect/sessions: the event and Connect's payload."""
    return {
        "event": event,
        "response": {
            "status": status,
            "sessionResults": {
                "connectedSources": [s.as_connection() for s in connected],
                "disconnectedSources": [s.as_connection() for s in disconnected],
            },
            "currentConnections": [s.as_connection() for s in current],
        },
    }


def session_token(
    private_key_pem: str,
    *,
    client_user_id: str,
    human_id: str,
    now: int,
    ttl_s: int = SESSION_JWT_TTL_S,
) -> str:
    """The RS256 JWT the app's backend gives its front end to vouch for a Connect session."""
    claims = {
        "client_user_id": client_user_id,
        "human_id": human_id,
        "iat": now,
        "exp": now + ttl_s,
    }
    return jwt.encode(claims, private_key_pem, algorithm="RS256")


async def post_notifications(
    client: httpx.AsyncClient, receiver_url: str, body: bytes, headers: dict[str, str]
) -> int:
    response = await client.post(
        f"{receiver_url.rstrip('/')}/notifications", content=body, headers=headers
    )
    return response.status_code


async def post_session(
    client: httpx.AsyncClient, receiver_url: str, body: dict[str, Any], token: str
) -> int:
    response = await client.post(
        f"{receiver_url.rstrip('/')}/connect/sessions",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )
    return response.status_code
