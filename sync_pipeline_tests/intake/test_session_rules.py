"""One rule decides whether a Connect session body is usable: the receiver refuses it, the
intake rows reject a landed copy with the same rule's reason, and connection state rejects a
stored row whose labels the same module does not know."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest

from sync_pipeline.connect import malformed_sessions
from sync_pipeline.intake.checks import Rejected, check_session_body
from sync_pipeline.intake.rows import session_rows
from sync_pipeline.intake.session_rules import (
    SESSION_EVENTS,
    SessionProblem,
    label_problem,
    session_problem,
)

from .test_rows import HUMAN, session_delivery

BODIES: dict[SessionProblem, Any] = {
    SessionProblem.NOT_AN_OBJECT: ["close"],
    SessionProblem.UNKNOWN_EVENT: {"event": "open", "response": {"status": "SUCCESS"}},
    SessionProblem.RESPONSE_NOT_AN_OBJECT: {"event": "close", "response": "SUCCESS"},
    SessionProblem.MISSING_STATUS: {"event": "close", "response": {"status": ""}},
}


def test_every_problem_has_a_body_that_shows_it() -> None:
    assert set(BODIES) == set(SessionProblem)
    assert session_problem({"event": "close", "response": {"status": "ANYTHING"}}) is None


@pytest.mark.parametrize("problem", list(SessionProblem))
def test_receiver_and_intake_rows_apply_the_same_rule(problem: SessionProblem) -> None:
    body = BODIES[problem]
    assert session_problem(body) is problem
    with pytest.raises(Rejected) as refused:
        check_session_body(body)
    assert (refused.value.status, refused.value.reason) == (
        problem.http_status,
        problem.http_message,
    )
    rows, rejected = session_rows([session_delivery(json.dumps(body))])
    assert rows.empty
    assert rejected["reason"].tolist() == [problem.reason]


def test_connection_state_rejects_stored_rows_by_the_same_events() -> None:
    for event in SESSION_EVENTS:
        assert label_problem(event, "SUCCESS", HUMAN, has_time=True) is None
    assert label_problem("open", "SUCCESS", HUMAN, has_time=True) == "unknown event 'open'"
    stored = pd.DataFrame(
        [
            {
                "delivery_digest": "d1",
                "received_at": pd.Timestamp("2024-05-01T12:00:00Z"),
                "session_at": pd.Timestamp("2024-05-01T12:00:00Z"),
                "event": "open",
                "status": "SUCCESS",
                "client_user_id": "user-7",
                "human_id": HUMAN,
                "payload": '{"status": "SUCCESS", "currentConnections": []}',
            }
        ]
    )
    assert malformed_sessions(stored)["reason"].tolist() == ["unknown event 'open'"]
