"""The intake service (contract part B) as a Starlette app: verify, land durably, then answer 200.

Every refusal is a 4xx with ``{"error": "<short reason>"}`` and nothing landed. Nothing answers
5xx except 503 when we could not land (the disk failed, or our own bug): a sender retries a 503,
whereas a 400 would make it drop a delivery that was fine.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sync_pipeline.intake import checks, signature
from sync_pipeline.intake.checks import Rejected
from sync_pipeline.intake.landing import LandedDelivery, LandingLog
from sync_pipeline.intake.session_token import bearer_token, load_public_key, verify_token

logger = logging.getLogger(__name__)

# The upstream wants an answer within 3 s; past this we answer 503 and it retries (the write
# goes on, and the retry is then acknowledged as a duplicate).
LAND_TIMEOUT_S = 2.0


class ReceiverSettings(Protocol):
    """The part of `sync_pipeline.settings.Settings` the receiver reads."""

    @property
    def data_dir(self) -> Path: ...
    @property
    def client_secret(self) -> str: ...
    @property
    def session_public_key(self) -> str | None: ...
    @property
    def signature_tolerance_s(self) -> int: ...
    @property
    def max_body_bytes(self) -> int: ...


def _error(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)


async def read_capped_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, refusing more than `max_bytes` by the declared length and while streaming."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise Rejected(400, "content-length is not a number")
        if int(declared) > max_bytes:
            raise Rejected(413, "body too large")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise Rejected(413, "body too large")
        chunks.append(chunk)
    return b"".join(chunks)


Handler = Callable[[Request], Awaitable[Response]]


def _guarded(handler: Handler) -> Handler:
    """Turn refusals into 4xx and anything unexpected into a logged 503; never a 500."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except Rejected as refusal:
            return _error(refusal.status, refusal.reason)
        except ClientDisconnect:
            return _error(400, "client disconnected")
        except Exception as exc:
            # Type and stack only: the message of an exception may quote the body (PHI).
            logger.error(
                "%s failed with %s\n%s",
                request.url.path,
                type(exc).__name__,
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            return _error(503, "could not accept the delivery now; retry later")

    return endpoint


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def _land(log: LandingLog, delivery: LandedDelivery) -> Response:
    wrote = await asyncio.wait_for(log.land(delivery), timeout=LAND_TIMEOUT_S)
    logger.debug("%s delivery %s %s", log.kind, delivery.digest, "landed" if wrote else "repeated")
    return JSONResponse({"status": "accepted", "duplicate": not wrote})


def create_app(settings: ReceiverSettings) -> Starlette:
    """The receiver app; landing folders are created at startup, /healthz answers 200 after."""
    secret = settings.client_secret
    tolerance_s = settings.signature_tolerance_s
    max_bytes = settings.max_body_bytes
    public_key: RSAPublicKey | None = (
        load_public_key(settings.session_public_key) if settings.session_public_key else None
    )
    notifications_log = LandingLog(settings.data_dir, "notifications")
    sessions_log = LandingLog(settings.data_dir, "sessions")
    ready = False

    async def notifications(request: Request) -> Response:
        parts = checks.signature_headers(request.headers)
        body = await read_capped_body(request, max_bytes)
        checks.check_signature(body, parts, secret, tolerance_s)
        checks.check_notification_batch(checks.decode_json(body))
        delivery = LandedDelivery(
            digest=signature.delivery_digest(body, parts.timestamp, parts.nonce),
            kind="notifications",
            received_at=_now(),
            headers={
                checks.TIMESTAMP_HEADER: parts.timestamp,
                checks.NONCE_HEADER: parts.nonce,
                checks.SIGNATURE_HEADER: parts.signature,
            },
            body=body.decode("utf-8"),
            claims=None,
        )
        return await _land(notifications_log, delivery)

    async def sessions(request: Request) -> Response:
        if public_key is None:
            return _error(503, "session intake is not configured (SYNC_SESSION_PUBLIC_KEY)")
        token = bearer_token(request.headers)
        claims = verify_token(token, public_key)
        body = await read_capped_body(request, max_bytes)
        document: Any = checks.decode_json(body)
        checks.check_session_body(document)
        checks.check_claims_match_body(claims, document)
        delivery = LandedDelivery(
            # the token is part of the key (a replayed body under a new token is a new
            # delivery), but only its hash is kept: the token itself is a credential
            digest=hashlib.sha256(body + token.encode("ascii")).hexdigest(),
            kind="sessions",
            received_at=_now(),
            headers={},
            body=body.decode("utf-8"),
            claims=claims,
        )
        return await _land(sessions_log, delivery)

    async def healthz(request: Request) -> Response:
        if not ready:
            return _error(503, "starting")
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal ready
        notifications_log.prepare()
        sessions_log.prepare()
        if public_key is None:
            logger.warning("no SYNC_SESSION_PUBLIC_KEY: /connect/sessions answers 503")
        ready = True
        try:
            yield
        finally:
            ready = False
            notifications_log.close()
            sessions_log.close()

    return Starlette(
        routes=[
            Route("/notifications", _guarded(notifications), methods=["POST"]),
            Route("/connect/sessions", _guarded(sessions), methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
