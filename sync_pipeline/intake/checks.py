"""Request checks shared by the intake endpoints: each raises `Rejected` with a short reason.

Pure functions over headers and bytes, so every rule is testable without a server.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sync_pipeline.intake import signature
from sync_pipeline.intake.session_rules import session_problem

SIGNATURE_HEADER = "x-humanapi-signature"
TIMESTAMP_HEADER = "x-humanapi-timestamp"
NONCE_HEADER = "x-humanapi-nonce"

MAX_SIGNATURE_CHARS = 256
_TIMESTAMP = re.compile(r"[0-9]{1,16}")
_NONCE = re.compile(r"[0-9]{1,64}")


class Rejected(Exception):
    """The request is refused; `status` is the 4xx to answer, the message is safe to return."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class SignatureHeaders:
    signature: str
    timestamp: str
    nonce: str


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None or value == "":
        raise Rejected(400, f"missing {name} header")
    if not value.isascii():
        raise Rejected(400, f"{name} header is not ASCII")
    return value


def signature_headers(headers: Mapping[str, str]) -> SignatureHeaders:
    """The three signature headers, well-formed (still unverified)."""
    sig = _header(headers, SIGNATURE_HEADER)
    if len(sig) > MAX_SIGNATURE_CHARS:
        raise Rejected(400, f"{SIGNATURE_HEADER} header is too long")
    try:
        base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        raise Rejected(400, f"{SIGNATURE_HEADER} header is not base64") from None
    timestamp = _header(headers, TIMESTAMP_HEADER)
    if not _TIMESTAMP.fullmatch(timestamp):
        raise Rejected(400, f"{TIMESTAMP_HEADER} header is not a number")
    nonce = _header(headers, NONCE_HEADER)
    if not _NONCE.fullmatch(nonce):
        raise Rejected(400, f"{NONCE_HEADER} header is not a number")
    return SignatureHeaders(signature=sig, timestamp=timestamp, nonce=nonce)


def check_timestamp(parts: SignatureHeaders, tolerance_s: float, now: float | None = None) -> None:
    """The signed timestamp is within ±tolerance of now: checked before the body is read."""
    now = time.time() if now is None else now
    if abs(now - signature.timestamp_seconds(parts.timestamp)) > tolerance_s:
        raise Rejected(401, "timestamp outside the accepted window")


def token_replay_until(claims: Mapping[str, Any], now: float, max_lifetime_s: float) -> float:
    """The token's `exp` (epoch seconds), refused when it lies further ahead than
    `max_lifetime_s`: the receiver remembers each delivery until its token expires, so an
    unbounded `exp` would be unbounded dedup state (and an unbounded replay window)."""
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise Rejected(401, "token exp is not a time")
    try:
        seconds = float(exp)
    except OverflowError:  # an int beyond any float
        raise Rejected(401, "token expires too far in the future") from None
    if not math.isfinite(seconds):
        raise Rejected(401, "token exp is not a time")
    if seconds > now + max_lifetime_s:
        raise Rejected(401, "token expires too far in the future")
    return seconds


def check_signature(
    body: bytes,
    parts: SignatureHeaders,
    secret: str,
    tolerance_s: float,
    now: float | None = None,
) -> None:
    """Timestamp within ±tolerance of now, and the signature matches the raw body."""
    now = time.time() if now is None else now
    if abs(now - signature.timestamp_seconds(parts.timestamp)) > tolerance_s:
        raise Rejected(401, "timestamp outside the accepted window")
    if not signature.verify(body, parts.timestamp, parts.nonce, parts.signature, secret):
        raise Rejected(401, "signature does not match")


def decode_json(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected(400, "body is not valid UTF-8") from None
    try:
        return json.loads(text)
    except ValueError:
        raise Rejected(400, "body is not valid JSON") from None
    except RecursionError:
        raise Rejected(400, "body is nested too deeply") from None


def check_notification_batch(document: Any) -> None:
    if not isinstance(document, list) or not all(isinstance(item, dict) for item in document):
        raise Rejected(400, "body must be a JSON array of objects")


def check_session_body(document: Any) -> dict[str, Any]:
    """The session response body, shape-checked; returns its `response` object."""
    problem = session_problem(document)
    if problem is not None:
        raise Rejected(problem.http_status, problem.http_message)
    response: dict[str, Any] = document["response"]
    return response


# Where a Connect payload may name the user, in the spellings Connect and our front end use.
_BODY_IDENTITY_KEYS = {
    "client_user_id": ("clientUserId", "client_user_id"),
    "human_id": ("humanId", "human_id"),
}


def check_claims_match_body(claims: Mapping[str, Any], document: Mapping[str, Any]) -> None:
    """A user id in the body (top level or in `response`) must be the one the token vouches for."""
    response = document.get("response")
    scopes = [document, response] if isinstance(response, dict) else [document]
    for claim, keys in _BODY_IDENTITY_KEYS.items():
        for scope in scopes:
            for key in keys:
                if key in scope and scope[key] != claims[claim]:
                    raise Rejected(401, f"{key} in the body does not match the token")
