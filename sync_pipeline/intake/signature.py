"""Notification signatures (contract B1): base64(HMAC-SHA1(secret, raw body + timestamp + nonce))."""

from __future__ import annotations

import base64
import hashlib
import hmac


def signed_message(body: bytes, timestamp: str, nonce: str) -> bytes:
    """The exact bytes the signature covers: the raw body as received, then timestamp, then nonce."""
    return body + timestamp.encode("ascii") + nonce.encode("ascii")


def sign(body: bytes, timestamp: str, nonce: str, secret: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), signed_message(body, timestamp, nonce), hashlib.sha1)
    return base64.b64encode(digest.digest()).decode("ascii")
