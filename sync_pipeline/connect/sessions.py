"""Connect session responses (contract part B2) → parsed, deduplicated, ordered sessions.

Everything derived from sessions (events, history, users) starts from `ordered_sessions`, so
all of it depends only on the *set* of deliveries, never on the order they arrived in:

- duplicates are dropped twice over: by `delivery_digest` (the same delivery landed twice), then
  by content (the same callback posted again, so a new digest but the same human, session
  instant, event, status and payload JSON; payloads are compared after `json.loads`, so
  whitespace and key order do not matter). The first received of a group represents it
  (then the smallest digest).
- sessions are ordered by `(session_at, received_at, event rank, delivery_digest)`. The JWT
  `iat` has one-second resolution, so several callbacks of one user often share a second; the
  order they were received in is the only evidence of their real order (a `close` and a later
  `disconnect_source` within one second must leave the source disconnected). Deliveries
  received at the same instant too fall back to the event rank, deltas before the `close`
  (whose `currentConnections` is the full state at the end of the session), then the digest.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from sync_pipeline.intake.session_rules import (
    STATE_CHANGING_STATUSES,
    SUCCESS,
    label_problem,
)
from sync_pipeline.tables.connect import SESSION_RESPONSES
from sync_pipeline.tables.frames import typed_frame, utc_instants
from sync_pipeline.tables.ops import REJECT_INPUT
from sync_pipeline.tables.registry import table

_EPOCH = pd.Timestamp(0, tz="UTC")

CLOSE = "close"
EVENT_RANK = {"connect_source": 0, "disconnect_source": 0, CLOSE: 1}

SESSION_COLUMNS = tuple(table(SESSION_RESPONSES).column_names)


@dataclass(frozen=True)
class SourceRef:
    """One `{"name", "id"}` entry of a Connect payload; `id` is what connections are keyed on."""

    id: str
    name: str | None


@dataclass(frozen=True)
class Payload:
    connected: tuple[SourceRef, ...]
    disconnected: tuple[SourceRef, ...]
    # None when the payload has no currentConnections at all: absent is not "no connections"
    current: tuple[SourceRef, ...] | None


class MalformedPayload(ValueError):
    """The payload cannot be read as a Connect callback; its delivery changes nothing."""


@dataclass(frozen=True)
class Session:
    delivery_digest: str
    session_at: pd.Timestamp
    received_at: pd.Timestamp
    event: str
    status: str | None
    client_user_id: str | None
    human_id: str | None
    payload: Payload | None  # None when malformed
    problem: str | None  # why the delivery was not usable, for ops.rejected_records
    raw_payload: str | None

    @property
    def order_key(self) -> tuple[bool, pd.Timestamp, bool, pd.Timestamp, int, str]:
        # NaT does not compare, so sessions without a time sort last (they change nothing anyway)
        undated = bool(pd.isna(self.session_at))
        at = _EPOCH if undated else self.session_at
        unreceived = bool(pd.isna(self.received_at))
        received = _EPOCH if unreceived else self.received_at
        rank = EVENT_RANK.get(self.event, len(EVENT_RANK))
        return (undated, at, unreceived, received, rank, self.delivery_digest)

    @property
    def first_received_key(self) -> tuple[bool, pd.Timestamp, str]:
        unreceived = bool(pd.isna(self.received_at))
        received = _EPOCH if unreceived else self.received_at
        return (unreceived, received, self.delivery_digest)

    @property
    def changes_state(self) -> bool:
        return (
            self.payload is not None
            and self.human_id is not None
            and self.status in STATE_CHANGING_STATUSES
        )

    @property
    def current_is_authoritative(self) -> bool:
        return self.event == CLOSE and self.status == SUCCESS


def parse_payload(text: object) -> Payload:
    """The source lists of one callback payload; raises MalformedPayload when unusable.

    A payload is all-or-nothing: an entry without a usable id would make `currentConnections`
    look shorter than it is and close a live connection, so one bad entry rejects the delivery.
    """
    if not isinstance(text, str):
        raise MalformedPayload("payload is missing")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise MalformedPayload(f"payload is not JSON: {error.msg}") from None
    except (ValueError, RecursionError):  # a number past the int digit limit, deep nesting
        raise MalformedPayload("payload is not JSON we can read") from None
    if not isinstance(document, dict):
        raise MalformedPayload("payload is not a JSON object")
    results = document.get("sessionResults")
    if results is None:
        results = {}
    if not isinstance(results, dict):
        raise MalformedPayload("sessionResults is not an object")
    current = document.get("currentConnections")
    return Payload(
        connected=_source_list(results.get("connectedSources"), "connectedSources"),
        disconnected=_source_list(results.get("disconnectedSources"), "disconnectedSources"),
        current=None if current is None else _source_list(current, "currentConnections"),
    )


def _source_list(value: Any, field: str) -> tuple[SourceRef, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise MalformedPayload(f"{field} is not a list")
    refs = []
    for entry in value:
        if not isinstance(entry, dict):
            raise MalformedPayload(f"{field} has an entry that is not an object")
        source_id = entry.get("id")
        if not isinstance(source_id, str) or not source_id.strip():
            raise MalformedPayload(f"{field} has an entry without a source id")
        name = entry.get("name")
        refs.append(SourceRef(id=source_id, name=name if isinstance(name, str) else None))
    return tuple(refs)


def ordered_sessions(sessions: pd.DataFrame) -> list[Session]:
    """Every distinct session, deduplicated and in deterministic order (see module docstring)."""
    by_content: dict[tuple[Any, ...], Session] = {}
    # the first received of a content group (then the smallest digest) represents it
    for session in sorted(distinct_deliveries(sessions), key=lambda s: s.first_received_key):
        by_content.setdefault(_content_key(session), session)
    return sorted(by_content.values(), key=lambda s: s.order_key)


def distinct_deliveries(sessions: pd.DataFrame) -> list[Session]:
    """One parsed Session per delivery_digest, in order_key order (content duplicates kept)."""
    missing = set(SESSION_COLUMNS) - set(sessions.columns)
    if missing:
        raise ValueError(f"session responses lack columns: {sorted(missing)}")
    if sessions.empty:
        return []
    session_at = utc_instants(sessions["session_at"])
    received_at = utc_instants(sessions["received_at"])
    parsed = [
        _session(row, at, received)
        for row, at, received in zip(
            sessions.to_dict("records"), session_at, received_at, strict=True
        )
    ]
    # one digest is one delivery landed more than once (its first receipt counts); should its
    # rows ever disagree, keep one by a rule that does not depend on row order
    by_digest: dict[str, Session] = {}
    for session in sorted(parsed, key=lambda s: (s.first_received_key, _full_key(s))):
        by_digest.setdefault(session.delivery_digest, session)
    return sorted(by_digest.values(), key=lambda s: s.order_key)


def malformed_sessions(sessions: pd.DataFrame) -> pd.DataFrame:
    """Deliveries whose payload or labels cannot be used, as ops.rejected_records rows.

    One row per delivery_digest (a payload posted twice is two received deliveries), so that
    received = loaded + rejected holds per delivery.
    """
    rows = [
        {
            "table_name": SESSION_RESPONSES,
            "human_id": s.human_id,
            "record_id": s.delivery_digest,
            "reason": s.problem,
            "raw": s.raw_payload,
        }
        for s in distinct_deliveries(sessions)
        if s.problem is not None
    ]
    return typed_frame(REJECT_INPUT, rows)


def _session(
    row: Mapping[Hashable, Any], session_at: pd.Timestamp, received_at: pd.Timestamp
) -> Session:
    raw = _text(row["payload"])
    status = _text(row["status"])
    event = _text(row["event"]) or ""
    human_id = _text(row["human_id"])
    payload: Payload | None = None
    problem: str | None = None
    try:
        payload = parse_payload(raw)
    except MalformedPayload as error:
        problem = str(error)
    if problem is None:
        problem = label_problem(event, status, human_id, not pd.isna(session_at))
        if problem is not None:
            payload = None
    return Session(
        delivery_digest=str(row["delivery_digest"]),
        session_at=session_at,
        received_at=received_at,
        event=event,
        status=status,
        client_user_id=_text(row["client_user_id"]),
        human_id=human_id,
        payload=payload,
        problem=problem,
        raw_payload=raw,
    )


def _content_key(session: Session) -> tuple[Any, ...]:
    canonical: str | None = session.raw_payload
    if session.raw_payload is not None:
        with contextlib.suppress(ValueError, RecursionError):
            canonical = json.dumps(json.loads(session.raw_payload), sort_keys=True)
    return (
        session.human_id,
        session.client_user_id,
        session.session_at,
        session.event,
        session.status,
        canonical,
    )


def _full_key(session: Session) -> tuple[str, ...]:
    return tuple(
        "" if v is None else str(v) for v in (*_content_key(session), session.delivery_digest)
    )


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    return str(value)
