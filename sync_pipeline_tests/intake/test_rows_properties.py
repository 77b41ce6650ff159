"""Property: whatever a landed delivery holds, the intake row builders never raise, every item
becomes a row or a rejected row (received = loaded + rejected), and what they return can be
stored (Arrow, then DuckDB) as is."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sync_pipeline.intake.landing import LandedDelivery, encode_line, iter_landed
from sync_pipeline.intake.rows import notification_rows, session_rows
from sync_pipeline.intake.text import is_storable

API_URL = "http://127.0.0.1:8700"
RECEIVED = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)

# text with what breaks encoders: lone surrogates, control characters, NUL, non-BMP
nasty_text = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1),
    st.text(alphabet=st.characters(max_codepoint=0x1F), min_size=1),
    st.sampled_from(["\ud800", "a\udfffb", "\x00", "\u2028", "😀\ud83d", "x" * 5000]),
)
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=10**30, max_value=10**300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1e308, -1e308, 5e-324, 2**63, -(2**63) - 1]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, nasty_text)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(nasty_text, children, max_size=4)
    ),
    max_leaves=20,
)


def deep(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


GOOD_ITEM = {
    "humanId": "2f8b6c3a9d4e5f60718293a4b5c6d7e8",
    "updatedAt": "2024-05-01T11:59:58.250Z",
    "endpoint": "https://api.humanapi.co/v1/human/sleeps",
    "type": "wellness",
    "model": "sleep",
    "action": "created",
    "objectId": "5f3c2b1a0f9e8d7c6b5a4938",
}
FIELDS = sorted(GOOD_ITEM)

# a good item with any of its fields replaced by anything
items = st.one_of(
    json_values,
    st.builds(
        lambda overrides: {**GOOD_ITEM, **overrides},
        st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=3),
    ),
    st.builds(lambda depth: {**GOOD_ITEM, "model": deep(depth)}, st.integers(1, 3000)),
)


def dump(value: Any) -> str:
    """JSON text as a sender could post it: escapes for surrogates, deep values allowed."""
    try:
        return json.dumps(value)
    except (ValueError, RecursionError):
        return "[" * 5000  # what a sender could post instead: nested beyond any decoder


bodies = st.one_of(
    st.lists(items, max_size=5).map(dump),
    json_values.map(dump),
    nasty_text,
    st.integers(1, 20_000).map(lambda depth: "[" * depth + "]" * depth),
    st.sampled_from(["1" * 5000, "[" + "9" * 5000 + "]", "[1e999]", "[-1e999]", '["\\ud800"]']),
)
claims = st.one_of(
    st.none(),
    st.dictionaries(nasty_text, json_values, max_size=3),
    st.fixed_dictionaries(
        {
            "client_user_id": st.one_of(nasty_text, json_values),
            "human_id": st.one_of(nasty_text, json_values),
            "iat": st.one_of(numbers, json_values),
            "exp": numbers,
        }
    ),
)
session_documents = st.fixed_dictionaries(
    {
        "event": st.one_of(st.sampled_from(["close", "connect_source", "disconnect_source"])),
        "response": st.one_of(
            json_values,
            st.fixed_dictionaries({"status": st.one_of(nasty_text, json_values)}),
        ),
    }
)
session_bodies = st.one_of(session_documents.map(dump), bodies)


def storable(frame: pd.DataFrame) -> None:
    """The frame converts to Arrow and loads into DuckDB: what the intake assets do with it."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with duckdb.connect() as con:
        con.register("incoming", table)
        assert con.execute("select count(*) from incoming").fetchone() == (len(frame),)


def received_items(bodies: list[str]) -> int:
    count = 0
    for body in bodies:
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            document = None
        count += len(document) if isinstance(document, list) else 1
    return count


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(st.lists(bodies, min_size=1, max_size=4))
def test_notification_rows_never_raise_and_count_every_item(texts: list[str]) -> None:
    deliveries = [
        LandedDelivery(f"d{n}", "notifications", RECEIVED, {}, body, None)
        for n, body in enumerate(texts)
    ]

    rows, rejected = notification_rows(deliveries, API_URL)

    assert len(rows) + len(rejected) == received_items(texts)
    assert rejected["reason"].notna().all() and (rejected["reason"] != "").all()
    storable(rows)
    storable(rejected)


@PROPERTY
@given(st.lists(st.tuples(session_bodies, claims), min_size=1, max_size=4))
def test_session_rows_never_raise_and_count_every_delivery(
    deliveries_in: list[tuple[str, dict[str, Any] | None]],
) -> None:
    deliveries = [
        LandedDelivery(f"s{n}", "sessions", RECEIVED, {}, body, token_claims)
        for n, (body, token_claims) in enumerate(deliveries_in)
    ]

    rows, rejected = session_rows(deliveries)

    assert len(rows) + len(rejected) == len(deliveries)
    assert rejected["reason"].notna().all() and (rejected["reason"] != "").all()
    storable(rows)
    storable(rejected)


@PROPERTY
@given(session_bodies, claims)
def test_any_landed_line_reads_back(body: str, token_claims: dict[str, Any] | None) -> None:
    # a landed line is valid UTF-8 JSON whatever the claims hold (a lone surrogate in a claim
    # used to make the receiver answer 503 forever)
    assume(is_storable(body))  # the receiver decodes bodies from UTF-8 bytes
    delivery = LandedDelivery("d", "sessions", RECEIVED, {}, body, token_claims)
    line = encode_line(delivery)
    assert line.decode("utf-8").endswith("\n")
    assert json.loads(line)["body"] == body


def test_poison_values_from_the_issue_are_rejected_or_repaired_beside_good_ones(
    tmp_path: Any,
) -> None:
    poison_item = {**GOOD_ITEM, "model": "\ud800", "objectId": "0000aaaa0000aaaa0000aaaa"}
    body = json.dumps([GOOD_ITEM, poison_item, {**GOOD_ITEM, "humanId": "\ud800"}])
    rows, rejected = notification_rows(
        [LandedDelivery("d1", "notifications", RECEIVED, {}, body, None)], API_URL
    )
    # the model is a descriptive label: repaired; a humanId routes requests: rejected
    assert rows["model"].tolist() == ["sleep", "\ufffd"]
    assert rejected["reason"].tolist() == ["humanId is not an id"]
    storable(rows)

    good_claims = {"client_user_id": "u1", "human_id": "h1", "iat": 1_772_366_400, "exp": 2**40}
    sessions = [
        LandedDelivery("s1", "sessions", RECEIVED, {}, body_text, good_claims)
        for body_text in [
            '{"event":"close","response":{"status":"\\ud800"}}',
            '{"event":"close","response":{"status":"SUCCESS"}}',
        ]
    ]
    session_frame, session_rejects = session_rows(sessions)
    assert session_frame["status"].tolist() == ["SUCCESS"]
    assert session_rejects["reason"].tolist() == ["response status is not valid text"]
    storable(session_frame)
    # and such a delivery's line lands and reads back (iter_landed is what the assets read)
    day_dir = tmp_path / "landing" / "sessions" / RECEIVED.date().isoformat()
    day_dir.mkdir(parents=True)
    (day_dir / "x.jsonl").write_bytes(b"".join(encode_line(s) for s in sessions[:1]))
    assert [d.body for d in iter_landed(tmp_path, "sessions", RECEIVED.date())] == [
        sessions[0].body
    ]
