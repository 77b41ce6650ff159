"""A shared request-rate budget that paces requests to what the upstream says it allows.

Three sources of truth, the strictest wins:

- the configured ceiling (`SYNC_RATE_LIMIT_PER_S`), if any;
- the upstream's own headers: `X-RateLimit-Remaining` requests left until `X-RateLimit-Reset`
  give a pace that spends what is left evenly over the rest of the window, and `Remaining: 0`
  pauses everyone until the reset;
- 429s: each one halves the pace (measured from our own recent requests when no pace was set)
  and pauses everyone for its `Retry-After`; successes then raise the pace back slowly (1% per
  success), the usual additive-ish recovery that converges just under the real limit instead of
  oscillating into a 429 storm.

No one response can stop everyone for long: a pause (429 `Retry-After`, `Remaining: 0` until a
reset) lasts at most `max_pause_s` (SYNC_HTTP_MAX_PAUSE_S), however far ahead the upstream
says; and `acquire(deadline=...)` refuses at once, with `WaitTooLong`, a wait that would end
past the caller's deadline, so that request fails with a reason instead of timing out.

It is an async GCRA (virtual-scheduling token bucket) with a small burst, safe to share between
clients and tasks in one event loop. With `SYNC_RATE_BACKEND=redis://...` the same rules run in
Redis instead (shared_budget.py), one budget per upstream host for every worker process, so N
workers together stay under the upstream's limit; in-process state is then only a cache.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping

from sync_pipeline.upstream.options import UpstreamOptions
from sync_pipeline.upstream.shared_budget import Op, SharedBudget

# Reset values above this are absolute epoch seconds, below it a delay in seconds: upstreams
# use both conventions and no real window is 30 years long.
_EPOCH_THRESHOLD_S = 1_000_000_000
_DEFAULT_PAUSE_S = 1.0
_RECOVERY_FACTOR = 1.01
_MEASURE_WINDOW_S = 2.0


class WaitTooLong(Exception):
    """The budget would make a request wait past its deadline."""

    def __init__(self, wait_s: float, remaining_s: float) -> None:
        self.wait_s = wait_s
        super().__init__(
            f"the shared rate budget is paused for {wait_s:.1f} s, past the "
            f"{max(remaining_s, 0.0):.1f} s left before the request's deadline"
        )


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return int(float(raw.strip()))
    except ValueError:
        return None


class RateBudget:
    def __init__(
        self,
        rate_per_s: float | None = None,
        *,
        burst: int = 4,
        min_rate_per_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        shared: SharedBudget | None = None,
        max_pause_s: float = 60.0,
    ) -> None:
        if rate_per_s is not None and rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive (or None for no ceiling)")
        self._ceiling = rate_per_s
        self._header_rate: float | None = None
        self._backoff_rate: float | None = None
        self._burst = max(1, burst)
        self._min_rate = min_rate_per_s
        self._max_pause = max(0.0, max_pause_s)
        self._clock = clock
        self._wall_clock = wall_clock
        self._tat = 0.0  # theoretical arrival time of the next request (GCRA)
        self._paused_until = 0.0
        self._recent: deque[float] = deque()
        self._lock = asyncio.Lock()
        self._shared = shared
        # the shared pace and 429-learned pace as of the last reply from Redis
        self._shared_rate: float | None = None
        self._shared_backoff: float | None = None

    @classmethod
    def from_settings(cls, settings: UpstreamOptions) -> RateBudget:
        shared = (
            SharedBudget.for_upstream(settings.rate_backend, settings.api_url)
            if settings.rate_backend
            else None
        )
        return cls(settings.rate_limit_per_s, shared=shared, max_pause_s=settings.http_max_pause_s)

    @property
    def shared(self) -> SharedBudget | None:
        return self._shared

    @property
    def rate_per_s(self) -> float | None:
        """The pace requests currently get, or None when nothing limits them."""
        if self._shared is not None:
            return self._shared_rate
        limits = [r for r in (self._ceiling, self._header_rate, self._backoff_rate) if r]
        return min(limits) if limits else None

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def _try_take(self) -> float:
        """Take a slot if one is free now (returns 0), else how long until one may be.

        Nothing is booked ahead: a waiter re-checks after sleeping, so a pace that changed
        meanwhile (headers, a 429, a pause) applies to requests already waiting.
        """
        now = self._clock()
        if now < self._paused_until:
            return self._paused_until - now
        rate = self.rate_per_s
        if rate is None:
            return 0.0
        interval = 1.0 / rate
        allowed = max(now, self._tat - (self._burst - 1) * interval)
        if allowed > now:
            return allowed - now
        self._tat = max(self._tat, now) + interval
        return 0.0

    async def acquire(self, *, deadline: float | None = None) -> None:
        """Wait until one more request fits the budget; WaitTooLong instead of a wait that would
        end past `deadline` (a time.monotonic() instant)."""
        if self._shared is not None:
            await self._acquire_shared(self._shared, deadline)
            return
        while True:
            async with self._lock:
                delay = self._try_take()
                if delay <= 0:
                    self._note_sent()
                    return
            _check_deadline(delay, deadline)
            await asyncio.sleep(delay)

    async def _acquire_shared(self, shared: SharedBudget, deadline: float | None) -> None:
        # One task per process asks Redis at a time (the lock is held while it sleeps): the
        # others would only ask the same question at the same instant and be told to wait.
        # The holder asks again after each sleep, so a pause or a new pace applies at once.
        async with self._lock:
            while True:
                reply = self._shared_call("take")
                if reply <= 0:
                    self._note_sent()
                    return
                _check_deadline(reply, deadline)
                await asyncio.sleep(reply)

    def _shared_call(self, op: Op, arg: float = 0.0) -> float:
        assert self._shared is not None
        reply = self._shared.call(
            op, ceiling=self._ceiling, burst=self._burst, min_rate=self._min_rate, arg=arg
        )
        self._shared_rate = reply.rate_per_s
        self._shared_backoff = reply.backoff_rate_per_s
        return reply.delay_s

    def _note_sent(self) -> None:
        now = self._clock()
        self._recent.append(now)
        while self._recent and self._recent[0] < now - _MEASURE_WINDOW_S:
            self._recent.popleft()

    def _measured_rate(self) -> float | None:
        if len(self._recent) < 2:
            return None
        span = max(self._recent[-1] - self._recent[0], 1e-3)
        return (len(self._recent) - 1) / span

    def observe(
        self, status: int, headers: Mapping[str, str], *, retry_after_s: float | None = None
    ) -> None:
        """Adapt to one response: its rate-limit headers and whether it was a 429."""
        self._observe_headers(headers)
        if status == 429:
            self._throttled(retry_after_s)
        elif status < 400:
            if self._shared is not None:
                if self._shared_backoff is not None:
                    self._shared_call("recover", _RECOVERY_FACTOR)
            elif self._backoff_rate is not None:
                self._backoff_rate *= _RECOVERY_FACTOR

    def _observe_headers(self, headers: Mapping[str, str]) -> None:
        headers = {name.lower(): value for name, value in headers.items()}
        remaining = _header_int(headers, "x-ratelimit-remaining")
        reset = _header_int(headers, "x-ratelimit-reset")
        if remaining is None or reset is None:
            return
        reset_in = reset - self._wall_clock() if reset >= _EPOCH_THRESHOLD_S else float(reset)
        # a reset years ahead (or a clock years off) is not a window anyone waits out
        reset_in = min(max(reset_in, 0.0), self._max_pause)
        if remaining <= 0:
            if reset >= _EPOCH_THRESHOLD_S and reset_in <= 0:
                # the window this answer was counted in has ended: a late answer (its request
                # left just before the reset, the reply came after it), not a reason to stop
                # everyone for another second
                return
            self._pause_for(reset_in if reset_in > 0 else _DEFAULT_PAUSE_S)
            return
        if reset_in > 0:
            if self._shared is not None:
                self._shared_call("header_rate", remaining / reset_in)
            else:
                self._header_rate = max(self._min_rate, remaining / reset_in)

    def _throttled(self, retry_after_s: float | None) -> None:
        if self._shared is not None:
            pause = _DEFAULT_PAUSE_S if retry_after_s is None else retry_after_s
            self._shared_call("throttle", min(pause, self._max_pause))
            return
        # 429s from one burst arrive together: slow down once per pause, not once per 429,
        # or a burst of ten would cut the pace a thousandfold.
        if self._clock() >= self._paused_until:
            current = self.rate_per_s or self._measured_rate()
            if current is not None:
                self._backoff_rate = max(self._min_rate, current / 2)
        self._pause_for(retry_after_s if retry_after_s is not None else _DEFAULT_PAUSE_S)

    def _pause_for(self, seconds: float) -> None:
        seconds = min(seconds, self._max_pause)
        if self._shared is not None:
            self._shared_call("pause", seconds)
            return
        self._paused_until = max(self._paused_until, self._clock() + seconds)


def _check_deadline(delay: float, deadline: float | None) -> None:
    if deadline is None:
        return
    remaining = deadline - time.monotonic()
    if delay > remaining:
        raise WaitTooLong(delay, remaining)
