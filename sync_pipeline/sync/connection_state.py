"""Rebuild connection state (connect.app_users, connection_events, connection_history) from
every landed session response: the connection_state asset's job, and only its job.

The result depends only on the set of inputs (not on arrival order), so a full rebuild inside
one transaction is both the simplest and the idempotent choice; volumes are per user, small.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa

from sync_pipeline import connect as state
from sync_pipeline.warehouse import db


@dataclass(frozen=True)
class ConnectionCounts:
    users: int
    events: int
    history_rows: int
    open_connections: int
    reconnected: int  # users whose latest successful session left them connected


def rebuild_connection_state(con: duckdb.DuckDBPyConnection) -> ConnectionCounts:
    """Replace connect.app_users, connection_events and connection_history. Call in a
    transaction. Token refusals are the record sync's table, downstream of this one: they are
    not read here (the view connect.users joins them for needs_reconnect)."""
    sessions = db.query_arrow(con, "connect.session_responses").to_pandas()
    events = state.connection_events(sessions)
    history = state.connection_history(sessions)
    users = state.users(sessions)
    db.replace_all(con, "connect.connection_events", pa.Table.from_pandas(events))
    db.replace_all(con, "connect.connection_history", pa.Table.from_pandas(history))
    db.replace_all(con, "connect.app_users", pa.Table.from_pandas(users))
    return ConnectionCounts(
        users=len(users),
        events=len(events),
        history_rows=len(history),
        open_connections=int(history["valid_to"].isna().sum()) if len(history) else 0,
        reconnected=int(users["reconnected_at"].notna().sum()),
    )
