"""connect.users: one row per app user, needs_reconnect from refusals and later sessions."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from sync_pipeline.connect import users
from sync_pipeline_tests.connect.builders import (
    FITBIT,
    HUMAN,
    OTHER_HUMAN,
    OTHER_USER,
    USER,
    at,
    delivery,
    sessions_frame,
)

CONNECTED = delivery("d1", "10:00", "close", current=[FITBIT])


def refusals(*times: str, human_id: str = HUMAN) -> pd.DataFrame:
    return pd.DataFrame({"human_id": [human_id] * len(times), "refused_at": [at(t) for t in times]})


@pytest.mark.parametrize(
    ("rows", "refused", "needs_reconnect"),
    [
        pytest.param([CONNECTED], None, False, id="no-refusals"),
        pytest.param([CONNECTED], refusals("12:00"), True, id="refused-after-connecting"),
        pytest.param([CONNECTED], refusals("10:00"), False, id="refused-at-the-session-instant"),
        pytest.param(
            [CONNECTED],
            pd.DataFrame(
                {"human_id": [HUMAN], "refused_at": [at("10:00") + pd.Timedelta("900ms")]}
            ),
            False,
            id="refused-in-the-session-second",
        ),
        pytest.param(
            [CONNECTED],
            pd.DataFrame({"human_id": [HUMAN], "refused_at": [at("10:00") + pd.Timedelta("1s")]}),
            True,
            id="refused-a-second-later",
        ),
        pytest.param([CONNECTED], refusals("09:00"), False, id="refused-before-connecting"),
        pytest.param(
            [CONNECTED, delivery("d2", "13:00", "close", current=[FITBIT])],
            refusals("12:00"),
            False,
            id="cleared-by-a-later-success-with-connections",
        ),
        pytest.param(
            [CONNECTED, delivery("d2", "13:00", "close", connected=[FITBIT])],
            refusals("12:00"),
            False,
            id="cleared-by-reported-connections-when-current-is-absent",
        ),
        pytest.param(
            [CONNECTED, delivery("d2", "13:00", "close", current=[])],
            refusals("12:00"),
            True,
            id="not-cleared-by-a-success-without-connections",
        ),
        pytest.param(
            [CONNECTED, delivery("d2", "13:00", "close", status="SESSION_TOKEN_EXPIRED")],
            refusals("12:00"),
            True,
            id="not-cleared-by-an-abnormal-session",
        ),
        pytest.param(
            [CONNECTED, delivery("d2", "13:00", "close", current=[FITBIT])],
            refusals("12:00", "14:00"),
            True,
            id="refused-again-after-reconnecting",
        ),
        pytest.param(
            [CONNECTED], refusals("12:00", human_id=OTHER_HUMAN), False, id="someone-else-refused"
        ),
        pytest.param(
            [delivery("d1", "10:00", "close", status="SESSION_TOKEN_INVALID")],
            refusals("09:00"),
            True,
            id="refused-and-never-connected",
        ),
    ],
)
def test_needs_reconnect(
    rows: list[dict[str, Any]], refused: pd.DataFrame | None, needs_reconnect: bool
) -> None:
    table = users(sessions_frame(rows), refused)

    assert table["needs_reconnect"].tolist() == [needs_reconnect]
    assert table["needs_reconnect"].dtype == bool


def test_one_row_per_user_with_first_last_and_latest_status() -> None:
    rows = [
        delivery("d3", "15:00", "close", status="SESSION_TOKEN_EXPIRED"),
        CONNECTED,
        delivery("d2", "12:00", "connect_source", connected=[FITBIT]),
        delivery(
            "e1", "11:00", "close", current=[], human_id=OTHER_HUMAN, client_user_id=OTHER_USER
        ),
    ]

    table = users(sessions_frame(rows))

    assert table.to_dict("records") == [
        {
            "client_user_id": USER,
            "human_id": HUMAN,
            "first_seen_at": at("10:00"),
            "last_seen_at": at("15:00"),
            "last_session_status": "SESSION_TOKEN_EXPIRED",
            "needs_reconnect": False,
        },
        {
            "client_user_id": OTHER_USER,
            "human_id": OTHER_HUMAN,
            "first_seen_at": at("11:00"),
            "last_seen_at": at("11:00"),
            "last_session_status": "SUCCESS",
            "needs_reconnect": False,
        },
    ]


def test_no_sessions_give_a_typed_empty_table() -> None:
    table = users(sessions_frame([]), refusals("12:00"))

    assert table.empty
    assert list(table.columns) == [
        "client_user_id",
        "human_id",
        "first_seen_at",
        "last_seen_at",
        "last_session_status",
        "needs_reconnect",
    ]
    assert table["needs_reconnect"].dtype == bool
