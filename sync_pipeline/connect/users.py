"""connect.users: one row per app user (client_user_id) seen in Connect session responses.

`needs_reconnect` joins two kinds of evidence by instant: the user's latest SUCCESS session
that left them with connections, and the times a sync's token request was refused (403/404,
contract A1). A refusal at or after that session means the user has to go through Connect
again; a later SUCCESS session with connections clears it. Refusals for a human_id that never
posted a session are not users we can name (no client_user_id) and are left out.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from sync_pipeline.connect.sessions import Session, ordered_sessions
from sync_pipeline.intake.session_rules import SUCCESS
from sync_pipeline.tables.connect import USERS
from sync_pipeline.tables.frames import typed_frame, utc_instants
from sync_pipeline.tables.registry import table


def users(sessions: pd.DataFrame, refused: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per client_user_id; human_id and status come from the user's latest session."""
    latest_refusal = _latest_refusal(refused)
    by_user: dict[str, list[Session]] = {}
    for session in ordered_sessions(sessions):
        if session.client_user_id is not None and not pd.isna(session.session_at):
            by_user.setdefault(session.client_user_id, []).append(session)
    rows = [_user_row(user, seen, latest_refusal) for user, seen in sorted(by_user.items())]
    return typed_frame(table(USERS), rows)


def _user_row(
    client_user_id: str, sessions: list[Session], latest_refusal: dict[str, pd.Timestamp]
) -> dict[str, Any]:
    # sessions arrive in order_key order, so the last one is the latest
    latest = sessions[-1]
    human_id = next((s.human_id for s in reversed(sessions) if s.human_id is not None), None)
    refused_at = latest_refusal.get(human_id) if human_id is not None else None
    reconnected_at = max(
        (s.session_at for s in sessions if s.human_id == human_id and _left_connected(s)),
        default=None,
    )
    # session times are whole seconds (the JWT's iat), refusals are not: a session in the same
    # second as a refusal may well have come after it, and counts as the reconnect (a refused
    # token is refused again at the next sync anyway)
    needs_reconnect = refused_at is not None and (
        reconnected_at is None or refused_at.floor("s") > reconnected_at
    )
    return {
        "client_user_id": client_user_id,
        "human_id": human_id,
        "first_seen_at": sessions[0].session_at,
        "last_seen_at": latest.session_at,
        "last_session_status": latest.status,
        "needs_reconnect": needs_reconnect,
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


def _latest_refusal(refused: pd.DataFrame | None) -> dict[str, pd.Timestamp]:
    if refused is None or refused.empty:
        return {}
    instants = utc_instants(refused["refused_at"])
    latest = (
        pd.DataFrame({"human_id": refused["human_id"].to_numpy(), "refused_at": instants})
        .dropna()
        .groupby("human_id")["refused_at"]
        .max()
    )
    return {str(human_id): at for human_id, at in latest.items()}
