import datetime as dt
import json
from typing import Any

import pandas as pd
import pytest

from sync_pipeline.intake.landing import LandedDelivery
from sync_pipeline.intake.rows import (
    NOTIFICATION_COLUMNS,
    REJECTED_COLUMNS,
    SESSION_COLUMNS,
    member_text,
    notification_rows,
    session_rows,
)

API_URL = "http://127.0.0.1:8700"
RECEIVED = dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
HUMAN = "2f8b6c3a9d4e5f60718293a4b5c6d7e8"
OBJECT = "5a1b2c3d4e5f60718293a4b5"


def item(**overrides: Any) -> dict[str, Any]:
    base = {
        "humanId": HUMAN,
        "updatedAt": "2024-05-01T11:59:58.250Z",
        "endpoint": "https://api.humanapi.co/v1/human/medical/test_results",
        "type": "medical",
        "model": "testResult",
        "action": "created",
        "objectId": OBJECT,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def notification_delivery(items: Any, digest: str = "d1") -> LandedDelivery:
    body = items if isinstance(items, str) else json.dumps(items)
    return LandedDelivery(digest, "notifications", RECEIVED, {}, body, None)


def test_a_valid_item_becomes_one_typed_row() -> None:
    rows, rejected = notification_rows([notification_delivery([item()])], API_URL)
    assert rejected.empty
    assert dict(rows.dtypes) == NOTIFICATION_COLUMNS
    assert rows.to_dict("records") == [
        {
            "notification_id": "d1:0",
            "delivery_digest": "d1",
            "human_id": HUMAN,
            "endpoint": "medical/test_results",
            "table_name": "medical.test_results",
            "object_id": OBJECT,
            "action": "created",
            "model": "testResult",
            "type": "medical",
            "updated_at": pd.Timestamp("2024-05-01T11:59:58.250Z"),
            "received_at": pd.Timestamp(RECEIVED),
            # no status: that is the record sync's (ops.notification_status); the view
            # ops.notifications shows 'received' until a sync handles the item
        }
    ]


@pytest.mark.parametrize(
    ("endpoint", "path", "table"),
    [
        ("https://api.humanapi.co/v1/human/medical/vitals", "medical/vitals", "medical.vitals"),
        (
            f"https://api.humanapi.co/v1/human/medical/vitals/{OBJECT}",
            "medical/vitals",
            "medical.vitals",
        ),
        (
            "https://API.humanapi.co:443/v1/human/activities/summaries",
            "activities/summaries",
            "wellness.activity_summaries",
        ),
        (f"{API_URL}/v1/human/heart_rate/readings/", "heart_rate/readings", "wellness.heart_rate"),
        (f"{API_URL}/v1/human/activities/{OBJECT}", "activities", "wellness.activities"),
    ],
)
def test_endpoint_urls_map_to_tables(endpoint: str, path: str, table: str) -> None:
    rows, rejected = notification_rows([notification_delivery([item(endpoint=endpoint)])], API_URL)
    assert rejected.empty, rejected.to_dict("records")
    assert (rows.loc[0, "endpoint"], rows.loc[0, "table_name"]) == (path, table)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"humanId": None}, "missing humanId"),
        ({"humanId": 42}, "missing humanId"),
        ({"humanId": "../../admin"}, "humanId is not an id"),
        ({"objectId": None}, "missing objectId"),
        ({"objectId": "a/b"}, "objectId is not an id"),
        ({"action": "deleted"}, "unknown action"),
        ({"endpoint": None}, "missing endpoint"),
        (
            {"endpoint": "https://evil.example/v1/human/medical/test_results"},
            "endpoint host is not the upstream",
        ),
        (
            {"endpoint": "http://api.humanapi.co/v1/human/medical/test_results"},
            "endpoint host is not the upstream",
        ),
        (
            {"endpoint": "https://api.humanapi.co@evil.example/v1/human/sleeps"},
            "endpoint host is not the upstream",
        ),
        (
            {"endpoint": "http://127.0.0.1:8799/v1/human/sleeps"},
            "endpoint host is not the upstream",
        ),
        ({"endpoint": "https://api.humanapi.co:99999/v1/human/sleeps"}, "endpoint is not a URL"),
        (
            {"endpoint": "https://api.humanapi.co/v1/human/medical/secrets"},
            "endpoint path is not a known record endpoint",
        ),
        (
            {"endpoint": "https://api.humanapi.co/v2/human/sleeps"},
            "endpoint path is not a known record endpoint",
        ),
        (
            {"endpoint": "https://api.humanapi.co/v1/human/sources"},
            "endpoint path is not a known record endpoint",
        ),
        (
            {"endpoint": "https://api.humanapi.co/v1/human/sleeps/ffff00001111222233334444"},
            "endpoint id does not match objectId",
        ),
        ({"updatedAt": None}, "missing or invalid updatedAt"),
        ({"updatedAt": "yesterday"}, "missing or invalid updatedAt"),
        ({"updatedAt": 1714564798}, "missing or invalid updatedAt"),
    ],
)
def test_unusable_items_are_rejected_with_a_specific_reason(
    overrides: dict[str, Any], reason: str
) -> None:
    bad = item(**overrides) if overrides else item()
    for key, value in overrides.items():
        if value is None:
            bad.pop(key, None)
    rows, rejected = notification_rows([notification_delivery([item(), bad])], API_URL)
    assert len(rows) == 1 and rows.loc[0, "notification_id"] == "d1:0"
    assert dict(rejected.dtypes) == REJECTED_COLUMNS
    record = rejected.to_dict("records")[0]
    assert record["reason"] == reason
    assert record["table_name"] == "ops.notifications"
    assert json.loads(record["raw"]) == bad
    assert record["record_id"] == "d1:1"  # the notification_id: one per received item


def test_received_items_equal_rows_plus_rejected() -> None:
    deliveries = [
        notification_delivery([item(), item(action="gone"), "not an object", item()], "a"),
        notification_delivery("{not json", "b"),
        notification_delivery({"an": "object"}, "c"),
        notification_delivery([], "d"),
        notification_delivery([item(humanId=None)] * 3, "e"),
    ]
    rows, rejected = notification_rows(deliveries, API_URL)
    assert (len(rows), len(rejected)) == (2, 2 + 2 + 3)
    assert set(rows["notification_id"]) == {"a:0", "a:3"}
    whole = rejected[rejected["record_id"].isin(["b", "c"])]
    assert list(whole["reason"]) == ["delivery body is not a JSON array"] * 2
    assert list(whole["raw"]) == ["{not json", '{"an": "object"}']


def test_no_deliveries_give_empty_typed_frames() -> None:
    rows, rejected = notification_rows([], API_URL)
    assert rows.empty and dict(rows.dtypes) == NOTIFICATION_COLUMNS
    assert rejected.empty and dict(rejected.dtypes) == REJECTED_COLUMNS


def test_a_large_batch_is_processed_in_bulk() -> None:
    items = [item(objectId=f"{i:024x}") for i in range(20_000)] + [item(action="x")]
    rows, rejected = notification_rows([notification_delivery(items)], API_URL)
    assert (len(rows), len(rejected)) == (20_000, 1)
    assert rows["object_id"].is_unique


# --- sessions ---

CLAIMS = {"client_user_id": "user-7", "human_id": HUMAN, "exp": 1_900_000_000, "iat": 1_714_564_790}


def session_delivery(
    body: str, claims: dict[str, Any] | None = CLAIMS, digest: str = "s1"
) -> LandedDelivery:
    return LandedDelivery(digest, "sessions", RECEIVED, {}, body, claims)


def test_a_session_response_becomes_one_row_with_its_payload_as_sent() -> None:
    body = (
        '{"event": "connect_source",\n "response" :  {"status":"CONNECTED_SOURCE", "x": [1,  2]} }'
    )
    rows, rejected = session_rows([session_delivery(body)])
    assert rejected.empty
    assert dict(rows.dtypes) == SESSION_COLUMNS
    assert rows.to_dict("records") == [
        {
            "delivery_digest": "s1",
            "received_at": pd.Timestamp(RECEIVED),
            "session_at": pd.Timestamp("2024-05-01T11:59:50Z"),
            "event": "connect_source",
            "status": "CONNECTED_SOURCE",
            "client_user_id": "user-7",
            "human_id": HUMAN,
            "payload": '{"status":"CONNECTED_SOURCE", "x": [1,  2]}',
        }
    ]


def test_session_at_falls_back_to_the_receive_time() -> None:
    claims = {k: v for k, v in CLAIMS.items() if k != "iat"}
    rows, _ = session_rows(
        [session_delivery('{"event":"close","response":{"status":"SUCCESS"}}', claims)]
    )
    assert rows.loc[0, "session_at"] == pd.Timestamp(RECEIVED)


@pytest.mark.parametrize(
    ("body", "claims", "reason"),
    [
        ("{oops", CLAIMS, "body is not a JSON object"),
        ('["close"]', CLAIMS, "body is not a JSON object"),
        ('{"event":"open","response":{"status":"SUCCESS"}}', CLAIMS, "unknown event"),
        ('{"event":"close","response":"SUCCESS"}', CLAIMS, "response is not an object"),
        ('{"event":"close","response":{}}', CLAIMS, "missing response status"),
        ('{"event":"close","response":{"status":"SUCCESS"}}', None, "missing token claims"),
    ],
)
def test_unusable_session_deliveries_are_rejected(
    body: str, claims: dict[str, Any] | None, reason: str
) -> None:
    rows, rejected = session_rows([session_delivery(body, claims)])
    assert rows.empty and dict(rows.dtypes) == SESSION_COLUMNS
    assert rejected.to_dict("records") == [
        {
            "table_name": "connect.session_responses",
            "human_id": HUMAN if claims else None,
            "record_id": "s1",
            "reason": reason,
            "raw": body,
        }
    ]


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ('{"response":{"a":"}"},"response2":1}', '{"a":"}"}'),
        ('{"a":1,"response":[1, {"b":null}]}', '[1, {"b":null}]'),
        ('{"response":1,"response":"last"}', '"last"'),
        ('{"other":1}', None),
        ("[1]", None),
    ],
)
def test_member_text_is_the_exact_source_text(document: str, expected: str | None) -> None:
    assert member_text(document, "response") == expected
