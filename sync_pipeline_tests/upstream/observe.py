"""Eyes on the wire for the client's integration tests against the real simulator.

- `RecordingTransport`: the real httpx transport (real sockets), plus a log of every exchange
  with the headers the client does not keep (Retry-After), for checking what it honoured.
- `issued_tokens`: every access and refresh token the simulator hands out, read from its real
  token responses, so log tests can look for the exact secrets rather than guess their shape.
- `revoke_all_tokens`: what an upstream invalidating its tokens looks like to the client.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response

from starfleet import SimulatorHandle


@dataclass(frozen=True)
class Exchange:
    request_id: str
    method: str
    raw_path: bytes  # as sent on the wire, query included
    sent_at: float  # time.time()
    received_at: float
    status: int
    retry_after: str | None

    def retry_not_before(self) -> float | None:
        """The wall-clock moment Retry-After allows the next attempt, in either format."""
        if self.retry_after is None:
            return None
        try:
            return self.received_at + float(self.retry_after)
        except ValueError:
            return parsedate_to_datetime(self.retry_after).timestamp()


class RecordingTransport(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.exchanges: list[Exchange] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        sent_at = time.time()
        response = await super().handle_async_request(request)
        self.exchanges.append(
            Exchange(
                request_id=request.headers.get("x-request-id", ""),
                method=request.method,
                raw_path=request.url.raw_path,
                sent_at=sent_at,
                received_at=time.time(),
                status=response.status_code,
                retry_after=response.headers.get("retry-after"),
            )
        )
        return response


Handler = Callable[[Request], Awaitable[tuple[Response, str | None]]]


def issued_tokens(sim: SimulatorHandle) -> list[str]:
    """A live list of every token the simulator issues from now on.

    Wraps the simulator's token handler (its public route calls it per request) and reads the
    body it really sent; the simulator keeps no history of tokens itself.
    """
    seen: list[str] = []
    original: Handler = sim.app._token

    async def recording(request: Request) -> tuple[Response, str | None]:
        response, human_id = await original(request)
        if response.status_code == 200:
            body: dict[str, Any] = json.loads(bytes(response.body))
            seen.extend(str(body[k]) for k in ("access_token", "refresh_token") if k in body)
        return response, human_id

    sim.app._token = recording  # type: ignore[method-assign]
    return seen


def revoke_all_tokens(sim: SimulatorHandle) -> None:
    """Invalidate every token the simulator issued, as an upstream revoking tokens would.

    The simulator has no control route for this (tokens only die of old age there, and it
    advertises their true lifetime), so the client's renew-on-401 path can only be reached by
    emptying its token table.
    """
    sim.app._tokens.clear()
