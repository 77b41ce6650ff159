"""One request-rate budget per upstream shared by every worker process, kept in Redis.

N workers that each paced themselves to the upstream's limit would together send N times it.
With `SYNC_RATE_BACKEND=redis://host:port/db`, every `RateBudget` of every process delegates to
one Redis hash per upstream host (`sync:rate:<host:port>`) that holds:

- `tat`: the GCRA's theoretical arrival time of the next request (virtual scheduling);
- `paused_until`: the shared pause after a 429 or `X-RateLimit-Remaining: 0` (the later time
  wins, so a short Retry-After never shortens a longer pause another worker was given);
- `header_rate`: the pace the upstream's `X-RateLimit-*` headers leave, as last seen by anyone;
- `backoff_rate`: the pace learned from 429s (halved once per pause episode, raised 1% per
  success), so a worker that starts later inherits what the others learned;
- `win_*`: grants per second, the measured pace a first 429 halves when nothing set a pace.

Every operation is one Lua script, so read-decide-write is atomic across processes, and its
clock is Redis `TIME`: workers on machines with skewed clocks still share one timeline.
Replies are delays and rates in seconds as strings (Lua numbers come back as integers).

The client is synchronous on purpose: a loopback EVALSHA takes ~0.1 ms, and a blocking client
has no event loop to be bound to, so one connection pool per process serves every run.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

if TYPE_CHECKING:
    # redis comes with the `distributed` extra: imported only when a shared budget is asked for
    import redis

KEY_PREFIX = "sync:rate:"
# idle state expires: a budget nobody used for an hour starts fresh
_TTL_MS = 3_600_000

_SCRIPT = """
local key = KEYS[1]
local op = ARGV[1]
local ceiling = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local min_rate = tonumber(ARGV[4])
local arg = tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local s = redis.call('HMGET', key, 'tat', 'paused_until', 'header_rate', 'backoff_rate',
                     'win_start', 'win_n', 'win_prev')
local tat = tonumber(s[1]) or 0
local paused = tonumber(s[2]) or 0
local header_rate = tonumber(s[3])
local backoff = tonumber(s[4])
local win_start = tonumber(s[5]) or now
local win_n = tonumber(s[6]) or 0
local win_prev = tonumber(s[7]) or 0

local function pace()
  local r = nil
  if ceiling > 0 then r = ceiling end
  if header_rate and (r == nil or header_rate < r) then r = header_rate end
  if backoff and (r == nil or backoff < r) then r = backoff end
  return r
end

local function pause_for(seconds)
  if now + seconds > paused then
    paused = now + seconds
    redis.call('HSET', key, 'paused_until', tostring(paused))
  end
end

local delay = 0
if op == 'take' then
  if now < paused then
    delay = paused - now
  else
    local r = pace()
    if r then
      local interval = 1 / r
      local allowed = math.max(now, tat - (burst - 1) * interval)
      if allowed > now then
        delay = allowed - now
      else
        redis.call('HSET', key, 'tat', tostring(math.max(tat, now) + interval))
      end
    end
    if delay == 0 then
      local span = now - win_start
      if span >= 1 then
        if span < 2 then win_prev = win_n / span else win_prev = 0 end
        win_start = now
        win_n = 0
      end
      redis.call('HSET', key, 'win_start', tostring(win_start), 'win_n', tostring(win_n + 1),
                 'win_prev', tostring(win_prev))
    end
  end
elseif op == 'throttle' then
  -- 429s of one burst arrive together: halve once per pause episode, not once per 429
  if now >= paused then
    local current = pace()
    if current == nil then
      local span = math.max(now - win_start, 0.1)
      local measured = math.max(win_prev, win_n / span)
      if measured > 0 then current = measured end
    end
    if current then
      backoff = math.max(min_rate, current / 2)
      redis.call('HSET', key, 'backoff_rate', tostring(backoff))
    end
  end
  pause_for(arg)
elseif op == 'pause' then
  pause_for(arg)
elseif op == 'header_rate' then
  header_rate = math.max(min_rate, arg)
  redis.call('HSET', key, 'header_rate', tostring(header_rate))
elseif op == 'recover' then
  if backoff then
    backoff = backoff * arg
    redis.call('HSET', key, 'backoff_rate', tostring(backoff))
  end
end
redis.call('PEXPIRE', key, tonumber(ARGV[6]))
local r = pace()
local rs = ''
if r then rs = tostring(r) end
local bs = ''
if backoff then bs = tostring(backoff) end
return {tostring(delay), rs, bs}
"""

Op = Literal["take", "throttle", "pause", "header_rate", "recover"]


class SharedBudgetError(RuntimeError):
    """The shared budget's Redis cannot be reached: stop rather than overrun the upstream."""


@dataclass(frozen=True)
class Reply:
    delay_s: float  # 0 when a request was granted (take) or nothing waits
    rate_per_s: float | None  # the shared pace now (None: nothing limits it)
    backoff_rate_per_s: float | None  # the pace learned from 429s, if any


_pools: dict[tuple[int, str], redis.Redis] = {}
_pools_lock = threading.Lock()


def _client(url: str) -> redis.Redis:
    # one client (connection pool) per process and URL, for the life of the process: runs come
    # and go, and a client per run would leave sockets for the garbage collector to close
    import redis

    key = (os.getpid(), url)
    with _pools_lock:
        client = _pools.get(key)
        if client is None:
            client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
            _pools[key] = client
        return client


def upstream_key(api_url: str) -> str:
    """The budget's key: the upstream's host and port (every path of one host shares it)."""
    parts = urlsplit(api_url)
    return KEY_PREFIX + (parts.netloc or api_url).lower()


class SharedBudget:
    """The Redis side of one upstream's budget; `RateBudget` calls it when configured."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.key = key
        self._client = _client(url)
        self._script = self._client.register_script(_SCRIPT)

    @classmethod
    def for_upstream(cls, url: str, api_url: str) -> SharedBudget:
        return cls(url, upstream_key(api_url))

    def call(
        self,
        op: Op,
        *,
        ceiling: float | None,
        burst: int,
        min_rate: float,
        arg: float = 0.0,
    ) -> Reply:
        import redis

        try:
            delay, rate, backoff = self._script(
                keys=[self.key], args=[op, ceiling or 0, burst, min_rate, arg, _TTL_MS]
            )
        except redis.RedisError as exc:
            raise SharedBudgetError(
                f"the shared rate budget at {self.url} is unreachable ({exc}); "
                "refusing to send requests that no budget governs"
            ) from exc
        return Reply(
            delay_s=max(0.0, float(delay)),
            rate_per_s=float(rate) if rate else None,
            backoff_rate_per_s=float(backoff) if backoff else None,
        )

    def state(self) -> dict[str, float]:
        """The stored fields (for tests and operators)."""
        raw = self._client.hgetall(self.key)
        return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}

    def server_time(self) -> float:
        seconds, micros = self._client.time()
        return float(seconds) + micros / 1e6

    def reset(self) -> None:
        self._client.delete(self.key)
