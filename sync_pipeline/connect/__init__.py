"""Connection state from Connect session responses (contract B2) and the upstream's /sources.

Pure pandas functions, no Dagster, DuckDB or network: the connect assets call them and write
the results to schema `connect` (and rejected deliveries to ops.rejected_session_responses).

- `sessions`: parse, deduplicate and order deliveries; `malformed_sessions` lists the rejected.
- `history`: `connection_events` (what callbacks reported) and `connection_history` (SCD2).
- `users`: one row per app user, with the session that last left them connected (the view
  connect.users adds `needs_reconnect` from the sync's token refusals).
- `sources`: `source_status_rows` from `/sources`, and `reconcile` against current connections
  (`fresh_snapshots`: only snapshots taken after the user's last connection change).
"""

from sync_pipeline.connect.history import (
    connection_events,
    connection_history,
    current_connections,
)
from sync_pipeline.connect.sessions import malformed_sessions
from sync_pipeline.connect.sources import fresh_snapshots, reconcile, source_status_rows
from sync_pipeline.connect.users import users

__all__ = [
    "connection_events",
    "connection_history",
    "current_connections",
    "fresh_snapshots",
    "malformed_sessions",
    "reconcile",
    "source_status_rows",
    "users",
]
