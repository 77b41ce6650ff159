from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

from sync_pipeline.upstream.wire import (
    REDACTED,
    body_preview,
    format_upstream_time,
    parse_retry_after,
    quote_path_segment,
    raw_path,
    resolve_next_link,
)

NOW = datetime(2024, 3, 5, 12, 0, 0, tzinfo=UTC)
API = httpx.URL("https://api.upstream.test")


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2024, 3, 5, 7, 8, 9, tzinfo=UTC), "20240305T070809Z"),
        # another zone is converted, not relabelled
        (datetime(2024, 3, 5, 1, 0, 0, tzinfo=timezone(timedelta(hours=-5))), "20240305T060000Z"),
        # sub-second precision is dropped, not rounded up into the future
        (datetime(2024, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), "20241231T235959Z"),
    ],
)
def test_format_upstream_time(moment: datetime, expected: str) -> None:
    assert format_upstream_time(moment) == expected


def test_format_upstream_time_refuses_naive() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        format_upstream_time(datetime(2024, 3, 5, 7, 8, 9))


@pytest.mark.parametrize(
    "record_id",
    ["x'); DROP TABLE t;--", "../..", "..", ".", "a/b", "a?b=c#d", "ünï cødé", "%2F"],
)
def test_quoted_id_stays_one_segment_under_the_endpoint(record_id: str) -> None:
    url = httpx.URL(
        f"https://api.upstream.test/v1/human/medical/allergies/{quote_path_segment(record_id)}"
    )
    path = raw_path(url)
    assert path.startswith("/v1/human/medical/allergies/")
    segment = path.removeprefix("/v1/human/medical/allergies/")
    assert "/" not in segment and segment not in ("", ".", "..")
    assert url.query == b""
    assert url.host == "api.upstream.test"


def test_empty_id_is_refused() -> None:
    with pytest.raises(ValueError):
        quote_path_segment("")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("1.5", 1.5),
        (" 7 ", 7.0),
        ("-3", 0.0),
        ("Tue, 05 Mar 2024 12:00:30 GMT", 30.0),
        ("Tue, 05 Mar 2024 11:59:00 GMT", 0.0),  # already past: no wait, never negative
        ("soon", None),
        ("", None),
        ("nan", None),
        ("inf", None),
        ("Tue, 99 Foo 2024 12:00:30 GMT", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == expected


@pytest.mark.parametrize(
    ("link", "expected", "rebuilt"),
    [
        (
            "https://api.upstream.test/v1/human/activities?limit=50&offset=50",
            "https://api.upstream.test/v1/human/activities?limit=50&offset=50",
            False,
        ),
        (
            "/v1/human/activities?limit=50&offset=100",
            "https://api.upstream.test/v1/human/activities?limit=50&offset=100",
            False,
        ),
        (
            "https://evil.example/v1/human/activities?limit=50&offset=50",
            "https://api.upstream.test/v1/human/activities?limit=50&offset=50",
            True,
        ),
        (
            "http://api.upstream.test/v1/human/activities?offset=5",  # downgraded scheme
            "https://api.upstream.test/v1/human/activities?offset=5",
            True,
        ),
        (
            "https://api.upstream.test:8443/v1/human/activities?offset=5",  # other port
            "https://api.upstream.test/v1/human/activities?offset=5",
            True,
        ),
    ],
)
def test_resolve_next_link(link: str, expected: str, rebuilt: bool) -> None:
    current = httpx.URL("https://api.upstream.test/v1/human/activities?limit=50")
    url, was_rebuilt = resolve_next_link(link, current=current, api_base=API)
    assert str(url) == expected
    assert was_rebuilt is rebuilt


def test_body_preview_redacts_credentials_at_any_depth() -> None:
    body = json.dumps(
        {"access_token": "tok-1", "nested": [{"refresh_token": "tok-2"}], "human_id": "h"}
    ).encode()
    preview = body_preview(body, 50)
    assert "tok-1" not in preview and "tok-2" not in preview
    assert preview.count(REDACTED) == 2
    assert '"human_id": "h"' in preview


def test_body_preview_is_cut_to_max_lines() -> None:
    body = json.dumps([{"id": i} for i in range(100)]).encode()
    lines = body_preview(body, 5).splitlines()
    assert len(lines) == 6
    assert lines[-1].startswith("... (")


@pytest.mark.parametrize("body", [b"<html>oops</html>", b"\xff\xfe", b"{cut"])
def test_body_preview_hides_non_json(body: bytes) -> None:
    assert body_preview(body, 5) == f"<{len(body)} bytes, not JSON>"
