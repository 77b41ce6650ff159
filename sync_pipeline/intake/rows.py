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

import pandas as pd

from sync_pipeline.intake.landing import LandedDelivery
from sync_pipeline.intake.session_rules import session_problem
from sync_pipeline.intake.text import is_storable, json_text, repaired, storable_or_none
from sync_pipeline.tables.connect import SESSION_RESPONSES
from sync_pipeline.tables.frames import pandas_dtypes, typed_frame
from sync_pipeline.tables.ops import NOTIFICATIONS, REJECT_INPUT
from sync_pipeline.tables.registry import table
from sync_pipeline.upstream.endpoints import Endpoint, endpoint_for_path

# The real upstream's public origin; a payload may also name the configured SYNC_API_URL.
UPSTREAM_ORIGIN = "https://api.humanapi.co"
NOTIFICATIONS_TABLE = NOTIFICATIONS
SESSIONS_TABLE = SESSION_RESPONSES
ACTIONS = frozenset({"created", "updated"})
# Ids end up in upstream URL paths (".../<path>/<id>"): nothing that could change the path.
ID_PATTERN = r"[A-Za-z0-9_-]{1,64}"
_ID = re.compile(ID_PATTERN)

# What the intake fills in: ops.notifications' sync columns (status aside) are set by the sync
_NOTIFICATION_INPUT = table(NOTIFICATIONS_TABLE).projection(
    (
        "notification_id",
        "delivery_digest",
        "human_id",
        "endpoint",
        "table_name",
        "object_id",
        "action",
        "model",
        "type",
        "updated_at",
        "received_at",
        "status",
    )
)
NOTIFICATION_COLUMNS: dict[str, Any] = pandas_dtypes(_NOTIFICATION_INPUT)
SESSION_COLUMNS: dict[str, Any] = pandas_dtypes(table(SESSIONS_TABLE))
REJECTED_COLUMNS: dict[str, Any] = pandas_dtypes(REJECT_INPUT)


def _rejected(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return typed_frame(REJECT_INPUT, rows)


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


def _reject(human_id: str | None, record_id: str, reason: str, raw: str) -> dict[str, Any]:
    return {
        "table_name": NOTIFICATIONS_TABLE,
        "human_id": human_id,
        "record_id": record_id,
        "reason": reason,
        "raw": raw,
    }


class _ItemRejected(Exception):
    """This notification item cannot be used; the message is the reason stored with it."""


def _id_field(item: dict[str, Any], key: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise _ItemRejected(f"missing {key}")
    if not _ID.fullmatch(value):
        raise _ItemRejected(f"{key} is not an id")
    return value


def _instant(value: object) -> dt.datetime | None:
    """An ISO 8601 instant as UTC (naive taken as UTC); None when it is not one."""
    if not isinstance(value, str) or not value.isascii():
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return parsed.astimezone(dt.UTC)
    except (ValueError, OverflowError):  # not ISO 8601, or out of range once shifted to UTC
        return None


def _notification_row(
    item: object,
    notification_id: str,
    delivery: LandedDelivery,
    origins: Sequence[_Origin],
    cache: dict[str, _Resolved],
) -> dict[str, Any]:
    """One ops.notifications row, or `_ItemRejected` with the reason of the item's first problem."""
    if not isinstance(item, dict):
        raise _ItemRejected("item is not an object")
    human_id = _id_field(item, "humanId")
    object_id = _id_field(item, "objectId")
    action = item.get("action")
    if action not in ACTIONS:
        raise _ItemRejected("unknown action")
    url = item.get("endpoint")
    if isinstance(url, str):
        if url not in cache:  # few distinct endpoint URLs per batch: resolve each once
            cache[url] = _resolve(url, origins)
        resolved = cache[url]
    else:
        resolved = _resolve(url, origins)
    if resolved.problem is not None or resolved.endpoint is None:
        raise _ItemRejected(resolved.problem or "endpoint path is not a known record endpoint")
    if resolved.id_in_url is not None and resolved.id_in_url != object_id:
        raise _ItemRejected("endpoint id does not match objectId")
    updated_at = _instant(item.get("updatedAt"))
    if updated_at is None:
        raise _ItemRejected("missing or invalid updatedAt")
    return {
        "notification_id": notification_id,
        "delivery_digest": delivery.digest,
        "human_id": human_id,
        "endpoint": resolved.endpoint.path,
        "table_name": resolved.endpoint.table,
        "object_id": object_id,
        "action": action,
        # descriptive labels: repaired rather than rejected (see intake/text.py)
        "model": storable_or_none(item.get("model")),
        "type": storable_or_none(item.get("type")),
        "updated_at": updated_at,
        "received_at": delivery.received_at,
        "status": "received",
    }


def _item_reject(item: object, notification_id: str, reason: str) -> dict[str, Any]:
    """A rejected item, keyed by its notification_id (delivery digest and position), which is
    unique per received item: identical bad items in several deliveries stay apart, so
    received = loaded + rejected holds item by item. Its objectId stays in `raw`."""
    fields = item if isinstance(item, dict) else {}
    # as sent (repaired), even when not an id: it points at the user, nothing routes on it
    return _reject(
        storable_or_none(fields.get("humanId")), notification_id, reason, json_text(item)
    )


def _document(body: str) -> Any:
    """The parsed body, or None when it is not JSON (also when nested or sized beyond limits)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def notification_rows(
    deliveries: Iterable[LandedDelivery], api_url: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ops.notifications rows, ops.rejected_records rows): one per received notification item.

    Containment, one boundary per level: a delivery whose body is not a JSON array is one
    rejected row; inside it each item becomes a row or a rejected row on its own, and an item
    that breaks the builder in a way not foreseen is rejected with the error's type, never
    stopping the other items, deliveries or days.
    """
    origins = [_origin(UPSTREAM_ORIGIN), _origin(api_url)]
    cache: dict[str, _Resolved] = {}
    rows: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    for delivery in deliveries:
        document = _document(delivery.body)
        if not isinstance(document, list):
            reason = "delivery body is not a JSON array"
            rejects.append(_reject(None, delivery.digest, reason, repaired(delivery.body)))
            continue
        for index, item in enumerate(document):
            notification_id = f"{delivery.digest}:{index}"
            try:
                rows.append(_notification_row(item, notification_id, delivery, origins, cache))
            except _ItemRejected as problem:
                rejects.append(_item_reject(item, notification_id, str(problem)))
            except Exception as exc:  # the item boundary: see the docstring
                reason = f"item could not be read ({type(exc).__name__})"
                rejects.append(_item_reject(item, notification_id, reason))
    frame = typed_frame(
        _NOTIFICATION_INPUT,
        {
            name: pd.Series([row[name] for row in rows], dtype=object)
            for name in NOTIFICATION_COLUMNS
        },
    )
    return frame, _rejected(rejects)


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


class _SessionRejected(Exception):
    """This session delivery cannot be used; the message is the reason stored with it."""


def _claim(claims: dict[str, Any] | None, name: str) -> str:
    value = claims.get(name) if isinstance(claims, dict) else None
    if not isinstance(value, str) or not value:
        raise _SessionRejected("missing token claims")
    if not is_storable(value):
        raise _SessionRejected(f"token claim {name} is not valid text")
    return value


def _session_at(claims: dict[str, Any], received_at: dt.datetime) -> dt.datetime:
    """The JWT `iat` (one-second resolution), else the receive time."""
    issued = claims.get("iat")
    if isinstance(issued, int | float) and not isinstance(issued, bool):
        try:
            return dt.datetime.fromtimestamp(issued, dt.UTC)
        except (ValueError, OverflowError, OSError):  # NaN, or outside the datetime range
            pass
    return received_at


def _session_row(delivery: LandedDelivery) -> dict[str, Any]:
    """One connect.session_responses row, or `_SessionRejected` with the first problem."""
    document = _document(delivery.body)
    problem = session_problem(document)
    if problem is not None:
        raise _SessionRejected(problem.reason)
    event = document["event"]
    status = document["response"]["status"]
    if not is_storable(status):  # a status routes connection state: never repaired
        raise _SessionRejected("response status is not valid text")
    client_user_id = _claim(delivery.claims, "client_user_id")
    human_id = _claim(delivery.claims, "human_id")
    assert delivery.claims is not None  # checked by _claim
    payload = member_text(delivery.body, "response")
    return {
        "delivery_digest": delivery.digest,
        "received_at": delivery.received_at,
        "session_at": _session_at(delivery.claims, delivery.received_at),
        "event": event,
        "status": status,
        "client_user_id": client_user_id,
        "human_id": human_id,
        "payload": None if payload is None else repaired(payload),
    }


def session_rows(deliveries: Iterable[LandedDelivery]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(connect.session_responses rows, ops.rejected_records rows): one per landed delivery.

    Each delivery is its own boundary: it becomes a row or a rejected row with a reason, also
    when something not foreseen breaks the builder (the reason names the error's type).
    """
    rows: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    for delivery in deliveries:
        try:
            rows.append(_session_row(delivery))
            continue
        except _SessionRejected as problem:
            reason = str(problem)
        except Exception as exc:  # the delivery boundary: see the docstring
            reason = f"delivery could not be read ({type(exc).__name__})"
        claims = delivery.claims
        human_id = claims.get("human_id") if isinstance(claims, dict) else None
        rejects.append(
            {
                "table_name": SESSIONS_TABLE,
                "human_id": human_id
                if isinstance(human_id, str) and is_storable(human_id)
                else None,
                "record_id": delivery.digest,
                "reason": reason,
                "raw": repaired(delivery.body),
            }
        )
    session_frame = typed_frame(
        table(SESSIONS_TABLE),
        {name: pd.Series([row[name] for row in rows], dtype=object) for name in SESSION_COLUMNS},
    )
    return session_frame, _rejected(rejects)
