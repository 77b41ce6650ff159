"""A small hostile upstream on loopback (Starlette + uvicorn in a thread) for isolation tests.

Two users, every endpoint of contract part A. Each (user, endpoint) serves good records unless
the test's `poison` table gives it one of the hostile behaviours below, mixed among good
records. `good` holds every good record per (user, path), so a test can say what must land.
Lists honour `updated_since`; tokens are issued with `expires_in: 0`.
"""

from __future__ import annotations

import socket
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sync_pipeline.upstream.endpoints import ENDPOINTS

ALICE = ("alice", "a" * 32)  # (client_user_id, human_id)
BOB = ("bob", "b" * 32)
USERS = (ALICE, BOB)
EPOCH_2020 = "2020-06-01T10:00:00.000Z"


def good_record(record_id: str, updated_at: str = EPOCH_2020, **extra: Any) -> dict[str, Any]:
    """A record every table accepts: each table's required instant or date is there."""
    return {
        "id": record_id,
        "source": "hostile-test",
        "createdAt": EPOCH_2020,
        "updatedAt": updated_at,
        "timestamp": "2020-06-01T09:00:00Z",
        "startTime": "2020-06-01T08:00:00Z",
        "endTime": "2020-06-01T08:30:00Z",
        "date": "2020-06-01",
        "name": f"good {record_id}",
        "value": 1.5,
        **extra,
    }


def gzip_bomb(inflated_bytes: int) -> bytes:
    """A JSON array whose one string inflates to `inflated_bytes` zeros: ~1/1000 its size."""
    squeeze = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [squeeze.compress(b'[{"id":"bomb","updatedAt":"2020-06-01T10:00:00Z","pad":"')]
    block = b"0" * 2**20
    for _ in range(inflated_bytes // len(block)):
        parts.append(squeeze.compress(block))
    parts.append(squeeze.compress(b'"}]'))
    parts.append(squeeze.flush())
    return b"".join(parts)


def _since(request: Request) -> datetime | None:
    raw = request.query_params.get("updated_since")
    return datetime.strptime(raw, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) if raw else None


def _stamp(record: Any) -> datetime:
    text = record.get("updatedAt") if isinstance(record, dict) else None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return datetime.max.replace(tzinfo=UTC)  # unreadable stamps are always sent


Behaviour = Callable[[Request, list[Any]], Response]


@dataclass
class HostileUpstream:
    # (human_id, path) -> the records served (good and poison, in page order)
    records: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    # (human_id, path) -> the good ones among them: what must land when the item succeeds
    good: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    # (human_id, path) -> a behaviour replacing the ordinary paged list answer
    poison: dict[tuple[str, str], Behaviour] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        for client_user_id, human_id in USERS:
            for endpoint in ENDPOINTS:
                record = good_record(f"{client_user_id}-{endpoint.path.replace('/', '-')}-1")
                self.records[(human_id, endpoint.path)] = [record]
                self.good[(human_id, endpoint.path)] = [record]

    def add(self, human_id: str, path: str, *records: Any, good: bool = True) -> None:
        self.records[(human_id, path)].extend(records)
        if good:
            self.good[(human_id, path)].extend(records)

    # ---- the ASGI app

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/connect/token", self._token, methods=["POST"]),
                Route("/v1/human/{path:path}", self._data, methods=["GET"]),
            ]
        )

    async def _token(self, request: Request) -> Response:
        self.requests["token"] += 1
        body = await request.json()
        human_id = dict(USERS)[body["client_user_id"]]
        return JSONResponse(
            {
                "access_token": f"token-{body['client_user_id']}",
                "expires_in": 0,  # hostile: a floor keeps this to one token per user
                "token_type": "Bearer",
                "human_id": human_id,
            }
        )

    async def _data(self, request: Request) -> Response:
        path = request.path_params["path"]
        self.requests[path] += 1
        token = request.headers.get("authorization", "").removeprefix("Bearer token-")
        human_id = dict(USERS)[token]
        if path == "sources":
            return JSONResponse([])
        records = self.records.get((human_id, path), [])
        behaviour = self.poison.get((human_id, path))
        if behaviour is not None:
            return behaviour(request, records)
        if path == "medical/profile":
            return JSONResponse(records[0])
        since = _since(request)
        chosen = [r for r in records if since is None or _stamp(r) >= since]
        return raw_json_response(orjson.dumps(chosen), total=len(chosen))


def raw_json_response(body: bytes, *, total: int | None = None, **headers: str) -> Response:
    if total is not None:
        headers["X-Total-Count"] = str(total)
    return Response(body, media_type="application/json", headers=headers)


@contextmanager
def serving(upstream: HostileUpstream) -> Iterator[str]:
    """The app on a free loopback port (bound before the thread starts); its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        upstream.app(), host=host, port=port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="hostile-upstream", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the hostile upstream did not start")
            time.sleep(0.01)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
