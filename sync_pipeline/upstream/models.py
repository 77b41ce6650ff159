"""Plain values the upstream client hands out: who is synced, what a page holds, what was sent."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class UserRef:
    client_user_id: str  # the app's own user id: what the token endpoint is asked for
    human_id: str  # the upstream's 32-hex id: what notifications and warehouse rows carry


@dataclass(frozen=True)
class UndecodableRecord:
    """An element of a list page that could not be decoded on its own (nested deeper than the
    JSON decoder goes), while the rest of its page could: the normaliser rejects it with
    `reason`, keeping `excerpt` (never the whole element) and the id, if one could be read."""

    reason: str
    size: int  # bytes of the element as sent
    record_id: str | None
    excerpt: str


@dataclass(frozen=True)
class Page:
    # the array's elements as sent: objects, or anything else for the normaliser to reject
    records: list[Any]
    total_count: int | None  # X-Total-Count, when the upstream sent one
    request_id: str  # our X-Request-Id for the request that returned this page
    body_bytes: int = 0  # decompressed size of the response body
    # the body itself when orjson alone decodes it to `records` (the normaliser's worker
    # process reads that instead of pickled records); None when decoding took a fallback
    plain_body: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class RequestAudit:
    """One finished HTTP attempt, as stored in ops.http_requests.

    Attempts of one request share its request_id; (request_id, attempt) is unique.
    """

    request_id: str
    method: str
    path: str  # percent-encoded path only: no host, no query string
    status: int | None  # None when no response arrived (timeout, dropped connection)
    attempt: int  # 1-based, counting every HTTP exchange of the request
    duration_ms: float
    started_at: datetime  # UTC
    rate_limit_limit: int | None
    rate_limit_remaining: int | None
    rate_limit_reset: int | None
    error: str | None  # short reason when the attempt did not succeed
    human_id: str | None
