from __future__ import annotations

import asyncio
import time

import pytest

from sync_pipeline.upstream.ratelimit import RateBudget


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_refuses_non_positive_rate() -> None:
    with pytest.raises(ValueError):
        RateBudget(0)


@pytest.mark.anyio
async def test_paces_to_the_configured_rate_after_the_burst() -> None:
    budget = RateBudget(50, burst=1)
    started = time.monotonic()
    await asyncio.gather(*(budget.acquire() for _ in range(11)))
    # 11 requests at 50/s with no burst: the 11th may go 10 intervals after the first.
    assert time.monotonic() - started >= 10 / 50 - 0.01


@pytest.mark.anyio
async def test_unlimited_budget_does_not_wait() -> None:
    budget = RateBudget(None)
    started = time.monotonic()
    await asyncio.gather(*(budget.acquire() for _ in range(200)))
    # no pacing at all: even a 1/s budget would need minutes for this
    assert time.monotonic() - started < 1.0
    assert budget.rate_per_s is None


@pytest.mark.parametrize(
    ("headers", "expected_rate"),
    [
        (
            {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "10", "X-RateLimit-Reset": "5"},
            2.0,
        ),
        # absolute reset (epoch seconds): 20 left over the next 10 s of wall time
        ({"X-RateLimit-Remaining": "20", "X-RateLimit-Reset": str(1_700_000_010)}, 2.0),
        # incomplete or garbage headers teach nothing
        ({"X-RateLimit-Remaining": "10"}, None),
        ({"X-RateLimit-Remaining": "lots", "X-RateLimit-Reset": "5"}, None),
    ],
)
def test_paces_to_what_the_headers_leave(
    headers: dict[str, str], expected_rate: float | None
) -> None:
    budget = RateBudget(None, wall_clock=lambda: 1_700_000_000.0)
    budget.observe(200, headers)
    assert budget.rate_per_s == expected_rate


def test_configured_rate_is_a_ceiling_over_generous_headers() -> None:
    budget = RateBudget(5)
    budget.observe(200, {"X-RateLimit-Remaining": "1000", "X-RateLimit-Reset": "1"})
    assert budget.rate_per_s == 5


def test_exhausted_window_pauses_until_reset() -> None:
    clock = FakeClock()
    budget = RateBudget(None, clock=clock)
    budget.observe(200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "7"})
    assert budget.paused_until == pytest.approx(clock.now + 7)


def test_an_exhausted_window_that_has_already_ended_pauses_no_one() -> None:
    """`Remaining: 0` of a window whose (absolute) reset is already past arrives late: its
    request left just before the reset. The next window is open; pausing a second would idle
    the fetch for a whole window each time (what the bench's request timeline showed)."""
    clock = FakeClock()
    budget = RateBudget(None, clock=clock, wall_clock=lambda: 1_700_000_000.2)
    budget.observe(200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1700000000"})
    assert budget.paused_until <= clock.now
    # one still to come pauses until it
    budget.observe(200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1700000001"})
    assert budget.paused_until == pytest.approx(clock.now + 0.8)


def test_429_halves_the_pace_once_per_pause_then_recovers_slowly() -> None:
    clock = FakeClock()
    budget = RateBudget(10, clock=clock)
    budget.observe(429, {}, retry_after_s=3)
    assert budget.rate_per_s == 5
    assert budget.paused_until == pytest.approx(clock.now + 3)
    budget.observe(429, {}, retry_after_s=1)  # same burst, still paused: no second cut
    assert budget.rate_per_s == 5
    clock.now += 3
    budget.observe(429, {}, retry_after_s=None)  # a new episode after the pause: cut again
    assert budget.rate_per_s == 2.5
    for _ in range(10):
        budget.observe(200, {})
    assert 2.5 < budget.rate_per_s < 3


@pytest.mark.anyio
async def test_429_without_a_configured_rate_halves_the_measured_rate() -> None:
    budget = RateBudget(None)
    for _ in range(20):
        await budget.acquire()
        await asyncio.sleep(0.005)
    budget.observe(429, {}, retry_after_s=0)
    measured_half = budget.rate_per_s
    assert measured_half is not None and 20 < measured_half < 110


@pytest.mark.anyio
async def test_acquire_waits_out_a_pause_seen_while_sleeping() -> None:
    budget = RateBudget(None)
    budget.observe(429, {}, retry_after_s=0.2)
    started = time.monotonic()
    await budget.acquire()
    assert time.monotonic() - started >= 0.19
