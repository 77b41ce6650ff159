"""connection_history and connection_events from sequences of Connect deliveries."""

from __future__ import annotations

import random
from itertools import permutations
from typing import Any

import pandas as pd
import pytest

from sync_pipeline.connect import connection_events, connection_history, current_connections, users
from sync_pipeline_tests.connect.builders import (
    FITBIT,
    HUMAN,
    MOVES,
    OTHER_HUMAN,
    OTHER_USER,
    USER,
    WITHINGS,
    at,
    delivery,
    sessions_frame,
)

# connect Fitbit, connect Withings, disconnect Fitbit, an expired session whose payload would
# close everything if it were applied, a late arrival (connect Moves, received last), a SUCCESS
# close whose currentConnections omits the open Withings, then Fitbit again; plus duplicates.
STORY = [
    delivery("d1", "10:00", "connect_source", connected=[FITBIT]),
    delivery("d2", "11:00", "connect_source", connected=[WITHINGS]),
    delivery("d3", "12:00", "disconnect_source", disconnected=[FITBIT]),
    delivery("d4", "12:30", "close", status="SESSION_TOKEN_EXPIRED", current=[]),
    delivery("d6", "14:00", "close", current=[MOVES]),
    delivery("d7", "15:00", "close", connected=[FITBIT], current=[MOVES, FITBIT]),
    delivery("d2", "11:00", "connect_source", connected=[WITHINGS], received_at="16:00"),
    delivery("d2-again", "11:00", "connect_source", connected=[WITHINGS], received_at="16:05"),
    delivery("d5", "13:00", "connect_source", connected=[MOVES], received_at="17:00"),
]

STORY_HISTORY = [
    (FITBIT, "10:00", "12:00", "d1", "d3"),
    (FITBIT, "15:00", None, "d7", None),
    (WITHINGS, "11:00", "14:00", "d2", "d6"),
    (MOVES, "13:00", None, "d5", None),
]

STORY_EVENTS = [
    (FITBIT, "connected", "CONNECTED_SOURCE", "connect_source", "10:00", "d1"),
    (WITHINGS, "connected", "CONNECTED_SOURCE", "connect_source", "11:00", "d2"),
    (FITBIT, "disconnected", "DISCONNECTED_SOURCE", "disconnect_source", "12:00", "d3"),
    (MOVES, "connected", "CONNECTED_SOURCE", "connect_source", "13:00", "d5"),
    (FITBIT, "connected", "SUCCESS", "close", "15:00", "d7"),
]


def history_rows(
    rows: list[tuple[dict[str, str], str, str | None, str, str | None]], human_id: str = HUMAN
) -> list[dict[str, Any]]:
    return [
        {
            "human_id": human_id,
            "source_id": source["id"],
            "source_name": source["name"],
            "valid_from": at(valid_from),
            "valid_to": at(valid_to) if valid_to else None,
            "opened_by": opened_by,
            "closed_by": closed_by,
        }
        for source, valid_from, valid_to, opened_by, closed_by in rows
    ]


def assert_history(actual: pd.DataFrame, expected: list[dict[str, Any]]) -> None:
    expected_frame = pd.DataFrame(expected, columns=list(actual.columns)).astype(
        actual.dtypes.to_dict()
    )
    expected_frame = expected_frame.sort_values(
        ["human_id", "source_id", "valid_from"], ignore_index=True
    )
    pd.testing.assert_frame_equal(actual, expected_frame)


def test_story_history_has_exact_validity_intervals() -> None:
    history = connection_history(sessions_frame(STORY))

    assert_history(history, history_rows(STORY_HISTORY))
    assert str(history["valid_from"].dtype) == "datetime64[us, UTC]"


def test_story_events_are_the_reported_changes_once_each() -> None:
    events = connection_events(sessions_frame(STORY))

    expected = [
        {
            "human_id": HUMAN,
            "client_user_id": USER,
            "source_id": source["id"],
            "source_name": source["name"],
            "change": change,
            "session_status": status,
            "event": event,
            "session_at": at(session_at),
            "delivery_digest": digest,
        }
        for source, change, status, event, session_at, digest in STORY_EVENTS
    ]
    assert events.to_dict("records") == expected


def test_current_connections_are_the_open_rows() -> None:
    current = current_connections(connection_history(sessions_frame(STORY)))

    assert sorted(current["source_name"]) == ["Fitbit", "Moves"]


def outputs(rows: list[dict[str, Any]]) -> list[pd.DataFrame]:
    frame = sessions_frame(rows)
    return [connection_history(frame), connection_events(frame), users(frame)]


def assert_same_outputs(rows: list[dict[str, Any]], baseline: list[pd.DataFrame]) -> None:
    for actual, expected in zip(outputs(rows), baseline, strict=True):
        pd.testing.assert_frame_equal(actual, expected)


def test_every_order_of_a_small_set_gives_the_same_outputs() -> None:
    # includes a duplicate payload under a new digest and two deliveries of one instant (the
    # connect callback and the close of one Connect session); the story shuffles cover the rest
    rows = [
        delivery("c", "10:00", "connect_source", connected=[FITBIT]),
        delivery("b", "10:00", "close", current=[FITBIT, WITHINGS]),
        delivery("a", "12:00", "close", current=[WITHINGS]),
        delivery("z", "12:00", "close", current=[WITHINGS]),
        delivery("e", "11:00", "disconnect_source", disconnected=[WITHINGS]),
    ]
    baseline = outputs(rows)
    for order in permutations(rows):
        assert_same_outputs(list(order), baseline)


def test_shuffles_of_the_story_give_the_same_outputs() -> None:
    baseline = outputs(STORY)
    shuffler = random.Random(20260301)
    for _ in range(50):
        rows = list(STORY)
        shuffler.shuffle(rows)
        assert_same_outputs(rows, baseline)


def test_close_ranks_after_the_deltas_of_the_same_instant() -> None:
    # the close's digest sorts first, so only the event rank puts it after the connect
    rows = [
        delivery("ffff", "10:00", "connect_source", connected=[FITBIT]),
        delivery("0000", "10:00", "close", current=[]),
    ]

    history = connection_history(sessions_frame(rows))

    assert_history(history, history_rows([(FITBIT, "10:00", "10:00", "ffff", "0000")]))


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        pytest.param(
            [
                delivery("d1", "10:00", "connect_source", connected=[FITBIT]),
                delivery("d2", "11:00", "connect_source", connected=[FITBIT]),
                delivery("d3", "12:00", "close", connected=[FITBIT], current=[FITBIT]),
            ],
            [(FITBIT, "10:00", None, "d1", None)],
            id="connecting-an-open-source-keeps-its-row",
        ),
        pytest.param(
            [
                delivery("d1", "10:00", "disconnect_source", disconnected=[WITHINGS]),
                delivery("d2", "11:00", "connect_source", connected=[FITBIT]),
                delivery("d3", "12:00", "disconnect_source", disconnected=[WITHINGS]),
            ],
            [(FITBIT, "11:00", None, "d2", None)],
            id="disconnecting-a-source-that-is-not-open-changes-nothing",
        ),
        pytest.param(
            [
                delivery("d1", "10:00", "connect_source", connected=[FITBIT]),
                delivery("d2", "11:00", "close", current=[WITHINGS]),
            ],
            [(FITBIT, "10:00", "11:00", "d1", "d2"), (WITHINGS, "11:00", None, "d2", None)],
            id="current-connections-close-the-missing-and-open-the-new",
        ),
        pytest.param(
            [
                delivery("d1", "10:00", "connect_source", connected=[FITBIT]),
                delivery("d2", "11:00", "close", connected=[WITHINGS]),
            ],
            [(FITBIT, "10:00", None, "d1", None), (WITHINGS, "11:00", None, "d2", None)],
            id="a-close-without-current-connections-applies-only-its-deltas",
        ),
        pytest.param(
            [
                delivery("d1", "10:00", "connect_source", connected=[FITBIT]),
                delivery("d2", "11:00", "close", disconnected=[FITBIT], current=[FITBIT]),
            ],
            [(FITBIT, "10:00", "11:00", "d1", "d2"), (FITBIT, "11:00", None, "d2", None)],
            id="deltas-apply-before-current-connections",
        ),
        pytest.param(
            [
                delivery("d1", "10:00", "connect_source", connected=[FITBIT]),
                *(
                    delivery(f"x{i}", "11:00", "close", status=status, current=[])
                    for i, status in enumerate(
                        ["SESSION_TOKEN_INVALID", "SESSION_TOKEN_EXPIRED", "MISSING_SESSION_TOKEN"]
                    )
                ),
            ],
            [(FITBIT, "10:00", None, "d1", None)],
            id="abnormal-sessions-change-nothing",
        ),
        pytest.param(
            [
                delivery("d1", "10:00", "connect_source", connected=[FITBIT]),
                delivery("d2", "11:00", "connect_source", status="SUCCESS", current=[]),
            ],
            [(FITBIT, "10:00", None, "d1", None)],
            id="current-connections-outside-a-close-are-not-the-full-state",
        ),
    ],
)
def test_state_rules(
    rows: list[dict[str, Any]],
    expected: list[tuple[dict[str, str], str, str | None, str, str | None]],
) -> None:
    assert_history(connection_history(sessions_frame(rows)), history_rows(expected))


def test_humans_are_independent() -> None:
    rows = [
        delivery("d1", "10:00", "connect_source", connected=[FITBIT]),
        delivery(
            "d2",
            "11:00",
            "close",
            current=[],
            human_id=OTHER_HUMAN,
            client_user_id=OTHER_USER,
        ),
    ]

    history = connection_history(sessions_frame(rows))

    assert_history(history, history_rows([(FITBIT, "10:00", None, "d1", None)]))


def test_a_disconnect_of_a_source_that_is_not_open_is_still_an_event() -> None:
    rows = [delivery("d1", "10:00", "disconnect_source", disconnected=[WITHINGS])]

    events = connection_events(sessions_frame(rows))

    assert events[["source_id", "change"]].to_dict("records") == [
        {"source_id": WITHINGS["id"], "change": "disconnected"}
    ]


def test_abnormal_sessions_produce_no_events() -> None:
    rows = [delivery("d1", "10:00", "close", status="SESSION_TOKEN_EXPIRED", connected=[FITBIT])]

    assert connection_events(sessions_frame(rows)).empty


def test_no_sessions_give_typed_empty_tables() -> None:
    empty = sessions_frame([])

    history = connection_history(empty)
    events = connection_events(empty)

    assert history.empty and events.empty
    assert list(history.columns) == [
        "human_id",
        "source_id",
        "source_name",
        "valid_from",
        "valid_to",
        "opened_by",
        "closed_by",
    ]
    assert str(history["valid_to"].dtype) == "datetime64[us, UTC]"
    assert str(events["session_at"].dtype) == "datetime64[us, UTC]"


def test_missing_columns_are_refused() -> None:
    with pytest.raises(ValueError, match="payload"):
        connection_history(sessions_frame([]).drop(columns=["payload"]))


def test_a_disconnect_received_after_a_close_in_the_same_second_closes_the_source() -> None:
    # JWT iat has one-second resolution: both share session_at, and only the receive order
    # says the disconnect came after the close that still listed the source
    close = delivery("0000", "10:00", "close", connected=[FITBIT], current=[FITBIT])
    disconnect = delivery("ffff", "10:00", "disconnect_source", disconnected=[FITBIT])
    close["received_at"] = at("10:00") + pd.Timedelta(milliseconds=100)
    disconnect["received_at"] = at("10:00") + pd.Timedelta(milliseconds=600)

    for rows in ([close, disconnect], [disconnect, close]):
        history = connection_history(sessions_frame(rows))

        assert_history(history, history_rows([(FITBIT, "10:00", "10:00", "0000", "ffff")]))
        assert current_connections(history).empty
