"""Connect session tokens (contract B2): RS256 JWTs from the app's backend."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from sync_pipeline.intake.request_rules import Rejected

REQUIRED_CLAIMS = ("exp", "client_user_id", "human_id")
_MAX_TOKEN_CHARS = 8192


def load_public_key(pem_or_path: str) -> RSAPublicKey:
    """The RSA public key from PEM text, or from the PEM file that `pem_or_path` names."""
    text = pem_or_path
    if "-----BEGIN" not in text:
        text = Path(pem_or_path).expanduser().read_text(encoding="ascii")
    key = load_pem_public_key(text.encode("ascii"))
    if not isinstance(key, RSAPublicKey):
        raise ValueError("the session public key must be an RSA public key (tokens are RS256)")
    return key


def bearer_token(headers: Mapping[str, str]) -> str:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Rejected(401, "missing bearer token")
    token = token.strip()
    if len(token) > _MAX_TOKEN_CHARS or not token.isascii():
        raise Rejected(401, "malformed bearer token")
    return token


def verify_token(token: str, key: RSAPublicKey) -> dict[str, Any]:
    """The token's claims, if RS256-signed by `key`, unexpired, and naming a user.

    Only RS256 is allowed, so "alg: none" and HS256 tokens signed with the public key as an
    HMAC secret are refused before any signature check.
    """
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key,
            algorithms=["RS256"],
            options={"require": list(REQUIRED_CLAIMS)},
        )
    except jwt.ExpiredSignatureError:
        raise Rejected(401, "token expired") from None
    except (jwt.PyJWTError, ValueError, TypeError, OverflowError):
        # PyJWT lets OverflowError out for an `exp` or `iat` of 1e999 (int(inf))
        raise Rejected(401, "token not valid") from None
    for claim in ("client_user_id", "human_id"):
        if not isinstance(claims[claim], str) or not claims[claim]:
            raise Rejected(401, f"token claim {claim} must be a non-empty string")
    return claims
