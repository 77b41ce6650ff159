"""The intake service (contract part B) as a Starlette app: verify, land durably, then answer 200.

Every refusal is a 4xx with ``{"error": "<short reason>"}`` and nothing landed. Nothing answers
5xx except 503 when we could not land (busy, the disk failed or is full, or our own bug): a
sender retries a 503, whereas a 400 would make it drop a delivery that was fine. A 503 is only
ever answered before the delivery is in the log, or after its write failed and was cut back
off the file, so a delivery answered with a non-2xx is never read back as received.

Order of work per request, cheapest and unauthenticated-safe first, so a stranger costs no
body read and no memory: admission (a bounded number of deliveries in flight per process,
503 above it) → signature headers and the timestamp window (notifications) or the session JWT
→ landing disk has room → the body, capped in size and in time (408) → signature → shape →
land. Memory held by bodies is at most `receiver_max_inflight × max_body_bytes` per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sync_pipeline.intake import request_rules, signature
from sync_pipeline.intake.landing import LandedDelivery, LandingLog
from sync_pipeline.intake.request_rules import Rejected
from sync_pipeline.intake.session_token import bearer_token, load_public_key, verify_token

logger = logging.getLogger(__name__)


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
    @property
    def receiver_max_inflight(self) -> int: ...
    @property
    def receiver_max_connections(self) -> int: ...
    @property
    def receiver_header_timeout_s(self) -> float: ...
    @property
    def receiver_body_timeout_s(self) -> float: ...
    @property
    def session_max_token_lifetime_s(self) -> int: ...
    @property
    def landing_min_free_bytes(self) -> int: ...
    @property
    def landing_min_free_inodes(self) -> int: ...


def _error(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)


async def read_capped_body(request: Request, max_bytes: int, timeout_s: float) -> bytes:
    """The raw body, refusing more than `max_bytes` (declared or streamed) or slower than
    `timeout_s` for the whole body (408)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise Rejected(400, "content-length is not a number")
        if int(declared) > max_bytes:
            raise Rejected(413, "body too large")
    chunks: list[bytes] = []
    total = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                total += len(chunk)
                if total > max_bytes:
                    raise Rejected(413, "body too large")
                chunks.append(chunk)
    except TimeoutError:
        raise Rejected(408, "body not received in time") from None
    return b"".join(chunks)


class Busy(Exception):
    """More deliveries in flight than allowed: answered 503 (the sender retries)."""


class CannotLand(Exception):
    """The landing log cannot take a delivery now (disk full, folder unusable): 503."""


class Admission:
    """At most `limit` deliveries read or landed at once in this process; no queue (a queue
    would hold connections and memory; the sender's retry is the queue)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inflight = 0

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        if self.inflight >= self.limit:
            raise Busy
        self.inflight += 1
        try:
            yield
        finally:
            self.inflight -= 1


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
        except Busy:
            return _error(503, "too many deliveries in flight; retry later")
        except CannotLand as problem:
            return _error(503, f"cannot land deliveries now ({problem}); retry later")
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


async def _land(log: LandingLog, delivery: LandedDelivery, replay_until: float) -> Response:
    # No timeout that answers while the write goes on: that answer would be a 503 for a
    # delivery that then lands. The write is bounded by the disk, and admission bounds how
    # many wait; a sender that gives up retries and gets "duplicate".
    wrote = await log.land(delivery, replay_until)
    logger.debug("%s delivery %s %s", log.kind, delivery.digest, "landed" if wrote else "repeated")
    return JSONResponse({"status": "accepted", "duplicate": not wrote})


def create_app(settings: ReceiverSettings) -> Starlette:
    """The receiver app; landing folders are created at startup, /healthz answers 200 after."""
    secret = settings.client_secret
    tolerance_s = settings.signature_tolerance_s
    max_bytes = settings.max_body_bytes
    body_timeout_s = settings.receiver_body_timeout_s
    max_lifetime_s = settings.session_max_token_lifetime_s
    free_bytes, free_inodes = settings.landing_min_free_bytes, settings.landing_min_free_inodes
    admission = Admission(settings.receiver_max_inflight)
    public_key: RSAPublicKey | None = (
        load_public_key(settings.session_public_key) if settings.session_public_key else None
    )
    notifications_log = LandingLog(settings.data_dir, "notifications")
    sessions_log = LandingLog(settings.data_dir, "sessions")
    logs = (notifications_log, sessions_log)
    ready = False

    def has_room(log: LandingLog) -> None:
        problem = log.health_problem(free_bytes, free_inodes)
        if problem is not None:
            raise CannotLand(problem)

    async def notifications(request: Request) -> Response:
        with admission.slot():
            return await _notification(request)

    async def _notification(request: Request) -> Response:
        parts = request_rules.signature_headers(request.headers)
        request_rules.check_timestamp(parts, tolerance_s)  # before a single body byte is read
        has_room(notifications_log)
        body = await read_capped_body(request, max_bytes, body_timeout_s)
        request_rules.check_signature(body, parts, secret, tolerance_s)
        request_rules.check_notification_batch(request_rules.decode_json(body))
        delivery = LandedDelivery(
            digest=signature.delivery_digest(body, parts.timestamp, parts.nonce),
            kind="notifications",
            received_at=_now(),
            headers={
                request_rules.TIMESTAMP_HEADER: parts.timestamp,
                request_rules.NONCE_HEADER: parts.nonce,
                request_rules.SIGNATURE_HEADER: parts.signature,
            },
            body=body.decode("utf-8"),
            claims=None,
        )
        # a replay is refused by the timestamp check after this: dedup need not outlive it
        replay_until = signature.timestamp_seconds(parts.timestamp) + tolerance_s
        return await _land(notifications_log, delivery, replay_until)

    async def sessions(request: Request) -> Response:
        if public_key is None:
            return _error(503, "session intake is not configured (SYNC_SESSION_PUBLIC_KEY)")
        with admission.slot():
            return await _session(request)

    async def _session(request: Request) -> Response:
        assert public_key is not None  # checked by sessions()
        token = bearer_token(request.headers)
        claims = verify_token(token, public_key)  # before a single body byte is read
        # a replay is refused once the token expires: dedup need not outlive it
        replay_until = request_rules.token_replay_until(claims, time.time(), max_lifetime_s)
        has_room(sessions_log)
        body = await read_capped_body(request, max_bytes, body_timeout_s)
        document: Any = request_rules.decode_json(body)
        request_rules.check_session_body(document)
        request_rules.check_claims_match_body(claims, document)
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
        return await _land(sessions_log, delivery, replay_until)

    async def healthz(request: Request) -> Response:
        """200 only when both landing logs can be written now (a real write and fsync, free
        space and inodes above the reserve, and the last delivery write did not fail)."""
        if not ready:
            return _error(503, "starting")
        for log in logs:
            problem = await asyncio.to_thread(log.probe, free_bytes, free_inodes)
            if problem is not None:
                return _error(503, f"{log.kind}: {problem}")
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
