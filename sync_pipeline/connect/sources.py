"""The upstream's `/v1/human/sources` → connect.source_status rows, and reconciliation of those
snapshots against the connection state built from Connect sessions.

Matching choice (reconcile): a Connect session names a source as `{"name": "Fitbit", "id":
"<24 hex>"}`, while the 2014 `/sources` shape carries only `"source": "fitbit"`. A snapshot
entry that carries an id (an `id` field, or a `source` value that is itself a 24-hex id) is
matched on `source_id`, which survives renames; otherwise it is matched on the name, compared
case-insensitively and ignoring anything but letters and digits ("Apple Health" ==
"applehealth"). Only the latest snapshot of each human is used, and only humans with a
snapshot are reconciled: no snapshot is no evidence. (A human with no connected source gets
403/404 on the token request, which `users.needs_reconnect` already reports.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pandas as pd

from sync_pipeline.connect.sessions import ordered_sessions
from sync_pipeline.tables.columns import TEXT, Column
from sync_pipeline.tables.connect import SOURCE_STATUS
from sync_pipeline.tables.frames import typed_frame
from sync_pipeline.tables.registry import table

# the answer of `reconcile` (a check's finding, not a warehouse table)
RECONCILE_COLUMNS = (Column("human_id", TEXT), Column("source", TEXT), Column("problem", TEXT))
UPSTREAM_ONLY = "connected upstream, not here"
HERE_ONLY = "connected here, not upstream"

_SOURCE_ID = re.compile(r"[0-9a-f]{24}")
_NOT_ALNUM = re.compile(r"[^0-9a-z]+")


def source_status_rows(human_id: str, sources: list[Any], snapshot_at: datetime) -> pd.DataFrame:
    """One row per entry of one human's `/sources` answer; unreadable fields become NULL."""
    if snapshot_at.tzinfo is None:
        raise ValueError("snapshot_at must be timezone-aware")
    rows = [_status_row(human_id, entry, snapshot_at) for entry in sources]
    return typed_frame(table(SOURCE_STATUS), rows)


def reconcile(current: pd.DataFrame, source_status: pd.DataFrame) -> pd.DataFrame:
    """Sources on which the latest `/sources` snapshot and the current connections disagree.

    `current` has human_id, source_id, source_name (a connection history is accepted too: only
    its open rows, valid_to NULL, are used). `source` in the answer is the snapshot's `source`
    for upstream-only rows and the Connect source name (or id when nameless) for here-only rows.
    """
    if "valid_to" in current.columns:
        current = current[current["valid_to"].isna()]
    latest = _latest_snapshots(source_status)
    rows: list[dict[str, str]] = []
    for human_id, snapshot in latest.groupby("human_id", sort=True):
        here = current[current["human_id"] == human_id]
        rows.extend(_disagreements(str(human_id), here, snapshot))
    answer = typed_frame(RECONCILE_COLUMNS, rows).drop_duplicates()
    return answer.sort_values(["human_id", "problem", "source"], ignore_index=True)


def fresh_snapshots(source_status: pd.DataFrame, sessions: pd.DataFrame) -> pd.DataFrame:
    """The snapshot rows of humans whose latest snapshot is not older than their latest
    state-changing Connect session.

    A snapshot taken before the user connected or disconnected something describes a state that
    no longer exists; reconciling it would report the change itself as a disagreement until the
    next catch-up takes a new snapshot. Such humans have no current evidence and are left out.
    """
    changed_at: dict[str, pd.Timestamp] = {}
    for session in ordered_sessions(sessions):
        if session.changes_state and session.human_id is not None:
            changed_at[session.human_id] = session.session_at  # ordered: the last one wins
    latest = _latest_snapshots(source_status)
    if latest.empty:
        return latest
    keep = [
        human_id not in changed_at or snapshot_at >= changed_at[human_id]
        for human_id, snapshot_at in zip(latest["human_id"], latest["snapshot_at"], strict=True)
    ]
    return latest[keep].reset_index(drop=True)


def _status_row(human_id: str, entry: Any, snapshot_at: datetime) -> dict[str, Any]:
    item: Mapping[str, Any] = entry if isinstance(entry, dict) else {}
    sync = _mapping(item.get("syncStatus"))
    history = _mapping(item.get("historySync"))
    data_types = item.get("supportedDataTypes")
    return {
        "human_id": human_id,
        "snapshot_at": snapshot_at,
        "source": _string(item.get("source")),
        "sync_status": _string(sync.get("status")),
        "synched_at": _instant(sync.get("synchedAt")),
        "newest_data_at": _instant(sync.get("newestDate")),
        "history_sync_status": _string(history.get("status")),
        "oldest_data_at": _instant(history.get("oldestDate")),
        "connected_since": _instant(item.get("connectedSince")),
        "supported_data_types": json.dumps(data_types) if isinstance(data_types, list) else None,
        "raw": json.dumps(entry),
    }


def _disagreements(
    human_id: str, here: pd.DataFrame, snapshot: pd.DataFrame
) -> list[dict[str, str]]:
    here_ids = {str(v) for v in here["source_id"].dropna()}
    here_names = {_name_key(v) for v in here["source_name"].dropna()}
    matched_ids: set[str] = set()
    matched_names: set[str] = set()
    rows = []
    for source, raw in zip(snapshot["source"], snapshot["raw"], strict=True):
        source = None if pd.isna(source) else str(source)
        source_id = _snapshot_source_id(source, raw)
        if source_id is not None:
            matched_ids.add(source_id)
            if source_id not in here_ids:
                rows.append(_problem(human_id, source or source_id, UPSTREAM_ONLY))
        elif source is not None:
            matched_names.add(_name_key(source))
            if _name_key(source) not in here_names:
                rows.append(_problem(human_id, source, UPSTREAM_ONLY))
    for source_id, name in zip(here["source_id"], here["source_name"], strict=True):
        named = not pd.isna(name)
        if source_id in matched_ids or (named and _name_key(name) in matched_names):
            continue
        rows.append(_problem(human_id, str(name) if named else str(source_id), HERE_ONLY))
    return rows


def _latest_snapshots(source_status: pd.DataFrame) -> pd.DataFrame:
    if source_status.empty:
        return source_status
    newest = source_status.groupby("human_id")["snapshot_at"].transform("max")
    return source_status[source_status["snapshot_at"] == newest]


def _snapshot_source_id(source: str | None, raw: Any) -> str | None:
    try:
        entry = json.loads(raw) if isinstance(raw, str) else None
    except json.JSONDecodeError:
        entry = None
    carried = entry.get("id") if isinstance(entry, dict) else None
    if isinstance(carried, str) and carried:
        return carried
    if source is not None and _SOURCE_ID.fullmatch(source):
        return source
    return None


def _name_key(name: Any) -> str:
    return _NOT_ALNUM.sub("", str(name).casefold())


def _problem(human_id: str, source: str, problem: str) -> dict[str, str]:
    return {"human_id": human_id, "source": source, "problem": problem}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _instant(value: Any) -> pd.Timestamp | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        instant = pd.Timestamp(value)
    except ValueError:
        return None
    if pd.isna(instant):
        return None
    # the contract promises UTC instants; a value without an offset is taken as UTC
    return instant.tz_localize("UTC") if instant.tzinfo is None else instant.tz_convert("UTC")
