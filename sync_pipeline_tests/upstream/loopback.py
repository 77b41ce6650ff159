"""A small part-A upstream on 127.0.0.1 for the client's integration tests.

Deliberately minimal and test-only: tokens with a real lifetime, limit/offset paging with
absolute Link headers, per-page 5xx, a fixed-window rate limit answering 429 + Retry-After.
"""

from __future__ import annotations

import math
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class Behaviour:
    records_per_endpoint: int = 60
    token_lifetime_s: float = 3600.0  # how long the server accepts a token
    advertised_lifetime_s: float | None = None  # what it tells the client (None: the truth)
    refused_users: frozenset[str] = frozenset()
    failures_per_page: int = 0  # 5xx answers before each page succeeds
    rate_limit: int | None = None  # requests per 1 s window, then 429
    data_delay_s: float = 0.0


@dataclass
class Seen:
    at: float
    method: str
    path: str
    status: int
    request_id: str
    retry_after: float | None = None


@dataclass
class LoopbackUpstream:
    client_id: str
    client_secret: str
    behaviour: Behaviour
    base_url: str = ""  # set once served
    seen: list[Seen] = field(default_factory=list)
    issued_tokens: dict[str, tuple[str, float]] = field(default_factory=dict)
    _failures: dict[str, int] = field(default_factory=dict)
    _window: tuple[int, int] = (0, 0)  # (window number, requests in it)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/connect/token", self.token, methods=["POST"]),
                Route("/v1/human/{path:path}", self.data, methods=["GET"]),
            ]
        )

    def _rate_headers(self) -> tuple[dict[str, str], float | None]:
        """Count this request in the current window; headers, and Retry-After if over the limit."""
        limit = self.behaviour.rate_limit
        if limit is None:
            return {}, None
        now = time.monotonic()
        with self._lock:
            number, used = self._window
            if number != int(now):
                number, used = int(now), 0
            used += 1
            self._window = (number, used)
        reset_in = number + 1 - now
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(limit - used, 0)),
            "X-RateLimit-Reset": str(max(math.ceil(reset_in), 1)),
        }
        return headers, (reset_in if used > limit else None)

    def _answer(
        self, request: Request, status: int, body: Any, headers: dict[str, str]
    ) -> Response:
        retry_after = float(headers["Retry-After"]) if "Retry-After" in headers else None
        self.seen.append(
            Seen(time.monotonic(), request.method, request.url.path, status,
                 request.headers.get("x-request-id", ""), retry_after)
        )  # fmt: skip
        return JSONResponse(body, status_code=status, headers=headers)

    async def token(self, request: Request) -> Response:
        body = await request.json()
        if (body.get("client_id"), body.get("client_secret")) != (
            self.client_id,
            self.client_secret,
        ):
            return self._answer(request, 401, {"status": 401, "code": "bad_client"}, {})
        user = body["client_user_id"]
        if user in self.behaviour.refused_users:
            return self._answer(request, 404, {"status": 404, "code": "no_human"}, {})
        token = f"loopback-token-{secrets.token_hex(12)}"
        self.issued_tokens[token] = (user, time.monotonic() + self.behaviour.token_lifetime_s)
        advertised = self.behaviour.advertised_lifetime_s or self.behaviour.token_lifetime_s
        payload = {"access_token": token, "expires_in": advertised, "token_type": "Bearer",
                   "refresh_token": f"loopback-refresh-{secrets.token_hex(12)}",
                   "human_id": user.encode().hex()[:32].ljust(32, "0")}  # fmt: skip
        return self._answer(request, 200, payload, {})

    async def data(self, request: Request) -> Response:
        rate_headers, retry_after = self._rate_headers()
        if retry_after is not None:
            headers = {**rate_headers, "Retry-After": f"{retry_after:.3f}"}
            return self._answer(request, 429, {"status": 429, "code": "rate"}, headers)
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        owner = self.issued_tokens.get(token)
        if owner is None or owner[1] <= time.monotonic():
            return self._answer(request, 401, {"status": 401, "code": "token"}, rate_headers)
        if self.behaviour.data_delay_s:
            import asyncio

            await asyncio.sleep(self.behaviour.data_delay_s)
        page_key = f"{owner[0]}|{request.url.path}|{request.url.query}"
        failed = self._failures.get(page_key, 0)
        if failed < self.behaviour.failures_per_page:
            self._failures[page_key] = failed + 1
            status = 503 if failed % 2 == 0 else 502
            return self._answer(request, status, {"status": status}, rate_headers)
        limit = int(request.query_params.get("limit", "50"))
        offset = int(request.query_params.get("offset", "0"))
        total = self.behaviour.records_per_endpoint
        records = [
            {"id": f"{owner[0]}:{request.url.path}:{i}", "source": "loopback"}
            for i in range(offset, min(offset + limit, total))
        ]
        headers = {**rate_headers, "X-Total-Count": str(total)}
        if offset + limit < total:
            next_url = request.url.include_query_params(offset=offset + limit)
            headers["Link"] = f'<{next_url}>; rel="next"'
        return self._answer(request, 200, records, headers)


@contextmanager
def serve(app: Starlette) -> Iterator[str]:
    """Run `app` under uvicorn on a free loopback port in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # access_log off: uvicorn's access lines carry query strings, which the log tests forbid
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("loopback upstream did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
