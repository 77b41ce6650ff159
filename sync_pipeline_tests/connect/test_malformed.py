"""Malformed deliveries change no connection state and are listed for ops.rejected_records."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from sync_pipeline.connect import (
    connection_events,
    connection_history,
    malformed_sessions,
    users,
)
from sync_pipeline_tests.connect.builders import FITBIT, HUMAN, WITHINGS, delivery, sessions_frame

BEFORE = delivery("d1", "10:00", "connect_source", connected=[FITBIT])


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("{not json", "not JSON"),
        ("", "not JSON"),
        ('["SUCCESS"]', "not a JSON object"),
        ('{"status": "SUCCESS", "sessionResults": []}', "sessionResults is not an object"),
        ('{"status": "SUCCESS", "currentConnections": {"id": "x"}}', "not a list"),
        ('{"status": "SUCCESS", "currentConnections": ["fitbit"]}', "not an object"),
        (
            '{"status": "SUCCESS", "currentConnections": [{"name": "Fitbit"}]}',
            "without a source id",
        ),
        (
            json.dumps({"sessionResults": {"connectedSources": [{"name": "W", "id": 5}]}}),
            "without a source id",
        ),
    ],
)
def test_a_malformed_payload_changes_nothing_and_is_rejected(raw: str, reason: str) -> None:
    # if applied, this close would close Fitbit and open Withings
    bad = delivery("bad", "11:00", "close", current=[WITHINGS], connected=[WITHINGS], raw=raw)
    clean = sessions_frame([BEFORE])
    with_bad = sessions_frame([BEFORE, bad])

    pd.testing.assert_frame_equal(connection_history(with_bad), connection_history(clean))
    pd.testing.assert_frame_equal(connection_events(with_bad), connection_events(clean))

    rejected = malformed_sessions(with_bad)
    assert rejected[["table_name", "human_id", "record_id", "raw"]].to_dict("records") == [
        {
            "table_name": "connect.session_responses",
            "human_id": HUMAN,
            "record_id": "bad",
            "raw": raw,
        }
    ]
    assert reason in rejected["reason"].iloc[0]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"status": "SOMETHING_NEW"}, "unknown status"),
        ({"event": "reopen"}, "unknown event"),
        ({"human_id": None}, "no human_id"),
        ({"payload": None}, "missing"),
    ],
)
def test_unusable_labels_change_nothing_and_are_rejected(
    changes: dict[str, str | None], reason: str
) -> None:
    bad = {**delivery("bad", "11:00", "close", current=[WITHINGS]), **changes}
    with_bad = sessions_frame([BEFORE, bad])

    pd.testing.assert_frame_equal(
        connection_history(with_bad), connection_history(sessions_frame([BEFORE]))
    )
    rejected = malformed_sessions(with_bad)
    assert rejected["record_id"].tolist() == ["bad"]
    assert reason in rejected["reason"].iloc[0]


def test_a_malformed_session_still_counts_as_seen() -> None:
    bad = delivery("bad", "11:00", "close", raw="{not json")

    table = users(sessions_frame([BEFORE, bad]))

    assert table["last_seen_at"].tolist() == [pd.Timestamp("2026-03-01T11:00:00Z")]


def test_well_formed_and_abnormal_sessions_are_not_rejected() -> None:
    rows = [
        BEFORE,
        delivery("d2", "11:00", "close", status="MISSING_SESSION_TOKEN"),
        delivery("d3", "12:00", "close", raw='{"status": "SUCCESS"}'),
    ]

    rejected = malformed_sessions(sessions_frame(rows))

    assert rejected.empty
    assert list(rejected.columns) == ["table_name", "human_id", "record_id", "reason", "raw"]


def test_rejections_are_per_delivery_digest() -> None:
    bad = delivery("bad", "11:00", "close", raw="{not json")
    rows = [bad, bad, {**bad, "delivery_digest": "bad-reposted"}]

    rejected = malformed_sessions(sessions_frame(rows))

    assert rejected["record_id"].tolist() == ["bad", "bad-reposted"]
