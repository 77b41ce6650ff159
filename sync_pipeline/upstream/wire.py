"""Pure helpers for the upstream's wire format: times, ids in URLs, Link, Retry-After, log previews.

No I/O here, so each rule of contract part A that is about bytes on the wire is testable alone.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx

# Keys whose values are credentials wherever they appear in a body we might log.
SECRET_KEYS = frozenset({"access_token", "refresh_token", "id_token", "client_secret"})
REDACTED = "[redacted]"


def format_upstream_time(moment: datetime) -> str:
    """`updated_since`/`created_since` format: `YYYYMMDDTHHmmssZ` in UTC.

    Naive datetimes are refused: guessing their zone would silently shift a sync window.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("upstream filter times must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def quote_path_segment(value: str) -> str:
    """Quote one path segment so no value (an id from a notification, say) can change the path.

    Slashes, `?`, `#` and spaces are percent-encoded; `.` and `..` would still be collapsed by
    URL normalisation into "this/parent directory", so their dots are encoded too.
    """
    if value == "":
        raise ValueError("an empty id would address the list endpoint instead of a record")
    quoted = quote(value, safe="")
    if set(quoted) == {"."}:
        quoted = "%2E" * len(quoted)
    return quoted


def raw_path(url: httpx.URL) -> str:
    """The path as sent (percent-encoded), without host or query string: safe for logs and audit."""
    return url.raw_path.split(b"?", 1)[0].decode("ascii")


def same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


def resolve_next_link(
    link: str, *, current: httpx.URL, api_base: httpx.URL
) -> tuple[httpx.URL, bool]:
    """The URL to fetch for a `Link: <...>; rel="next"`, and whether it had to be rebuilt.

    Relative links resolve against the page that carried them. A link to any other origin
    (a proxy's internal name, a misconfigured upstream, a hostile response) is rebuilt on the
    configured API origin with the same path and query: the bearer token only ever goes to the
    host we were configured with, and paging still works behind proxies that rewrite hosts.
    """
    target = current.join(link)
    if same_origin(target, api_base):
        return target, False
    rebuilt = api_base.copy_with(raw_path=target.raw_path)
    return rebuilt, True


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from `Retry-After` (delta-seconds or HTTP-date); None if unusable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if seconds != seconds or seconds in (float("inf"), float("-inf")):
            return None
        return max(0.0, seconds)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # RFC 9110 HTTP-dates are GMT; parsedate gives naive for "-0000" style zones.
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def parse_http_date(value: str | None) -> datetime | None:
    """An HTTP-date header (`Date`) as an aware UTC datetime; None if absent or unusable."""
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def redact(value: Any) -> Any:
    """A copy of a JSON value with credential-valued keys replaced, at any depth."""
    if isinstance(value, dict):
        return {k: REDACTED if k in SECRET_KEYS else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def body_preview(content: bytes, max_lines: int) -> str:
    """A response body for a DEBUG log: JSON re-indented and redacted, cut to `max_lines` lines.

    Bodies that are not JSON are not shown at all (only their size): they could be anything,
    including an echo of what we sent.
    """
    if max_lines <= 0:
        return f"<{len(content)} bytes>"
    try:
        parsed = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return f"<{len(content)} bytes, not JSON>"
    lines = json.dumps(redact(parsed), indent=1, ensure_ascii=False).splitlines()
    shown = "\n".join(line[:200] for line in lines[:max_lines])
    if len(lines) > max_lines:
        shown += f"\n... ({len(lines) - max_lines} more lines)"
    return shown
