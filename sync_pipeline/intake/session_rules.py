"""When a Connect session response is usable (contract B2): decided here, once.

The receiver refuses a body that breaks a shape rule (HTTP 400/422, `session_problem`), the
intake rows reject a landed delivery with the same rule's reason, and connection state holds
every stored row to the same events and to the statuses it knows (`label_problem`), so a row
landed before a rule existed is judged like a new one.
"""

from __future__ import annotations

import enum
from typing import Any

SESSION_EVENTS = frozenset({"close", "connect_source", "disconnect_source"})

SUCCESS = "SUCCESS"
CONNECTED_SOURCE = "CONNECTED_SOURCE"
DISCONNECTED_SOURCE = "DISCONNECTED_SOURCE"
# sessions that never reached the user's sources: kept for users.last_session_status only
ABNORMAL_STATUSES = frozenset(
    {"SESSION_TOKEN_INVALID", "SESSION_TOKEN_EXPIRED", "MISSING_SESSION_TOKEN"}
)
STATE_CHANGING_STATUSES = frozenset({SUCCESS, CONNECTED_SOURCE, DISCONNECTED_SOURCE})
KNOWN_STATUSES = ABNORMAL_STATUSES | STATE_CHANGING_STATUSES


class SessionProblem(enum.Enum):
    """Why a session body is unusable: the reason stored with a landed reject, and the HTTP
    answer the receiver gives a live request."""

    NOT_AN_OBJECT = ("body is not a JSON object", 400, "body must be a JSON object")
    UNKNOWN_EVENT = ("unknown event", 422, f"event must be one of {sorted(SESSION_EVENTS)}")
    RESPONSE_NOT_AN_OBJECT = ("response is not an object", 422, "response must be a JSON object")
    MISSING_STATUS = (
        "missing response status",
        422,
        "response.status must be a non-empty string",
    )

    def __init__(self, reason: str, http_status: int, http_message: str) -> None:
        self.reason = reason
        self.http_status = http_status
        self.http_message = http_message


def session_problem(document: Any) -> SessionProblem | None:
    """The first shape rule a parsed session body breaks, or None when it is usable."""
    if not isinstance(document, dict):
        return SessionProblem.NOT_AN_OBJECT
    if document.get("event") not in SESSION_EVENTS:
        return SessionProblem.UNKNOWN_EVENT
    response = document.get("response")
    if not isinstance(response, dict):
        return SessionProblem.RESPONSE_NOT_AN_OBJECT
    status = response.get("status")
    if not isinstance(status, str) or not status:
        return SessionProblem.MISSING_STATUS
    return None


def label_problem(
    event: str, status: str | None, human_id: str | None, has_time: bool
) -> str | None:
    """Why a stored session row cannot change connection state, or None: an event outside
    the contract, a status nobody defined, no user, or no instant to order it by."""
    if event not in SESSION_EVENTS:
        return f"unknown event {event!r}"
    if status not in KNOWN_STATUSES:
        return f"unknown status {status!r}"
    if human_id is None:
        return "no human_id"
    if not has_time:
        return "no session time"
    return None
