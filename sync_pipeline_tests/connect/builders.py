"""Connect session-response rows as the connect.session_responses table holds them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

HUMAN = "0123456789abcdef0123456789abcdef"
OTHER_HUMAN = "fedcba9876543210fedcba9876543210"
USER = "user-1@example.test"
OTHER_USER = "user-2@example.test"

FITBIT = {"name": "Fitbit", "id": "5b1daf3f079c652eaf41fd23"}
WITHINGS = {"name": "Withings", "id": "5b1daf3f079c652eaf41fd24"}
MOVES = {"name": "Moves", "id": "5b1daf3f079c652eaf41fd25"}

STATUS_FOR_EVENT = {
    "connect_source": "CONNECTED_SOURCE",
    "disconnect_source": "DISCONNECTED_SOURCE",
    "close": "SUCCESS",
}


def at(hhmm: str) -> pd.Timestamp:
    """An instant on the test day, e.g. at("13:00")."""
    return pd.Timestamp(f"2026-03-01T{hhmm}:00Z")


def payload(
    status: str,
    *,
    connected: Sequence[dict[str, str]] = (),
    disconnected: Sequence[dict[str, str]] = (),
    current: Sequence[dict[str, str]] | None = None,
) -> str:
    document: dict[str, Any] = {
        "status": status,
        "sessionResults": {
            "connectedSources": list(connected),
            "disconnectedSources": list(disconnected),
        },
    }
    if current is not None:
        document["currentConnections"] = list(current)
    return json.dumps(document)


def delivery(
    digest: str,
    session_at: str,
    event: str,
    *,
    status: str | None = None,
    connected: Sequence[dict[str, str]] = (),
    disconnected: Sequence[dict[str, str]] = (),
    current: Sequence[dict[str, str]] | None = None,
    raw: str | None = None,
    received_at: str | None = None,
    human_id: str = HUMAN,
    client_user_id: str = USER,
) -> dict[str, Any]:
    """One delivery; `raw` replaces the payload text (for malformed payloads)."""
    status = status or STATUS_FOR_EVENT[event]
    text = (
        raw
        if raw is not None
        else payload(status, connected=connected, disconnected=disconnected, current=current)
    )
    return {
        "delivery_digest": digest,
        "received_at": at(received_at or session_at),
        "session_at": at(session_at),
        "event": event,
        "status": status,
        "client_user_id": client_user_id,
        "human_id": human_id,
        "payload": text,
    }


def sessions_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    columns = [
        "delivery_digest",
        "received_at",
        "session_at",
        "event",
        "status",
        "client_user_id",
        "human_id",
        "payload",
    ]
    frame = pd.DataFrame(list(rows), columns=columns)
    for column in ("received_at", "session_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame
