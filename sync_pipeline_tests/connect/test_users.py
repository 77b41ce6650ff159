"""connect.app_users: one row per app user; connect.users (a view over it and the record sync's
connect.token_refusals): needs_reconnect from refusals and later sessions."""

from __future__ import annotations

from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from sync_pipeline.connect import users
from sync_pipeline.warehouse import db
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


def users_view(app_users: pd.DataFrame, refused: pd.DataFrame | None = None) -> pd.DataFrame:
    """connect.users as the warehouse shows it: connection_state's rows and the sync's
    refusals, written to their tables, read back through the view."""
    with duckdb.connect(":memory:") as con:
        db.ensure_tables(con)
        db.append(con, "connect.app_users", pa.Table.from_pandas(app_users, preserve_index=False))
        if refused is not None:
            db.append(
                con, "connect.token_refusals", pa.Table.from_pandas(refused, preserve_index=False)
            )
        return (
            con.sql("SELECT * FROM connect.users ORDER BY client_user_id")
            .fetch_arrow_table()
            .to_pandas()
        )


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
    table = users_view(users(sessions_frame(rows)), refused)

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
    shown = users_view(table)

    # the SUCCESS session that left a connection (a connect_source callback is not SUCCESS)
    assert table["reconnected_at"].tolist()[0] == at("10:00")
    assert pd.isna(table["reconnected_at"].tolist()[1])  # its SUCCESS left no connection
    assert shown.to_dict("records") == [
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
    table = users(sessions_frame([]))
    shown = users_view(table, refusals("12:00"))

    assert table.empty and shown.empty
    assert list(shown.columns) == [
        "client_user_id",
        "human_id",
        "first_seen_at",
        "last_seen_at",
        "last_session_status",
        "needs_reconnect",
    ]
    assert list(table.columns) == [*shown.columns[:-1], "reconnected_at"]
    assert shown["needs_reconnect"].dtype == bool
