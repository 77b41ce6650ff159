"""The simulator's HTTP face: contract part A (auth + data), plus /_sim control routes.

Upstream routes go through `_upstream`, which applies the fault knobs in a fixed order
(latency, rate limit, dropped connection, failing paths, 5xx dice), counts the request, and
stamps X-Request-Id and rate-limit headers on whatever answer comes out.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import formatdate
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from starfleet import delivery
from starfleet.config import SimConfig
from starfleet.records import iso_instant
from starfleet.runtime import FaultDice, Stats, corrupt
from starfleet.sources import SOURCES_BY_ID
from starfleet.templates import Record
from starfleet.world import SimUser, SimWorld, notification_items
from sync_pipeline.upstream.endpoints import BY_PATH, SOURCES_PATH

# Set by the server's HTTP protocol (server.py): aborts the TCP connection under this request.
ABORT_SCOPE_KEY = "starfleet.abort"

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
_SINCE_FORMAT = re.compile(r"^\d{8}T\d{6}Z$")


@dataclass
class _Token:
    human_id: str
    expires_at: float  # time.monotonic()


@dataclass(frozen=True)
class _Route:
    """What a /v1/human/... path asks for."""

    template: str  # stats key, e.g. "medical/test_results/{id}"
    path: str  # endpoint path or "sources"
    record_id: str | None = None


def _resolve(rest: str) -> _Route | None:
    rest = rest.strip("/")
    if rest in BY_PATH or rest == SOURCES_PATH:
        return _Route(template=rest, path=rest)
    head, _, tail = rest.rpartition("/")
    endpoint = BY_PATH.get(head)
    if endpoint is not None and not endpoint.single_object and tail:
        return _Route(template=f"{head}/{{id}}", path=head, record_id=tail)
    return None


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"status": status, "code": code, "message": message, "contextId": uuid.uuid4().hex},
        status_code=status,
    )


class _DroppedConnection(Response):
    """No response at all: the TCP connection is aborted, as a crashed upstream would do."""

    def __init__(self) -> None:
        super().__init__(status_code=500)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        abort = scope.get(ABORT_SCOPE_KEY)
        if callable(abort):
            abort()
            # let the event loop deliver connection_lost, so the server does not answer 500
            for _ in range(3):
                await asyncio.sleep(0)
            return
        # Outside our server: headers then nothing; the server closes the connection mid-response.
        await send({"type": "http.response.start", "status": 200, "headers": []})


class _TruncatedResponse(Response):
    """A 200 whose body stops half-way, with no Content-Length to give it away."""

    def __init__(self, body: bytes, headers: dict[str, str]) -> None:
        super().__init__(status_code=200)
        self._partial = body[: max(1, len(body) // 2)]
        self._extra = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json")]
        headers += [(k.lower().encode(), v.encode()) for k, v in self._extra.items()]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self._partial, "more_body": False})


def _json_bytes(payload: bytes, status: int = 200) -> Response:
    return Response(payload, status_code=status, media_type="application/json")


def _parse_since(raw: str | None, name: str) -> str | None:
    """`YYYYMMDDTHHmmssZ` → the upstream's ISO form, which compares correctly as text."""
    if raw is None:
        return None
    if not _SINCE_FORMAT.match(raw):
        raise ValueError(f"{name} must look like 20200131T235959Z")
    return iso_instant(datetime.strptime(raw, "%Y%m%dT%H%M%SZ"))


def _parse_int(raw: str | None, name: str, default: int, minimum: int) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}")
    return value


class SimulatorApp:
    """Routes and state of one simulator; `create_app` wraps it into a Starlette app."""

    def __init__(self, world: SimWorld, config: SimConfig) -> None:
        self.world = world
        self.config = config
        self.stats = Stats()
        self._dice = FaultDice(config.faults)
        self._tokens: dict[str, _Token] = {}
        self._advance_rng = random.Random(config.seed)

    # --- fault plumbing ---------------------------------------------------------------

    @property
    def dice(self) -> FaultDice:
        # tests may replace config.faults in-process; counters and dice restart with new knobs
        if self._dice.faults is not self.config.faults:
            self._dice = FaultDice(self.config.faults)
        return self._dice

    async def _upstream(
        self,
        request: Request,
        template: str,
        handler: Callable[[Request], Awaitable[tuple[Response, str | None]]],
    ) -> Response:
        dice = self.dice
        faults = dice.faults
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        extra: dict[str, str] = {"X-Request-Id": request_id}
        human_id: str | None = None
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000.0)
        decision = dice.bucket.take() if dice.bucket is not None else None
        if decision is not None:
            extra["X-RateLimit-Limit"] = str(decision.limit)
            extra["X-RateLimit-Remaining"] = str(decision.remaining)
            extra["X-RateLimit-Reset"] = str(decision.reset_epoch_s)
        sub_path = request.url.path.removeprefix("/v1/human/")
        limited = decision is not None and not decision.allowed
        if limited or dice.throttle_first():
            wait_s = decision.retry_after_s if decision is not None and limited else 1
            response: Response = error_response(429, "rate_limited", "Too many requests")
            response.headers["Retry-After"] = (
                str(wait_s)
                if faults.retry_after_format == "seconds"
                else formatdate(time.time() + wait_s, usegmt=True)
            )
        elif dice.roll(faults.drop_rate):
            self.stats.record(template, 0, None)
            return _DroppedConnection()
        elif template in faults.fail_paths or sub_path in faults.fail_paths:
            response = error_response(500, "internal_error", "Simulated failure on this path")
        elif dice.within_first_n(request.url.path) or dice.roll(faults.error_rate_5xx):
            response = error_response(503, "unavailable", "Simulated transient outage")
        else:
            response, human_id = await handler(request)
            if response.status_code == 200 and dice.roll(faults.truncate_rate):
                self.stats.record(template, 200, human_id)
                return _TruncatedResponse(bytes(response.body), {**extra})
        response.headers.update(extra)
        self.stats.record(template, response.status_code, human_id)
        return response

    # --- A1: tokens ---------------------------------------------------------------------

    async def token(self, request: Request) -> Response:
        return await self._upstream(request, "connect/token", self._token)

    async def _token(self, request: Request) -> tuple[Response, str | None]:
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            return error_response(400, "bad_request", "Body must be a JSON object"), None
        if body.get("client_id") != self.config.client_id or not secrets.compare_digest(
            str(body.get("client_secret", "")).encode(), self.config.client_secret.encode()
        ):
            return error_response(401, "unauthorized", "Invalid client credentials"), None
        client_user_id = body.get("client_user_id")
        if not isinstance(client_user_id, str) or body.get("type") != "access":
            return error_response(
                400, "bad_request", "client_user_id (string) and type 'access' are required"
            ), None
        user = self.world.user_by_client_user_id(client_user_id)
        if user is None:
            return error_response(404, "not_found", "Unknown user"), None
        if client_user_id in self.config.faults.refused_users or not user.connections:
            return error_response(403, "forbidden", "User has no connected source"), user.human_id
        ttl = self.config.faults.token_ttl_s
        access_token = secrets.token_urlsafe(32)
        self._tokens[access_token] = _Token(user.human_id, time.monotonic() + ttl)
        payload = {
            "access_token": access_token,
            "expires_in": ttl,
            "token_type": "Bearer",
            "refresh_token": secrets.token_urlsafe(32),
            "human_id": user.human_id,
        }
        return JSONResponse(payload), user.human_id

    # --- A2: data -----------------------------------------------------------------------

    async def human(self, request: Request) -> Response:
        route = _resolve(request.path_params["rest"])
        template = route.template if route is not None else "unknown"
        return await self._upstream(request, template, lambda r: self._human(r, route))

    def _authorised_user(self, request: Request) -> SimUser | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        entry = self._tokens.get(token) if scheme.lower() == "bearer" else None
        if entry is None:
            return None
        if entry.expires_at <= time.monotonic():
            del self._tokens[token]
            return None
        return self.world.user_by_human_id(entry.human_id)

    async def _human(self, request: Request, route: _Route | None) -> tuple[Response, str | None]:
        user = self._authorised_user(request)
        if user is None:
            return error_response(401, "unauthorized", "Missing, invalid or expired token"), None
        if route is None:
            return error_response(404, "not_found", "No such endpoint"), user.human_id
        with self.world.lock:
            if route.path == SOURCES_PATH:
                return self._page(request, self.world.sources_view(user.human_id), None), (
                    user.human_id
                )
            store = user.store(route.path)
            if BY_PATH[route.path].single_object or route.record_id is not None:
                record = (
                    store.get(route.record_id)
                    if route.record_id is not None
                    else next(iter(store.ordered()), None)
                )
                if record is None:
                    return error_response(404, "not_found", "Record not found"), user.human_id
                return _json_bytes(self._serialise(record, store.json_bytes)), user.human_id
            return self._page(request, store.ordered(), store.json_bytes), user.human_id

    def _serialise(self, record: Record, cached: Callable[[Record], bytes]) -> bytes:
        dice = self.dice
        if dice.roll(dice.faults.corrupt_rate):
            return json.dumps(corrupt(record, dice.rng), ensure_ascii=False).encode()
        return cached(record)

    def _page(
        self,
        request: Request,
        records: list[Record],
        cached: Callable[[Record], bytes] | None,
    ) -> Response:
        params = request.query_params
        try:
            limit = min(_parse_int(params.get("limit"), "limit", DEFAULT_LIMIT, 1), MAX_LIMIT)
            offset = _parse_int(params.get("offset"), "offset", 0, 0)
            updated_since = _parse_since(params.get("updated_since"), "updated_since")
            created_since = _parse_since(params.get("created_since"), "created_since")
        except ValueError as exc:
            return error_response(400, "bad_request", str(exc))
        source = params.get("source")
        # Filters are inclusive: a record stamped exactly at the watermark is sent again
        # rather than missed.
        if updated_since is not None:
            records = [r for r in records if r.get("updatedAt", "") >= updated_since]
        if created_since is not None:
            records = [r for r in records if r.get("createdAt", "") >= created_since]
        if source is not None:
            records = [r for r in records if source in (r.get("source"), r.get("id"))]
        page = records[offset : offset + limit]
        serialise = cached or (lambda r: json.dumps(r, ensure_ascii=False).encode())
        body = b"[" + b",".join(self._serialise(r, serialise) for r in page) + b"]"
        response = _json_bytes(body)
        response.headers["X-Total-Count"] = str(len(records))
        if offset + limit < len(records):
            next_url = request.url.include_query_params(limit=limit, offset=offset + limit)
            response.headers["Link"] = f'<{next_url}>; rel="next"'
        return response

    # --- /_sim control ------------------------------------------------------------------

    async def sim_users(self, request: Request) -> Response:
        users = [
            {"client_user_id": u.client_user_id, "human_id": u.human_id} for u in self.world.users
        ]
        return JSONResponse(users)

    async def sim_stats(self, request: Request) -> Response:
        return JSONResponse(self.stats.snapshot())

    async def sim_stats_reset(self, request: Request) -> Response:
        self.stats.reset()
        return JSONResponse(self.stats.snapshot())

    async def sim_faults(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                changes = json.loads(await request.body())
                if not isinstance(changes, dict):
                    raise ValueError("body must be a JSON object of fault knobs")
                self.config.faults = self.config.faults.updated(changes)
            except (ValueError, TypeError) as exc:
                return error_response(400, "bad_request", str(exc))
        return JSONResponse(self.config.faults.as_json())

    async def sim_truth(self, request: Request) -> Response:
        human_id = request.query_params.get("human_id", "")
        path = request.query_params.get("path", "")
        if self.world.user_by_human_id(human_id) is None or (
            path not in BY_PATH and path != SOURCES_PATH
        ):
            return error_response(404, "not_found", "Unknown human_id or path")
        if path == SOURCES_PATH:
            return JSONResponse(self.world.sources_view(human_id))
        return JSONResponse(self.world.records(human_id, path))

    async def sim_delete(self, request: Request) -> Response:
        body = await _json_object(request)
        try:
            deleted = self.world.delete(body["human_id"], body["path"], body["record_id"])
        except (KeyError, TypeError):
            return error_response(400, "bad_request", "human_id, path and record_id required")
        return JSONResponse({"deleted": deleted})

    async def sim_advance(self, request: Request) -> Response:
        body = await _json_object(request)
        created, updated = body.get("created", 0), body.get("updated", 0)
        if not isinstance(created, int) or not isinstance(updated, int):
            return error_response(400, "bad_request", "created and updated must be integers")
        changes = self.world.advance(created, updated, self._advance_rng)
        items = notification_items(changes, self.config.notification_api_base)
        status = None
        if items and self.config.receiver_url:
            body_bytes, headers = delivery.signed_notification(
                items,
                self.config.client_secret,
                timestamp_ms=int(time.time() * 1000),
                nonce=delivery.new_nonce(),
            )
            async with httpx.AsyncClient(timeout=delivery.DELIVERY_TIMEOUT_S) as client:
                status = await delivery.post_notifications(
                    client, self.config.receiver_url, body_bytes, headers
                )
        return JSONResponse({"items": items, "delivery_status": status})

    async def sim_session(self, request: Request) -> Response:
        body = await _json_object(request)
        user = self.world.user_by_client_user_id(str(body.get("client_user_id", "")))
        event = body.get("event", "close")
        if user is None or event not in delivery.SUCCESS_STATUS_BY_EVENT:
            return error_response(400, "bad_request", "known client_user_id and event required")
        connect_ids = list(body.get("connect", []))
        disconnect_ids = list(body.get("disconnect", []))
        unknown = [s for s in connect_ids + disconnect_ids if s not in SOURCES_BY_ID]
        if unknown:
            return error_response(400, "bad_request", f"unknown source ids: {unknown}")
        status = str(body.get("status", delivery.SUCCESS_STATUS_BY_EVENT[event]))
        result = await self.post_session(user, event, status, connect_ids, disconnect_ids)
        return JSONResponse(result)

    async def sim_initial_sessions(self, request: Request) -> Response:
        results = []
        for user in self.world.users:
            results.append(
                await self.post_session(user, "close", "SUCCESS", list(user.connections), [])
            )
        return JSONResponse(results)

    async def post_session(
        self,
        user: SimUser,
        event: str,
        status: str,
        connect_ids: list[str],
        disconnect_ids: list[str],
    ) -> dict[str, Any]:
        """Apply a Connect session to the world (if it succeeded) and post it to the receiver."""
        if status in delivery.SUCCESS_STATUS_BY_EVENT.values():
            self.world.connect(user.human_id, connect_ids)
            self.world.disconnect(user.human_id, disconnect_ids)
            connected = [SOURCES_BY_ID[s] for s in connect_ids]
            disconnected = [SOURCES_BY_ID[s] for s in disconnect_ids]
        else:
            connected, disconnected = [], []
        payload = delivery.session_body(
            event, status, connected=connected, disconnected=disconnected, current=user.sources
        )
        delivery_status = None
        if self.config.receiver_url and self.config.session_private_key_pem:
            token = delivery.session_token(
                self.config.session_private_key_pem,
                client_user_id=user.client_user_id,
                human_id=user.human_id,
                now=int(time.time()),
            )
            async with httpx.AsyncClient(timeout=delivery.DELIVERY_TIMEOUT_S) as client:
                delivery_status = await delivery.post_session(
                    client, self.config.receiver_url, payload, token
                )
        return {
            "client_user_id": user.client_user_id,
            "body": payload,
            "delivery_status": delivery_status,
        }


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


class _EchoRequestId:
    """Echo X-Request-Id on every response, including the framework's own 404/405 answers."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start" and request_id is not None:
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append((b"x-request-id", request_id))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


def create_app(world: SimWorld, config: SimConfig) -> Starlette:
    """The simulator as an ASGI app; `app.state.simulator` is the `SimulatorApp` behind it."""
    sim = SimulatorApp(world, config)
    routes = [
        Route("/v1/connect/token", sim.token, methods=["POST"]),
        Route("/v1/human/{rest:path}", sim.human, methods=["GET"]),
        Route("/_sim/users", sim.sim_users, methods=["GET"]),
        Route("/_sim/stats", sim.sim_stats, methods=["GET"]),
        Route("/_sim/stats/reset", sim.sim_stats_reset, methods=["POST"]),
        Route("/_sim/faults", sim.sim_faults, methods=["GET", "POST"]),
        Route("/_sim/truth", sim.sim_truth, methods=["GET"]),
        Route("/_sim/delete", sim.sim_delete, methods=["POST"]),
        Route("/_sim/advance", sim.sim_advance, methods=["POST"]),
        Route("/_sim/sessions", sim.sim_session, methods=["POST"]),
        Route("/_sim/sessions/initial", sim.sim_initial_sessions, methods=["POST"]),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(_EchoRequestId)])
    app.state.simulator = sim
    return app
