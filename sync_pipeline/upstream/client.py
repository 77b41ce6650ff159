"""The one place that speaks HTTP to the aggregator (contract part A).

`UpstreamClient` fetches per-user access tokens (cached, single-flight per user), pages through
list endpoints, fetches single records and objects, and lists a user's sources. Every request:

- waits for a slot of `settings.http_concurrency` and for the shared `RateBudget`;
- sends a fresh `X-Request-Id` (shared by the retries of that request);
- is retried by `stamina` on 429, 5xx, timeouts, transport errors and bodies that fail to decode,
  with exponential backoff and jitter, at least `Retry-After` apart, at most
  `settings.http_max_attempts` times and never past `settings.http_deadline_s` in total;
  400/403/404 and other 4xx are never retried; only GETs and the token POST are ever sent, all
  idempotent, so retrying is safe;
- never waits longer than what is left of its deadline: a `Retry-After` (or a rate-budget pause)
  reaching past it fails the request at once, with that reason (ratelimit.py);
- reads its body streamed, inflated by us, at most `settings.max_response_bytes` (body.py); a
  body over that, nested past the decoder, or not the JSON shape the contract promises fails
  the request without a retry;
- produces one `RequestAudit` per attempt for `on_request` and a DEBUG log line that never shows a
  token, a secret, an Authorization header or a query string.

The bearer token only ever goes to the configured API origin: a `Link: rel="next"` naming another
host is rebuilt on the configured one (same path and query), and a WARNING says so.

Errors: see `sync_pipeline.upstream.errors` (re-exported here).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

import httpx
import stamina

from sync_pipeline.upstream.body import ACCEPT_ENCODING, BodyRefused, decode_plain, read_capped
from sync_pipeline.upstream.endpoints import SOURCES_PATH, Endpoint
from sync_pipeline.upstream.errors import (
    ClientCredentialsRejected,
    RequestFailed,
    UpstreamError,
    UpstreamUnreachable,
    UserNeedsReconnect,
)
from sync_pipeline.upstream.models import Page, RequestAudit, UserRef
from sync_pipeline.upstream.options import UpstreamOptions
from sync_pipeline.upstream.ratelimit import RateBudget, WaitTooLong
from sync_pipeline.upstream.tokens import IssuedToken, TokenCache, token_lifetime_s
from sync_pipeline.upstream.wire import (
    body_preview,
    format_upstream_time,
    parse_http_date,
    parse_retry_after,
    quote_path_segment,
    raw_path,
    resolve_next_link,
)

__all__ = [
    "ClientCredentialsRejected",
    "Page",
    "RequestAudit",
    "RequestFailed",
    "UpstreamClient",
    "UpstreamError",
    "UpstreamUnreachable",
    "UserNeedsReconnect",
    "UserRef",
]

logger = logging.getLogger("sync_pipeline.upstream")

# httpx logs "HTTP Request: GET <full URL>" at INFO, query string included, and httpcore logs
# raw response headers (Link URLs with their queries) at DEBUG: filters and paging offsets have
# no business in logs, and our own DEBUG lines say what matters without them.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)
# stamina prints a line per scheduled retry (in structlog's format when structlog is installed):
# a down upstream then floods the terminal. Every attempt is already a RequestAudit row and a
# DEBUG line of ours, and a request that finally fails says so once, with its attempt count.
stamina.instrumentation.set_on_retry_hooks([])

TOKEN_PATH = "/v1/connect/token"
MAX_PAGE_SIZE = 500
# The probe before a run fans out has the usual attempts (a few 503s are weather) but a short
# deadline, so an unreachable upstream stops the run in seconds rather than after every item's
# full retries.
PROBE_DEADLINE_S = 15.0
# Bodies we do not use (errors) are read for the DEBUG preview up to this much only.
_ERROR_BODY_BYTES = 64 * 1024
_WAIT_INITIAL_S = 0.2
_WAIT_MAX_S = 10.0
_WAIT_JITTER_S = 0.5
_USER_AGENT = "sync_pipeline/0.1 (+httpx)"
# Connections per httpx client ("lane"). httpcore's pool rescans every connection, with a
# quadratic idle count, on each request it queues or releases: at 16 connections in one pool
# that bookkeeping cost more CPU than parsing the responses and capped a run near 100 req/s on
# two cores. Small pools keep it linear and tiny.
_LANE_CONNECTIONS = 4


class _Transient(Exception):
    """One attempt failed in a way another attempt may not (internal to the retry loop)."""

    def __init__(self, status: int | None, reason: str, retry_after_s: float | None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclass
class _RequestState:
    """What the attempts of one logical request share."""

    method: str
    path: str
    request_id: str
    human_id: str | None
    attempts: int = 0
    deadline: float | None = None  # time.monotonic() instant the request must finish by


class _Refused(Exception):
    """One attempt got an answer that another attempt would get again: fail, do not retry."""

    def __init__(self, status: int | None, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class _Answer:
    response: httpx.Response  # streamed and closed: its body is read once, bounded, in _send
    payload: Any  # decoded JSON for 2xx answers, None otherwise
    body_bytes: int = 0  # decompressed size of the body
    plain_body: bytes | None = None  # the body, when orjson alone decoded it (see Page)


def _header_int(response: httpx.Response, name: str) -> int | None:
    raw = response.headers.get(name)
    if raw is None:
        return None
    try:
        return int(float(raw))
    except ValueError:
        return None


def _json_kind(payload: Any) -> str:
    return {dict: "an object", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(payload), "a number"
    )


def _is_retryable_status(status: int) -> bool:
    return status == 429 or 500 <= status <= 599


class UpstreamClient:
    def __init__(
        self,
        settings: UpstreamOptions,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        on_request: Callable[[RequestAudit], None] | None = None,
        rate_budget: RateBudget | None = None,
    ) -> None:
        self._settings = settings
        self._transport = transport
        self._on_request = on_request
        self._budget = rate_budget or RateBudget.from_settings(settings)
        self._api_base = httpx.URL(settings.api_url)
        self._tokens = TokenCache(self._request_token)
        self._http: httpx.AsyncClient | None = None
        self._lanes: list[httpx.AsyncClient] = []
        # one entry per allowed in-flight request, naming the lane (client) it is sent on
        self._slots: asyncio.Queue[httpx.AsyncClient] | None = None
        self.request_count = 0
        self.token_request_count = 0
        self._started_at = datetime.now(UTC)
        self._upstream_now: datetime | None = None
        self._upstream_now_seen_at = 0.0

    async def __aenter__(self) -> Self:
        concurrency = max(1, self._settings.http_concurrency)
        self._slots = asyncio.Queue()
        ssl_context = httpx.create_ssl_context()  # loading CA certificates once, not per lane
        for first in range(0, concurrency, _LANE_CONNECTIONS):
            width = min(_LANE_CONNECTIONS, concurrency - first)
            lane = self._new_http_client(width, ssl_context)
            self._lanes.append(lane)
            for _ in range(width):
                self._slots.put_nowait(lane)
        self._http = self._lanes[0]  # builds requests; any lane may send them
        return self

    def _new_http_client(self, connections: int, ssl_context: Any) -> httpx.AsyncClient:
        # trust_env stays on (the default) so HTTP(S)_PROXY / NO_PROXY work as everywhere else;
        # redirects are not followed: the contract has none, and one could carry the token away.
        return httpx.AsyncClient(
            transport=self._transport,
            verify=ssl_context,
            timeout=httpx.Timeout(self._settings.http_timeout_s),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            headers={
                "User-Agent": _USER_AGENT,
                "Accept": "application/json",
                "Accept-Encoding": ACCEPT_ENCODING,
            },
            follow_redirects=False,
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        lanes, self._lanes = self._lanes, []
        for lane in lanes:
            await lane.aclose()
        self._http = None

    # ---- public API -------------------------------------------------------------------------

    async def probe(self, user: UserRef) -> None:
        """Ask the auth service for `user`'s token with a short retry budget: raises
        ClientCredentialsRejected (401) or UpstreamUnreachable (no usable answer), so a run can
        stop at once with one reason. The answer is kept: a token is cached, a refusal stands
        for the run, so the probe costs no extra request."""
        try:
            issued = await self._request_token(user, deadline_s=PROBE_DEADLINE_S)
        except UserNeedsReconnect as refusal:
            self._tokens.remember_refusal(user, refusal)  # reachable; this user must reconnect
            return
        except RequestFailed as failure:
            raise UpstreamUnreachable(
                service="auth service", base_url=self._settings.auth_url, reason=failure.reason
            ) from None
        self._tokens.remember(user, issued)

    async def iter_pages(
        self,
        user: UserRef,
        endpoint: Endpoint,
        *,
        updated_since: datetime | None = None,
        created_since: datetime | None = None,
        source: str | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[Page]:
        """Every page of a list endpoint for one user, following `Link: rel="next"`."""
        if endpoint.single_object:
            raise ValueError(f"{endpoint.path} answers one object: use fetch_object")
        limit = min(max(page_size or self._settings.page_size, 1), MAX_PAGE_SIZE)
        params: dict[str, str | int] = {"limit": limit}
        if updated_since is not None:
            params["updated_since"] = format_upstream_time(updated_since)
        if created_since is not None:
            params["created_since"] = format_upstream_time(created_since)
        if source is not None:
            params["source"] = source
        url = httpx.URL(self._data_url(endpoint.path), params=params)
        visited = {url}
        pages = received = 0
        while True:
            answer, request_id = await self._get_json(user, url)
            records = self._as_records(answer.payload, url, request_id)
            total = _header_int(answer.response, "x-total-count")
            pages += 1
            received += len(records)
            yield Page(
                records, total, request_id,
                body_bytes=answer.body_bytes, plain_body=answer.plain_body,
            )  # fmt: skip
            next_link = answer.response.links.get("next", {}).get("url")
            if not next_link:
                return
            overrun = self._overrun(pages, received, len(records), total, limit)
            if overrun:
                raise RequestFailed(
                    path=raw_path(url), status=answer.response.status_code,
                    request_id=request_id, reason=overrun,
                )  # fmt: skip
            url, rebuilt = resolve_next_link(
                next_link, current=answer.response.url, api_base=self._api_base
            )
            if rebuilt:
                logger.warning(
                    "next-page link of %s named another host; following its path on the "
                    "configured API host instead (request %s)",
                    raw_path(url),
                    request_id,
                )
            if url in visited:
                raise RequestFailed(
                    path=raw_path(url),
                    status=answer.response.status_code,
                    request_id=request_id,
                    reason="next-page link repeats an earlier page",
                )
            visited.add(url)

    async def fetch_record(
        self, user: UserRef, endpoint: Endpoint, record_id: str
    ) -> dict[str, Any] | None:
        """One record by id; None when the upstream answers 404 (deleted there)."""
        url = httpx.URL(f"{self._data_url(endpoint.path)}/{quote_path_segment(record_id)}")
        return await self._get_object(user, url)

    async def fetch_object(self, user: UserRef, endpoint: Endpoint) -> dict[str, Any] | None:
        """A single-object endpoint (`medical/profile`); None when the upstream answers 404."""
        if not endpoint.single_object:
            raise ValueError(f"{endpoint.path} is a list: use iter_pages")
        return await self._get_object(user, httpx.URL(self._data_url(endpoint.path)))

    async def list_sources(self, user: UserRef) -> list[dict[str, Any]]:
        """The user's connected sources (`GET /v1/human/sources`)."""
        url = httpx.URL(self._data_url(SOURCES_PATH))
        answer, request_id = await self._get_json(user, url)
        records = self._as_records(answer.payload, url, request_id)
        return [r for r in records if isinstance(r, dict)]

    def upstream_now(self) -> datetime:
        """The upstream's own notion of now: the newest `Date` header it sent, moved on by the
        time since (monotonic clock), else this client's start. A Date further ahead of our
        clock than SYNC_FUTURE_TOLERANCE_S is not believed (it would carry cursors with it)."""
        if self._upstream_now is None:
            return self._started_at
        return self._upstream_now + timedelta(seconds=time.monotonic() - self._upstream_now_seen_at)

    def _note_date(self, response: httpx.Response) -> None:
        stamp = parse_http_date(response.headers.get("date"))
        if stamp is None:
            return
        latest = datetime.now(UTC) + timedelta(seconds=self._settings.future_tolerance_s)
        if stamp > latest:
            return
        if self._upstream_now is None or stamp >= self.upstream_now():
            self._upstream_now = stamp
            self._upstream_now_seen_at = time.monotonic()

    # ---- data requests ----------------------------------------------------------------------

    def _data_url(self, path: str) -> str:
        return f"{self._settings.api_url}/v1/human/{path}"

    async def _get_object(self, user: UserRef, url: httpx.URL) -> dict[str, Any] | None:
        answer, request_id = await self._get_json(user, url, absent_ok=True)
        if answer.response.status_code == 404:
            return None
        if not isinstance(answer.payload, dict):
            raise RequestFailed(
                path=raw_path(url),
                status=answer.response.status_code,
                request_id=request_id,
                reason="expected a JSON object",
            )
        return answer.payload

    def _overrun(
        self, pages: int, received: int, last: int, total: int | None, limit: int
    ) -> str | None:
        """Why a Link chain must not be followed further, if it must not: past the page cap,
        far past what X-Total-Count announced (more than twice its records, plus a page for
        records added while paging), or an empty page that still links on once every announced
        record has arrived."""
        if pages >= self._settings.max_pages:
            return f"next-page links go on past {pages} pages (SYNC_MAX_PAGES)"
        if total is not None and (received > 2 * total + limit or (not last and received >= total)):
            return (
                f"next-page links go on far past X-Total-Count {total} "
                f"({received} records in {pages} pages)"
            )
        return None

    @staticmethod
    def _as_records(payload: Any, url: httpx.URL, request_id: str) -> list[Any]:
        """A list page's records. Elements that are not objects pass on: the normaliser
        rejects each with a reason, and the rest of the page still loads."""
        if not isinstance(payload, list):
            raise RequestFailed(
                path=raw_path(url), status=200, request_id=request_id,
                reason=f"expected a JSON array, got {_json_kind(payload)}",
            )  # fmt: skip
        return payload

    async def _get_json(
        self, user: UserRef, url: httpx.URL, *, absent_ok: bool = False
    ) -> tuple[_Answer, str]:
        state = _RequestState("GET", raw_path(url), uuid.uuid4().hex, user.human_id)
        answer = await self._with_retries(state, lambda: self._data_attempt(state, user, url))
        status = answer.response.status_code
        if status == 404 and absent_ok:
            return answer, state.request_id
        if status >= 300:
            raise RequestFailed(
                path=state.path, status=status, request_id=state.request_id,
                reason="the data API refused the request",
            )  # fmt: skip
        return answer, state.request_id

    async def _data_attempt(self, state: _RequestState, user: UserRef, url: httpx.URL) -> _Answer:
        token = await self._token_for(user)
        answer = await self._send(state, self._data_request(url, token, state.request_id))
        if answer.response.status_code == 401:
            # The token may have expired early or been revoked: fetch a new one, once per request.
            self._tokens.invalidate(user.client_user_id, token)
            token = await self._token_for(user)
            answer = await self._send(state, self._data_request(url, token, state.request_id))
        return answer

    def _data_request(self, url: httpx.URL, token: str, request_id: str) -> httpx.Request:
        return self._client.build_request(
            "GET",
            url,
            headers={"Authorization": f"Bearer {token}", "X-Request-Id": request_id},
        )

    # ---- tokens -----------------------------------------------------------------------------

    async def _token_for(self, user: UserRef) -> str:
        return await self._tokens.get(user)

    async def _request_token(
        self, user: UserRef, *, deadline_s: float | None = None
    ) -> IssuedToken:
        client_user_id, human_id = user.client_user_id, user.human_id
        url = httpx.URL(f"{self._settings.auth_url}{TOKEN_PATH}")
        state = _RequestState("POST", raw_path(url), uuid.uuid4().hex, human_id)
        body = {
            "client_id": self._settings.client_id,
            "client_secret": self._settings.client_secret,
            "client_user_id": client_user_id,
            "type": "access",
        }

        async def attempt() -> _Answer:
            request = self._client.build_request(
                "POST", url, json=body, headers={"X-Request-Id": state.request_id}
            )
            return await self._send(state, request, is_token=True)

        answer = await self._with_retries(state, attempt, deadline_s=deadline_s)
        status = answer.response.status_code
        if status == 401:
            raise ClientCredentialsRejected()
        if status in (403, 404):
            raise UserNeedsReconnect(
                client_user_id=client_user_id, human_id=human_id, status=status
            )
        payload = answer.payload
        token = payload.get("access_token") if isinstance(payload, dict) else None
        if status >= 300 or not isinstance(token, str) or not token:
            raise RequestFailed(
                path=state.path, status=status, request_id=state.request_id,
                reason="the auth service did not issue a token",
            )  # fmt: skip
        return IssuedToken(token, token_lifetime_s(payload.get("expires_in")))

    # ---- one request, its retries and its attempts ------------------------------------------

    @property
    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("use UpstreamClient as `async with UpstreamClient(...) as client`")
        return self._http

    async def _with_retries(
        self,
        state: _RequestState,
        attempt: Callable[[], Awaitable[_Answer]],
        *,
        deadline_s: float | None = None,
    ) -> _Answer:
        """`deadline_s` may shorten the configured deadline (the probe), never lengthen it."""
        deadline_s = min(
            deadline_s or self._settings.http_deadline_s, self._settings.http_deadline_s
        )
        deadline = time.monotonic() + deadline_s
        state.deadline = deadline

        def retry_wait(exc: Exception) -> bool | float:
            if not isinstance(exc, _Transient):
                return False
            if exc.retry_after_s is None:
                return True  # stamina's exponential backoff with jitter
            if time.monotonic() + exc.retry_after_s >= deadline:
                # waiting that long would outlive the deadline: fail now, and say why
                exc.reason = (
                    f"{exc.reason} asked to wait {exc.retry_after_s:.0f} s, past the "
                    f"request's {deadline_s:g} s deadline"
                )
                return False
            return exc.retry_after_s

        try:
            async with asyncio.timeout(deadline_s):
                async for retry in stamina.retry_context(
                    on=retry_wait,
                    attempts=max(1, self._settings.http_max_attempts),
                    timeout=deadline_s,
                    wait_initial=_WAIT_INITIAL_S,
                    wait_max=_WAIT_MAX_S,
                    wait_jitter=_WAIT_JITTER_S,
                ):
                    with retry:
                        return await attempt()
        except TimeoutError:
            raise RequestFailed(
                path=state.path, status=None, request_id=state.request_id,
                reason=f"no answer within the {deadline_s:g} s deadline",
            ) from None  # fmt: skip
        except _Transient as exc:
            raise RequestFailed(
                path=state.path, status=exc.status, request_id=state.request_id,
                reason=f"gave up after {state.attempts} attempts: {exc.reason}",
            ) from None  # fmt: skip
        except _Refused as exc:
            raise RequestFailed(
                path=state.path, status=exc.status, request_id=state.request_id,
                reason=exc.reason,
            ) from None  # fmt: skip
        except WaitTooLong as exc:
            raise RequestFailed(
                path=state.path, status=None, request_id=state.request_id, reason=str(exc)
            ) from None
        raise AssertionError("stamina.retry_context yields until success or raises")

    async def _send(
        self, state: _RequestState, request: httpx.Request, *, is_token: bool = False
    ) -> _Answer:
        """One HTTP exchange: slot, budget, send, read the body (bounded), audit, log;
        _Transient if worth retrying, _Refused if not."""
        if self._slots is None:
            raise RuntimeError("use UpstreamClient as `async with UpstreamClient(...) as client`")
        lane = await self._slots.get()
        try:
            await self._budget.acquire(deadline=state.deadline)
            state.attempts += 1
            if is_token:
                self.token_request_count += 1
            else:
                self.request_count += 1
            started_at = datetime.now(UTC)
            started = time.perf_counter()
            logger.debug(
                "-> %s %s (request %s, attempt %d)",
                state.method, state.path, state.request_id, state.attempts,
            )  # fmt: skip
            response: httpx.Response | None = None
            try:
                response = await lane.send(request, stream=True)
                body = await self._read_body(response)
            except (httpx.TransportError, httpx.DecodingError) as exc:
                if response is not None:
                    await response.aclose()
                reason = type(exc).__name__
                self._finish(state, started_at, started, None, reason)
                raise _Transient(None, reason, None) from exc
            except BodyRefused as exc:
                self._finish(state, started_at, started, response, str(exc))
                status = response.status_code if response is not None else None
                raise _Refused(status, str(exc)) from None
        finally:
            self._slots.put_nowait(lane)
        return self._judge(state, response, body, started_at, started)

    async def _read_body(self, response: httpx.Response) -> bytes:
        if 200 <= response.status_code < 300:
            return await read_capped(response, self._settings.max_response_bytes)
        try:  # an error body is only ever shown in DEBUG logs: a little of it is enough
            return await read_capped(response, _ERROR_BODY_BYTES)
        except BodyRefused:
            return b""

    def _judge(
        self,
        state: _RequestState,
        response: httpx.Response,
        body: bytes,
        started_at: datetime,
        started: float,
    ) -> _Answer:
        status = response.status_code
        self._note_date(response)
        retry_after = parse_retry_after(response.headers.get("retry-after"), now=datetime.now(UTC))
        self._budget.observe(status, response.headers, retry_after_s=retry_after)
        if _is_retryable_status(status):
            self._finish(state, started_at, started, response, f"HTTP {status}", body)
            raise _Transient(status, f"HTTP {status}", retry_after)
        if status >= 300:
            self._finish(state, started_at, started, response, f"HTTP {status}", body)
            return _Answer(response, None, len(body))
        try:
            payload, plain = decode_plain(body)
        except BodyRefused as exc:
            self._finish(state, started_at, started, response, str(exc), body)
            raise _Refused(status, str(exc)) from None
        except ValueError:
            # A cut-off body behind a complete-looking read (proxies, dropped chunks): transient.
            self._finish(state, started_at, started, response, "invalid JSON body", body)
            raise _Transient(status, "invalid JSON body", None) from None
        self._finish(state, started_at, started, response, None, body)
        return _Answer(response, payload, len(body), body if plain else None)

    def _finish(
        self,
        state: _RequestState,
        started_at: datetime,
        started: float,
        response: httpx.Response | None,
        error: str | None,
        body: bytes = b"",
    ) -> None:
        duration_ms = (time.perf_counter() - started) * 1000
        status = response.status_code if response is not None else None
        if logger.isEnabledFor(logging.DEBUG):
            preview = (
                body_preview(body, self._settings.debug_body_lines)
                if response is not None
                else "<no response>"
            )
            logger.debug(
                "<- %s %s %s (request %s, attempt %d, %.0f ms)%s\n%s",
                state.method, state.path, status if status is not None else "-",
                state.request_id, state.attempts, duration_ms,
                f" [{error}]" if error else "", preview,
            )  # fmt: skip
        if self._on_request is None:
            return
        self._on_request(
            RequestAudit(
                request_id=state.request_id,
                method=state.method,
                path=state.path,
                status=status,
                attempt=state.attempts,
                duration_ms=duration_ms,
                started_at=started_at,
                rate_limit_limit=_header_int(response, "x-ratelimit-limit") if response else None,
                rate_limit_remaining=(
                    _header_int(response, "x-ratelimit-remaining") if response else None
                ),
                rate_limit_reset=_header_int(response, "x-ratelimit-reset") if response else None,
                error=error,
                human_id=state.human_id,
            )
        )
