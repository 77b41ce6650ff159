"""Landed deliveries → table rows (pure: no Dagster, no DuckDB).

`notification_rows` feeds `ops.notifications`, `session_rows` feeds `connect.session_responses`;
both also return `ops.rejected_records` rows for what they cannot use, so that
received = rows + rejected, always.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from sync_pipeline.intake.checks import SESSION_EVENTS
from sync_pipeline.intake.landing import LandedDelivery
from sync_pipeline.upstream.endpoints import Endpoint, endpoint_for_path

# The real upstream's public origin; a payload may also name the configured SYNC_API_URL.
UPSTREAM_ORIGIN = "https://api.humanapi.co"
NOTIFICATIONS_TABLE = "ops.notifications"
SESSIONS_TABLE = "connect.session_responses"
ACTIONS = frozenset({"created", "updated"})
# Ids end up in upstream URL paths (".../<path>/<id>"): nothing that could change the path.
ID_PATTERN = r"[A-Za-z0-9_-]{1,64}"
_ID = re.compile(ID_PATTERN)

_STRING = pd.StringDtype()
_INSTANT = pd.DatetimeTZDtype(unit="us", tz="UTC")

NOTIFICATION_COLUMNS: dict[str, Any] = {
    "notification_id": _STRING,
    "delivery_digest": _STRING,
    "human_id": _STRING,
    "endpoint": _STRING,
    "table_name": _STRING,
    "object_id": _STRING,
    "action": _STRING,
    "model": _STRING,
    "type": _STRING,
    "updated_at": _INSTANT,
    "received_at": _INSTANT,
    "status": _STRING,
}
SESSION_COLUMNS: dict[str, Any] = {
    "delivery_digest": _STRING,
    "received_at": _INSTANT,
    "session_at": _INSTANT,
    "event": _STRING,
    "status": _STRING,
    "client_user_id": _STRING,
    "human_id": _STRING,
    "payload": _STRING,
}
REJECTED_COLUMNS: dict[str, Any] = {
    "table_name": _STRING,
    "human_id": _STRING,
    "record_id": _STRING,
    "reason": _STRING,
    "raw": _STRING,
}


def _frame(columns: dict[str, Any], data: dict[str, Sequence[Any] | pd.Series]) -> pd.DataFrame:
    return pd.DataFrame({name: data.get(name, []) for name in columns}).astype(columns)


def _rejected(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return _frame(
        REJECTED_COLUMNS, {name: [row[name] for row in rows] for name in REJECTED_COLUMNS}
    )


# --- notifications ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int
    prefix: str  # path prefix up to and including "/v1/human/"


def _origin(base_url: str) -> _Origin:
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    prefix = parts.path.rstrip("/") + "/v1/human/"
    return _Origin(parts.scheme, (parts.hostname or "").lower(), port, prefix)


@dataclass(frozen=True)
class _Resolved:
    endpoint: Endpoint | None
    id_in_url: str | None  # the ".../<path>/<id>" form names one record
    problem: str | None


def _resolve(url: object, origins: Sequence[_Origin]) -> _Resolved:
    """Map a payload's endpoint URL to a known endpoint, or say why not."""
    if not isinstance(url, str) or not url:
        return _Resolved(None, None, "missing endpoint")
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return _Resolved(None, None, "endpoint is not a URL")
    host = (parts.hostname or "").lower()
    candidates = [o for o in origins if (o.scheme, o.host, o.port) == (parts.scheme, host, port)]
    if not candidates:
        return _Resolved(None, None, "endpoint host is not the upstream")
    for origin in candidates:
        if not parts.path.startswith(origin.prefix):
            continue
        rest = parts.path[len(origin.prefix) :].rstrip("/")
        endpoint = endpoint_for_path(rest)
        if endpoint is not None:
            return _Resolved(endpoint, None, None)
        head, _, record_id = rest.rpartition("/")
        endpoint = endpoint_for_path(head) if head else None
        if endpoint is not None and _ID.fullmatch(record_id):
            return _Resolved(endpoint, record_id, None)
    return _Resolved(None, None, "endpoint path is not a known record endpoint")


def _text_or_none(values: Iterable[object]) -> list[str | None]:
    return [v if isinstance(v, str) else None for v in values]


def notification_rows(
    deliveries: Iterable[LandedDelivery], api_url: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ops.notifications rows, ops.rejected_records rows): one per received notification item."""
    origins = [_origin(UPSTREAM_ORIGIN), _origin(api_url)]
    whole_rejects: list[dict[str, Any]] = []
    ids: list[str] = []
    digests: list[str] = []
    received: list[dt.datetime] = []
    items: list[Any] = []
    for delivery in deliveries:
        try:
            document = json.loads(delivery.body)
        except ValueError:
            document = None
        if not isinstance(document, list):
            whole_rejects.append(
                {
                    "table_name": NOTIFICATIONS_TABLE,
                    "human_id": None,
                    "record_id": delivery.digest,
                    "reason": "delivery body is not a JSON array",
                    "raw": delivery.body,
                }
            )
            continue
        for index, item in enumerate(document):
            ids.append(f"{delivery.digest}:{index}")
            digests.append(delivery.digest)
            received.append(delivery.received_at)
            items.append(item)

    objects = [item if isinstance(item, dict) else {} for item in items]
    human_raw = pd.Series(_text_or_none(o.get("humanId") for o in objects), dtype=_STRING)
    object_raw = pd.Series(_text_or_none(o.get("objectId") for o in objects), dtype=_STRING)
    action = pd.Series(_text_or_none(o.get("action") for o in objects), dtype=_STRING)
    updated_at = pd.to_datetime(
        pd.Series(_text_or_none(o.get("updatedAt") for o in objects), dtype=object),
        utc=True,
        errors="coerce",
        format="ISO8601",
    ).astype(_INSTANT)
    # few distinct endpoint URLs per batch: resolve each once
    endpoint_urls = [o.get("endpoint") for o in objects]
    cache: dict[str, _Resolved] = {}
    for url in endpoint_urls:
        if isinstance(url, str) and url not in cache:
            cache[url] = _resolve(url, origins)
    resolved = [cache[u] if isinstance(u, str) else _resolve(u, origins) for u in endpoint_urls]

    def valid_id(values: pd.Series) -> np.ndarray:
        return np.asarray(values.str.fullmatch(ID_PATTERN).fillna(False), dtype=bool)

    id_in_url = pd.Series([r.id_in_url for r in resolved], dtype=_STRING)
    # (mask, reason) in priority order; a row gets the reason of its first problem
    problems: list[tuple[np.ndarray, Any]] = [
        (np.array([not isinstance(i, dict) for i in items], dtype=bool), "item is not an object"),
        (np.asarray(human_raw.isna(), dtype=bool), "missing humanId"),
        (~valid_id(human_raw), "humanId is not an id"),
        (np.asarray(object_raw.isna(), dtype=bool), "missing objectId"),
        (~valid_id(object_raw), "objectId is not an id"),
        (~np.asarray(action.isin(list(ACTIONS)).fillna(False), dtype=bool), "unknown action"),
    ]
    endpoint_problem = np.array([r.problem or "" for r in resolved], dtype=object)
    problems.append((endpoint_problem != "", endpoint_problem))
    problems.append(
        (
            np.asarray((id_in_url.notna() & (id_in_url != object_raw)).fillna(False), dtype=bool),
            "endpoint id does not match objectId",
        )
    )
    problems.append((np.asarray(updated_at.isna(), dtype=bool), "missing or invalid updatedAt"))
    reason = np.select(
        [mask for mask, _ in problems],
        [text for _, text in problems],
        default="",
    )
    rejected_mask = reason != ""

    every_item = _frame(
        NOTIFICATION_COLUMNS,
        {
            "notification_id": ids,
            "delivery_digest": digests,
            "human_id": human_raw,
            "endpoint": [r.endpoint.path if r.endpoint else None for r in resolved],
            "table_name": [r.endpoint.table if r.endpoint else None for r in resolved],
            "object_id": object_raw,
            "action": action,
            "model": _text_or_none(o.get("model") for o in objects),
            "type": _text_or_none(o.get("type") for o in objects),
            "updated_at": updated_at,
            "received_at": pd.Series(received, dtype=object),
            "status": ["received"] * len(ids),
        },
    )
    rows = every_item[~rejected_mask].reset_index(drop=True)
    item_rejects = [
        {
            "table_name": NOTIFICATIONS_TABLE,
            "human_id": human_raw.iloc[i] if pd.notna(human_raw.iloc[i]) else None,
            "record_id": object_raw.iloc[i] if pd.notna(object_raw.iloc[i]) else ids[i],
            "reason": reason[i],
            "raw": json.dumps(items[i], ensure_ascii=False),
        }
        for i in np.flatnonzero(rejected_mask)
    ]
    return rows, _rejected(whole_rejects + item_rejects)


# --- sessions --------------------------------------------------------------------------------


def member_text(document: str, key: str) -> str | None:
    """The JSON text of top-level member `key` of a JSON object, exactly as it appears.

    Re-serialising would change the bytes; analysts get the payload as the front end sent it.
    The last occurrence wins, as with `json.loads`.
    """
    decoder = json.JSONDecoder()
    whitespace = re.compile(r"[ \t\n\r]*")

    def skip(at: int) -> int:
        match = whitespace.match(document, at)
        return match.end() if match else at

    at = skip(0)
    if document[at : at + 1] != "{":
        return None
    at = skip(at + 1)
    found: str | None = None
    while document[at : at + 1] not in ("}", ""):
        name, at = decoder.raw_decode(document, at)
        at = skip(at)
        if document[at : at + 1] != ":":
            return None
        start = skip(at + 1)
        _, end = decoder.raw_decode(document, start)
        if name == key:
            found = document[start:end]
        at = skip(end)
        if document[at : at + 1] == ",":
            at = skip(at + 1)
    return found


def _session_problem(document: Any, claims: dict[str, Any] | None) -> str | None:
    if not isinstance(document, dict):
        return "body is not a JSON object"
    if document.get("event") not in SESSION_EVENTS:
        return "unknown event"
    response = document.get("response")
    if not isinstance(response, dict):
        return "response is not an object"
    if not isinstance(response.get("status"), str) or not response["status"]:
        return "missing response status"
    if claims is None or not all(
        isinstance(claims.get(c), str) and claims[c] for c in ("client_user_id", "human_id")
    ):
        return "missing token claims"
    return None


def session_rows(deliveries: Iterable[LandedDelivery]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(connect.session_responses rows, ops.rejected_records rows): one per landed delivery."""
    rows: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    for delivery in deliveries:
        try:
            document = json.loads(delivery.body)
        except ValueError:
            document = None
        claims = delivery.claims
        problem = _session_problem(document, claims)
        if problem is not None:
            human_id = claims.get("human_id") if claims else None
            rejects.append(
                {
                    "table_name": SESSIONS_TABLE,
                    "human_id": human_id if isinstance(human_id, str) else None,
                    "record_id": delivery.digest,
                    "reason": problem,
                    "raw": delivery.body,
                }
            )
            continue
        assert claims is not None  # checked by _session_problem
        issued = claims.get("iat")
        session_at = (
            dt.datetime.fromtimestamp(issued, dt.UTC)
            if isinstance(issued, int | float) and not isinstance(issued, bool)
            else delivery.received_at
        )
        rows.append(
            {
                "delivery_digest": delivery.digest,
                "received_at": delivery.received_at,
                "session_at": session_at,
                "event": document["event"],
                "status": document["response"]["status"],
                "client_user_id": claims["client_user_id"],
                "human_id": claims["human_id"],
                "payload": member_text(delivery.body, "response"),
            }
        )
    session_frame = _frame(
        SESSION_COLUMNS,
        {name: pd.Series([row[name] for row in rows], dtype=object) for name in SESSION_COLUMNS},
    )
    return session_frame, _rejected(rejects)
