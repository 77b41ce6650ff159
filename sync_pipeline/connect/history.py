"""Connection events and SCD type 2 connection history, from Connect session responses.

Rules (per human, over `ordered_sessions`, so arrival order never matters):
- Only well-formed sessions with status SUCCESS, CONNECTED_SOURCE or DISCONNECTED_SOURCE
  change anything; abnormal sessions (expired, invalid or missing token) and malformed
  deliveries change nothing and produce no events.
- `sessionResults.connectedSources` then `.disconnectedSources` apply as deltas, for every event
  (a SUCCESS `close` carries them too). Connecting an open source keeps its row; disconnecting
  a source that is not open changes nothing.
- Then, in a SUCCESS `close` only, `currentConnections` is the full state at that instant:
  open sources missing from it are closed and listed ones not open are opened. A payload with
  no `currentConnections` key says nothing about the full state (an empty list closes all).
- Events are what the callbacks *reported* (their `sessionResults`), one row per listed
  source; state changes implied by `currentConnections` show only in the history, where
  `closed_by`/`opened_by` name the `close` delivery that caused them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import groupby
from typing import Any

import pandas as pd

from sync_pipeline.connect.sessions import Session, SourceRef, ordered_sessions
from sync_pipeline.tables.connect import CONNECTION_EVENTS, CONNECTION_HISTORY
from sync_pipeline.tables.frames import typed_frame
from sync_pipeline.tables.registry import table


def connection_events(sessions: pd.DataFrame) -> pd.DataFrame:
    """One row per source a state-changing callback reported connected or disconnected."""
    rows = [
        {
            "human_id": session.human_id,
            "client_user_id": session.client_user_id,
            "source_id": ref.id,
            "source_name": ref.name,
            "change": change,
            "session_status": session.status,
            "event": session.event,
            "session_at": session.session_at,
            "delivery_digest": session.delivery_digest,
        }
        for session in _state_changing(ordered_sessions(sessions))
        for change, ref in _reported_changes(session)
    ]
    return typed_frame(table(CONNECTION_EVENTS), rows)


def connection_history(sessions: pd.DataFrame) -> pd.DataFrame:
    """SCD type 2 rows per (human_id, source_id); valid_to and closed_by are null while open."""
    changing = sorted(_state_changing(ordered_sessions(sessions)), key=_by_human)
    rows: list[dict[str, Any]] = []
    for human_id, human_sessions in groupby(changing, key=_by_human):
        rows.extend(_human_history(human_id, human_sessions))
    history = typed_frame(table(CONNECTION_HISTORY), rows)
    return history.sort_values(
        ["human_id", "source_id", "valid_from", "opened_by"], ignore_index=True
    )


def current_connections(history: pd.DataFrame) -> pd.DataFrame:
    """The open rows of a connection history: what each human has connected now."""
    return history[history["valid_to"].isna()].reset_index(drop=True)


@dataclass
class _OpenConnection:
    source_name: str | None
    valid_from: pd.Timestamp
    opened_by: str


def _human_history(human_id: str, sessions: Iterable[Session]) -> Iterator[dict[str, Any]]:
    open_now: dict[str, _OpenConnection] = {}

    def open_(ref: SourceRef, session: Session) -> None:
        existing = open_now.get(ref.id)
        if existing is None:
            open_now[ref.id] = _OpenConnection(
                ref.name, session.session_at, session.delivery_digest
            )
        elif existing.source_name is None:
            existing.source_name = ref.name

    def close(source_id: str, session: Session) -> dict[str, Any] | None:
        closed = open_now.pop(source_id, None)
        if closed is None:
            return None
        return _row(human_id, source_id, closed, session.session_at, session.delivery_digest)

    for session in sessions:
        assert session.payload is not None  # guaranteed by _state_changing
        for ref in session.payload.connected:
            open_(ref, session)
        for ref in session.payload.disconnected:
            if (row := close(ref.id, session)) is not None:
                yield row
        current = session.payload.current
        if current is not None and session.current_is_authoritative:
            listed = {ref.id for ref in current}
            for source_id in sorted(set(open_now) - listed):
                if (row := close(source_id, session)) is not None:
                    yield row
            for ref in current:
                open_(ref, session)
    for source_id, still_open in open_now.items():
        yield _row(human_id, source_id, still_open, None, None)


def _row(
    human_id: str,
    source_id: str,
    connection: _OpenConnection,
    valid_to: pd.Timestamp | None,
    closed_by: str | None,
) -> dict[str, Any]:
    return {
        "human_id": human_id,
        "source_id": source_id,
        "source_name": connection.source_name,
        "valid_from": connection.valid_from,
        "valid_to": valid_to,
        "opened_by": connection.opened_by,
        "closed_by": closed_by,
    }


def _state_changing(sessions: Iterable[Session]) -> list[Session]:
    return [session for session in sessions if session.changes_state]


def _reported_changes(session: Session) -> Iterator[tuple[str, SourceRef]]:
    assert session.payload is not None  # guaranteed by _state_changing
    for ref in session.payload.connected:
        yield "connected", ref
    for ref in session.payload.disconnected:
        yield "disconnected", ref


def _by_human(session: Session) -> str:
    return session.human_id or ""
