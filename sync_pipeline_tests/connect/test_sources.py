"""source_status_rows on the real 2014 /sources body, and reconcile in both directions."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from starfleet.templates import fixture_root
from sync_pipeline.connect import connection_history, reconcile, source_status_rows
from sync_pipeline_tests.connect.builders import (
    FITBIT,
    HUMAN,
    MOVES,
    OTHER_HUMAN,
    WITHINGS,
    delivery,
    sessions_frame,
)

FIXTURES = Path(str(fixture_root()))
SNAPSHOT_AT = datetime(2026, 3, 1, 18, 0, tzinfo=UTC)
LATER = datetime(2026, 3, 2, 18, 0, tzinfo=UTC)


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text)


@pytest.fixture(scope="module")
def fixture_sources() -> list[dict[str, Any]]:
    sources: list[dict[str, Any]] = json.loads((FIXTURES / "wellness" / "sources.json").read_text())
    return sources


def test_fixture_gives_one_row_per_source_entry(fixture_sources: list[dict[str, Any]]) -> None:
    rows = source_status_rows(HUMAN, fixture_sources, SNAPSHOT_AT)

    assert len(rows) == len(fixture_sources)
    assert (rows["human_id"] == HUMAN).all()
    assert (rows["snapshot_at"] == pd.Timestamp(SNAPSHOT_AT)).all()
    assert [json.loads(raw) for raw in rows["raw"]] == fixture_sources
    assert rows["source"].notna().all()


def test_fixture_fields_are_typed(fixture_sources: list[dict[str, Any]]) -> None:
    rows = source_status_rows(HUMAN, fixture_sources, SNAPSHOT_AT)

    first = rows.iloc[0]
    assert first["source"] == "nike"
    assert first["sync_status"] == "ok"
    assert first["synched_at"] == utc("2014-09-16T22:56:42.628Z")
    assert first["newest_data_at"] == utc("2014-09-16T00:00:00Z")
    assert first["history_sync_status"] == "completed"
    assert first["oldest_data_at"] == utc("1970-01-01T00:00:00Z")
    assert first["connected_since"] == utc("2014-08-26T22:13:32.175Z")
    assert json.loads(first["supported_data_types"]) == ["activities", "sleeps"]
    for column in ("snapshot_at", "synched_at", "newest_data_at", "oldest_data_at"):
        assert str(rows[column].dtype) == "datetime64[us, UTC]"


def test_fixture_entries_without_fields_give_nulls(fixture_sources: list[dict[str, Any]]) -> None:
    rows = source_status_rows(HUMAN, fixture_sources, SNAPSHOT_AT)

    bodymedia = rows[rows["source"] == "bodymedia"].iloc[0]
    assert bodymedia["sync_status"] == "not_started"
    assert pd.isna(bodymedia["synched_at"]) and pd.isna(bodymedia["oldest_data_at"])
    strava = rows[rows["source"] == "strava"]
    assert strava["supported_data_types"].isna().all()


def test_malformed_entries_give_nulls_and_keep_raw() -> None:
    entries: list[Any] = [
        {
            "source": 7,
            "syncStatus": "broken",
            "historySync": {"status": None, "oldestDate": "not a date"},
            "connectedSince": 1403591492088,
            "supportedDataTypes": "activities",
        },
        "junk",
    ]

    rows = source_status_rows(HUMAN, entries, SNAPSHOT_AT)

    data_columns = [c for c in rows.columns if c not in ("human_id", "snapshot_at", "raw")]
    assert rows[data_columns].isna().all().all()
    assert [json.loads(raw) for raw in rows["raw"]] == entries


def test_instants_are_converted_to_utc() -> None:
    rows = source_status_rows(
        HUMAN, [{"source": "fitbit", "connectedSince": "2014-06-16T03:56:19+02:00"}], SNAPSHOT_AT
    )

    assert rows["connected_since"].tolist() == [utc("2014-06-16T01:56:19Z")]


def test_a_naive_snapshot_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        source_status_rows(HUMAN, [], datetime(2026, 3, 1, 18, 0))


def current_for(human_id: str, *sources: dict[str, str]) -> pd.DataFrame:
    rows = [delivery(f"d-{human_id}", "10:00", "close", current=list(sources), human_id=human_id)]
    return connection_history(sessions_frame(rows))


def snapshot(human_id: str, *entries: dict[str, Any], at: datetime = SNAPSHOT_AT) -> pd.DataFrame:
    return source_status_rows(human_id, list(entries), at)


def problems(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    return list(frame.itertuples(index=False, name=None))


def test_reconcile_reports_both_directions_matching_names_loosely() -> None:
    current = current_for(HUMAN, FITBIT, WITHINGS)
    status = snapshot(HUMAN, {"source": "fitbit"}, {"source": "moves"})

    assert problems(reconcile(current, status)) == [
        (HUMAN, "Withings", "connected here, not upstream"),
        (HUMAN, "moves", "connected upstream, not here"),
    ]


def test_reconcile_agrees_when_the_sets_match() -> None:
    current = current_for(HUMAN, FITBIT, MOVES)
    status = snapshot(HUMAN, {"source": "moves"}, {"source": "FitBit"}, {"source": "moves"})

    assert reconcile(current, status).empty


def test_reconcile_matches_on_id_when_the_snapshot_carries_one() -> None:
    renamed = {"name": "Fitbit (renamed)", "id": FITBIT["id"]}
    current = current_for(HUMAN, renamed, WITHINGS)
    status = snapshot(
        HUMAN,
        {"source": "fitbit", "id": FITBIT["id"]},
        {"source": "withings", "id": "ffffffffffffffffffffffff"},
    )

    assert problems(reconcile(current, status)) == [
        (HUMAN, "Withings", "connected here, not upstream"),
        (HUMAN, "withings", "connected upstream, not here"),
    ]


def test_reconcile_uses_only_the_latest_snapshot_and_only_open_rows() -> None:
    history = connection_history(
        sessions_frame(
            [
                delivery("d1", "10:00", "connect_source", connected=[WITHINGS]),
                delivery("d2", "11:00", "close", current=[FITBIT]),
            ]
        )
    )
    status = pd.concat(
        [
            snapshot(HUMAN, {"source": "withings"}),
            snapshot(HUMAN, {"source": "fitbit"}, at=LATER),
        ],
        ignore_index=True,
    )

    assert reconcile(history, status).empty


def test_reconcile_skips_humans_without_a_snapshot() -> None:
    current = pd.concat([current_for(HUMAN, FITBIT), current_for(OTHER_HUMAN, MOVES)])
    status = snapshot(HUMAN, {"source": "fitbit"})

    assert reconcile(current, status).empty


def test_reconcile_of_nothing_is_a_typed_empty_table() -> None:
    answer = reconcile(current_for(HUMAN), snapshot(HUMAN))

    assert answer.empty
    assert list(answer.columns) == ["human_id", "source", "problem"]
