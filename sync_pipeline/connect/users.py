"""connect.app_users: one row per app user (client_user_id) seen in Connect session responses.

Each row carries `reconnected_at`: the user's latest SUCCESS session that left them with
connections. Whether the user must reconnect also needs the record sync's token refusals
(403/404, contract A1), which this asset does not own: the view connect.users
(tables/connect.py) joins the two, so a refusal counts from the commit that records it. A
refusal for a human_id that never posted a session is not a user we can name (no
client_user_id) and stays out.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from sync_pipeline.connect.sessions import Session, ordered_sessions
from sync_pipeline.intake.session_rules import SUCCESS
from sync_pipeline.tables.connect import APP_USERS
from sync_pipeline.tables.frames import typed_frame
from sync_pipeline.tables.registry import table


def users(sessions: pd.DataFrame) -> pd.DataFrame:
    """One row per client_user_id; human_id and status come from the user's latest session."""
    by_user: dict[str, list[Session]] = {}
    for session in ordered_sessions(sessions):
        if session.client_user_id is not None and not pd.isna(session.session_at):
            by_user.setdefault(session.client_user_id, []).append(session)
    rows = [_user_row(user, seen) for user, seen in sorted(by_user.items())]
    return typed_frame(table(APP_USERS), rows)


def _user_row(client_user_id: str, sessions: list[Session]) -> dict[str, Any]:
    # sessions arrive in order_key order, so the last one is the latest
    latest = sessions[-1]
    human_id = next((s.human_id for s in reversed(sessions) if s.human_id is not None), None)
    reconnected_at = max(
        (s.session_at for s in sessions if s.human_id == human_id and _left_connected(s)),
        default=None,
    )
    return {
        "client_user_id": client_user_id,
        "human_id": human_id,
        "first_seen_at": sessions[0].session_at,
        "last_seen_at": latest.session_at,
        "last_session_status": latest.status,
        "reconnected_at": reconnected_at,
    }


def _left_connected(session: Session) -> bool:
    """A SUCCESS session after which the user had at least one connection.

    `currentConnections` says so when present; without it, a reported connection does.
    """
    if session.status != SUCCESS or session.payload is None:
        return False
    if session.payload.current is not None:
        return bool(session.payload.current)
    return bool(session.payload.connected)
