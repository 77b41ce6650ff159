"""Per-server mutable state of the simulator: request counters, the rate limiter, fault dice."""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from starfleet.config import SimFaults
from starfleet.templates import Record


class Stats:
    """Counters of upstream requests served (the /_sim control routes are not counted)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.total = 0
            self.by_path: Counter[str] = Counter()
            self.by_human_id: Counter[str] = Counter()
            self.by_status: Counter[int] = Counter()

    def record(self, path_template: str, status: int, human_id: str | None) -> None:
        with self._lock:
            self.total += 1
            self.by_path[path_template] += 1
            self.by_status[status] += 1
            if human_id is not None:
                self.by_human_id[human_id] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total": self.total,
                "by_path": dict(self.by_path),
                "by_human_id": dict(self.by_human_id),
                "by_status": {str(k): v for k, v in self.by_status.items()},
                "rate_limited": self.by_status[429],
            }


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_epoch_s: int  # when the current window ends and `limit` requests are allowed again
    retry_after_s: int  # whole seconds until one request is allowed (0 when allowed)


class FixedWindow:
    """One limit over all upstream requests: `limit` per window aligned to the wall clock, the
    convention of `X-RateLimit-*` headers (Remaining left in this window, Reset when it ends),
    so a client may spend Remaining evenly until Reset."""

    def __init__(self, rate: float) -> None:
        self.window_s = 1.0 if rate >= 1 else 1.0 / rate
        self.limit = max(1, round(rate * self.window_s))
        self._window = -1
        self._used = 0
        self._lock = threading.Lock()

    def take(self) -> RateDecision:
        with self._lock:
            now = time.time()
            window = math.floor(now / self.window_s)
            if window != self._window:
                self._window, self._used = window, 0
            allowed = self._used < self.limit
            if allowed:
                self._used += 1
            window_end = (window + 1) * self.window_s
            return RateDecision(
                allowed=allowed,
                limit=self.limit,
                remaining=self.limit - self._used,
                reset_epoch_s=math.ceil(window_end),
                retry_after_s=0 if allowed else max(1, math.ceil(window_end - now)),
            )


class FaultDice:
    """The dice and counters behind the fault knobs; rebuilt whenever the knobs change."""

    def __init__(self, faults: SimFaults) -> None:
        self.faults = faults
        self.rng = random.Random(faults.seed)
        self.bucket = FixedWindow(faults.rate_limit_per_s) if faults.rate_limit_per_s else None
        self._served_by_path: Counter[str] = Counter()
        self._throttled = 0
        self._lock = threading.Lock()

    def roll(self, rate: float) -> bool:
        return rate > 0.0 and self.rng.random() < rate

    def within_first_n(self, url_path: str) -> bool:
        """True while this URL path has been asked fewer than fail_first_n times."""
        with self._lock:
            self._served_by_path[url_path] += 1
            return self._served_by_path[url_path] <= self.faults.fail_first_n

    def throttle_first(self) -> bool:
        """True for the first throttle_first_n requests (any path): a 429 whatever the clock
        says, so a test sees Retry-After honoured on any machine, however fast or loaded."""
        with self._lock:
            self._throttled += 1
            return self._throttled <= self.faults.throttle_first_n


_WRONG_TYPE_FIELDS = (
    "value",
    "systolic",
    "diastolic",
    "duration",
    "steps",
    "calories",
    "timestamp",
    "startTime",
    "dateTime",
    "resultDateTime",
    "status",
    "name",
)
_MISSING_FIELDS = (
    "timestamp",
    "startTime",
    "dateTime",
    "resultDateTime",
    "name",
    "value",
    "createdAt",
    "updatedAt",
    "source",
)


def corrupt(record: Record, rng: random.Random) -> Record:
    """A copy of the record broken the ways real upstream data breaks."""
    broken = dict(record)
    kind = rng.choice(("unknown_field", "wrong_type", "missing_field"))
    wrong = [k for k in _WRONG_TYPE_FIELDS if k in broken]
    missing = [k for k in _MISSING_FIELDS if k in broken]
    if kind == "wrong_type" and wrong:
        broken[rng.choice(wrong)] = "abc"
    elif kind == "missing_field" and missing:
        del broken[rng.choice(missing)]
    else:
        broken[f"simUnexpected{rng.randrange(1000)}"] = {"note": "a field the fixtures never had"}
    return broken
