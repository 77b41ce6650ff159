"""Property: whatever the stored session responses hold, the connect functions never raise,
each delivery is either used or listed as rejected, and the history stays well-formed."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync_pipeline.connect import (
    connection_events,
    connection_history,
    malformed_sessions,
    users,
)
from sync_pipeline.connect.sessions import distinct_deliveries
from sync_pipeline_tests.connect.builders import FITBIT, MOVES, WITHINGS, delivery, sessions_frame

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["\x00", "\u2028", FITBIT["id"]]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)
sources = st.lists(st.one_of(st.sampled_from([FITBIT, WITHINGS, MOVES]), json_values), max_size=3)
payload_documents = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "status": st.one_of(st.sampled_from(["SUCCESS", "CONNECTED_SOURCE"]), json_values),
            "sessionResults": st.one_of(
                json_values,
                st.fixed_dictionaries(
                    {}, optional={"connectedSources": sources, "disconnectedSources": sources}
                ),
            ),
            "currentConnections": st.one_of(sources, json_values),
        },
    ),
)


def text_of(document: Any) -> str:
    return json.dumps(document)


raw_payloads = st.one_of(
    payload_documents.map(text_of),
    st.text(max_size=20),
    st.sampled_from(["[" * 5000, "1" * 5000, '{"a": 1e999}', "[" * 3000 + "]" * 3000]),
)
deliveries = st.builds(
    lambda n, minute, second_ms, event, status, raw, human: {
        **delivery(
            f"d{n}",
            f"10:{minute:02d}",
            event,
            status=status,
            raw=raw,
            human_id=human,
        ),
        "received_at": pd.Timestamp(f"2026-03-01T10:{minute:02d}:00Z")
        + pd.Timedelta(milliseconds=second_ms),
    },
    st.integers(0, 30),
    st.integers(0, 3),
    st.integers(0, 5000),
    st.sampled_from(["close", "connect_source", "disconnect_source", "open", ""]),
    st.sampled_from(
        ["SUCCESS", "CONNECTED_SOURCE", "DISCONNECTED_SOURCE", "SESSION_TOKEN_EXPIRED", "?"]
    ),
    raw_payloads,
    st.sampled_from(["0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(deliveries, min_size=1, max_size=8))
def test_connect_functions_never_raise_and_account_for_every_delivery(
    rows: list[dict[str, Any]],
) -> None:
    frame = sessions_frame(rows)

    history = connection_history(frame)
    connection_events(frame)
    users(frame)
    rejected = malformed_sessions(frame)

    distinct = distinct_deliveries(frame)
    usable = [s for s in distinct if s.problem is None]
    assert len(usable) + len(rejected) == len(distinct)
    assert rejected["reason"].notna().all()
    closed = history.dropna(subset=["valid_to"])
    assert (closed["valid_to"] >= closed["valid_from"]).all()
    still_open = history[history["valid_to"].isna()]
    assert not still_open.duplicated(["human_id", "source_id"]).any()
