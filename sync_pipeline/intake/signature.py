"""Notification signatures (contract B1).

signature = base64(HMAC-SHA1(secret, raw body + timestamp + nonce))
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def signed_message(body: bytes, timestamp: str, nonce: str) -> bytes:
    """The exact bytes the signature covers: the raw body as received, timestamp, nonce."""
    return body + timestamp.encode("ascii") + nonce.encode("ascii")


def sign(body: bytes, timestamp: str, nonce: str, secret: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), signed_message(body, timestamp, nonce), hashlib.sha1)
    return base64.b64encode(digest.digest()).decode("ascii")


def verify(body: bytes, timestamp: str, nonce: str, signature: str, secret: str) -> bool:
    """True when `signature` is the signature of these exact bytes (constant-time comparison)."""
    expected = sign(body, timestamp, nonce, secret)
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii"))


def delivery_digest(body: bytes, timestamp: str, nonce: str) -> str:
    """Deduplication key of a notification delivery: sha256 of the signed bytes.

    Timestamp and nonce are concatenated without a delimiter, so a digit can move from one to
    the other and the signature still holds; keying on the signed bytes (not on the nonce)
    makes such a replay the same delivery.
    """
    return hashlib.sha256(signed_message(body, timestamp, nonce)).hexdigest()


def timestamp_seconds(timestamp: str) -> float:
    """Epoch seconds of a signature timestamp sent in seconds or in milliseconds.

    Decided by magnitude: 1e11 seconds is the year 5138, 1e11 milliseconds is 1973, so any
    plausible timestamp at or above it is in milliseconds.
    """
    value = int(timestamp)
    return value / 1000 if value >= 100_000_000_000 else float(value)
