"""Per-user access tokens: cached until shortly before expiry, one request in flight per user.

The sync runs one task per (user, endpoint); without single-flight, twenty endpoint tasks of a
fresh user would ask the auth service for twenty tokens at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sync_pipeline.upstream.errors import RequestFailed, UserNeedsReconnect
from sync_pipeline.upstream.models import UserRef

# Renew this long before expiry, or 10% of the lifetime for short-lived tokens, so a token
# never expires between being handed out and the request that uses it reaching the upstream.
_MAX_MARGIN_S = 60.0
_MARGIN_FRACTION = 0.1
# Used when the token response omits expires_in: short enough that a wrong guess costs one 401.
DEFAULT_TOKEN_LIFETIME_S = 300.0
# expires_in is the upstream's word, held to sane bounds: 0 or negative would mean one token
# request per data request, years would keep a revoked token cached (a 401 still renews it).
TOKEN_LIFETIME_FLOOR_S = 30.0
TOKEN_LIFETIME_CAP_S = 86_400.0


def token_lifetime_s(expires_in: object) -> float:
    """How long to use a token, from the token response's `expires_in` (any JSON value)."""
    if not isinstance(expires_in, int | float) or isinstance(expires_in, bool):
        return DEFAULT_TOKEN_LIFETIME_S
    lifetime = float(expires_in)
    if lifetime != lifetime:  # NaN
        return DEFAULT_TOKEN_LIFETIME_S
    return min(max(lifetime, TOKEN_LIFETIME_FLOOR_S), TOKEN_LIFETIME_CAP_S)


@dataclass(frozen=True)
class IssuedToken:
    access_token: str = field(repr=False)  # never in a repr, so never in a traceback or log
    expires_in_s: float


@dataclass
class _Cached:
    access_token: str = field(repr=False)
    renew_at: float


def renewal_margin_s(lifetime_s: float) -> float:
    return min(_MAX_MARGIN_S, _MARGIN_FRACTION * max(lifetime_s, 0.0))


class TokenCache:
    def __init__(
        self,
        fetch: Callable[[UserRef], Awaitable[IssuedToken]],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`fetch(user)` asks the auth service; it is called only on a miss."""
        self._fetch = fetch
        self._clock = clock
        self._cached: dict[str, _Cached] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # a refusal (403/404) stands for the rest of the run: asking again per endpoint would
        # only repeat it
        self._refused: dict[str, UserNeedsReconnect] = {}
        # so does a token request that failed after all its retries: the user's other endpoints
        # fail with it at once instead of each retrying the same dead request
        self._failed: dict[str, RequestFailed] = {}

    async def get(self, user: UserRef) -> str:
        """A valid token for the user, from cache or (once, however many callers wait) fetched."""
        client_user_id = user.client_user_id
        cached = self._fresh(client_user_id)
        if cached is not None:
            return cached
        lock = self._locks.setdefault(client_user_id, asyncio.Lock())
        async with lock:
            # Whoever held the lock before us may have just fetched it, or been refused.
            cached = self._fresh(client_user_id)
            if cached is not None:
                return cached
            if client_user_id in self._refused:
                raise self._refused[client_user_id]
            if client_user_id in self._failed:
                raise self._failed[client_user_id]
            try:
                issued = await self._fetch(user)
            except UserNeedsReconnect as refusal:
                self._refused[client_user_id] = refusal
                raise
            except RequestFailed as failure:
                self._failed[client_user_id] = failure
                raise
            self.remember(user, issued)
            return issued.access_token

    def remember(self, user: UserRef, issued: IssuedToken) -> None:
        """Cache a token obtained outside `get` (the run's probe)."""
        lifetime = issued.expires_in_s
        self._cached[user.client_user_id] = _Cached(
            issued.access_token, self._clock() + lifetime - renewal_margin_s(lifetime)
        )

    def remember_refusal(self, user: UserRef, refusal: UserNeedsReconnect) -> None:
        self._refused[user.client_user_id] = refusal

    def invalidate(self, client_user_id: str, rejected_token: str) -> None:
        """Forget the token the data API just refused (401).

        Only if it is still the cached one: when several tasks see the same 401, the first
        invalidates and refetches, and the others then reuse the new token instead of each
        throwing it away again.
        """
        cached = self._cached.get(client_user_id)
        if cached is not None and cached.access_token == rejected_token:
            del self._cached[client_user_id]

    def _fresh(self, client_user_id: str) -> str | None:
        cached = self._cached.get(client_user_id)
        if cached is None or self._clock() >= cached.renew_at:
            return None
        return cached.access_token
