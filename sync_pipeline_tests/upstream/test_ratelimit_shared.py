"""The request-rate budget shared through Redis (SYNC_RATE_BACKEND), against the real Redis on
127.0.0.1 that .ci/services starts (absent → the tests fail with the fix, never skip).

Worker processes are real processes (multiprocessing, spawn), each with its own RateBudget and
event loop, pacing against one upstream key."""

from __future__ import annotations

import multiprocessing as mp
import time
import uuid
from collections import Counter
from dataclasses import replace
from multiprocessing.queues import Queue

import pytest

from sync_pipeline.settings import SettingsError, load_settings
from sync_pipeline.upstream.ratelimit import RateBudget
from sync_pipeline.upstream.shared_budget import SharedBudget, SharedBudgetError, upstream_key
from sync_pipeline_tests.distributed.services import require_redis
from sync_pipeline_tests.upstream import shared_workers

SPAWN = mp.get_context("spawn")


@pytest.fixture
def redis_url() -> str:
    return require_redis()


@pytest.fixture
def key() -> str:
    # a key of its own per test: an upstream "host" nobody else uses
    return upstream_key(f"http://test-{uuid.uuid4().hex[:10]}:1")


_budget = shared_workers.budget


@pytest.mark.slow
def test_two_processes_on_one_key_stay_within_the_rate(redis_url: str, key: str) -> None:
    rate, seconds = 40.0, 3.0
    ready: Queue = SPAWN.Queue()
    out: Queue = SPAWN.Queue()
    start_at = SPAWN.Value("d", 0.0)
    go = SPAWN.Event()
    procs = [
        SPAWN.Process(
            target=shared_workers.pace,
            args=(redis_url, key, rate, seconds, ready, start_at, go, out),
        )
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=60)
        start = start_at.value = time.time() + 0.2
        until = start + seconds
        go.set()
        results = [out.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
    assert [p.exitcode for p in procs] == [0, 0]
    grants = sorted(t for r in results for t in r if t < until)
    # both got a share; together about rate x seconds, never much more
    assert all(len(r) > rate * seconds * 0.2 for r in results), [len(r) for r in results]
    assert rate * seconds * 0.85 <= len(grants) <= rate * seconds + 2
    # no one-second window (sliding, 0.1 s steps) holds more than the rate (+1 for the edges)
    windows = Counter[float]()
    for step in range(int((seconds - 1) * 10) + 1):
        lo = start + step / 10
        windows[lo] = sum(1 for t in grants if lo <= t < lo + 1)
    assert max(windows.values()) <= rate + 1, max(windows.values())
    # one process alone would have taken the whole rate: the two shared it
    assert min(len(r) for r in results) < rate * seconds * 0.75


@pytest.mark.slow
def test_a_429_in_one_process_pauses_and_slows_the_other(redis_url: str, key: str) -> None:
    ready, go = SPAWN.Event(), SPAWN.Event()
    out: Queue = SPAWN.Queue()
    child = SPAWN.Process(
        target=shared_workers.wait_for_pause, args=(redis_url, key, ready, go, out)
    )
    child.start()
    try:
        assert ready.wait(60), "the child process never reached the budget"
        here = _budget(redis_url, key, 1000.0)
        here.observe(429, {}, retry_after_s=1.5)
        go.set()
        waited, rate = out.get(timeout=30)
    finally:
        child.join(timeout=30)
    assert child.exitcode == 0
    assert 1.2 <= waited < 3.0
    assert rate == pytest.approx(500.0)  # the halved pace is shared too


def test_the_later_pause_wins_and_429s_of_one_episode_halve_once(redis_url: str, key: str) -> None:
    shared = SharedBudget(redis_url, key)
    first, second = _budget(redis_url, key, 100.0), _budget(redis_url, key, 100.0)
    first.observe(429, {}, retry_after_s=5.0)
    second.observe(429, {}, retry_after_s=0.5)  # shorter: must not shorten the pause
    state = shared.state()
    assert state["paused_until"] - shared.server_time() == pytest.approx(5.0, abs=0.5)
    assert state["backoff_rate"] == 50.0  # one halving for the episode, not two
    assert first.rate_per_s == second.rate_per_s == 50.0
    first.observe(200, {})  # a success raises the learned pace 1%
    assert shared.state()["backoff_rate"] == pytest.approx(50.5)
    shared.reset()


@pytest.mark.anyio
async def test_headers_and_a_first_429_without_a_pace_are_shared(redis_url: str, key: str) -> None:
    shared = SharedBudget(redis_url, key)
    budget = _budget(redis_url, key, None, burst=50)
    # unlimited: grants at once, and the grants are counted for a measured pace
    started = time.monotonic()
    for _ in range(30):
        await budget.acquire()
    assert time.monotonic() - started < 1.0
    assert budget.rate_per_s is None
    # headers leave 10 requests over 5 s: everyone's pace becomes 2/s
    budget.observe(200, {"X-RateLimit-Remaining": "10", "X-RateLimit-Reset": "5"})
    other = _budget(redis_url, key, None)
    assert budget.rate_per_s == 2.0
    await other.acquire()
    assert other.rate_per_s == 2.0
    # Remaining: 0 pauses everyone until the reset
    other.observe(200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "3"})
    assert shared.state()["paused_until"] - shared.server_time() == pytest.approx(3.0, abs=0.5)
    shared.reset()
    # a first 429 with no pace set halves the measured pace (30 grants in well under 1 s)
    for _ in range(30):
        await budget.acquire()
    budget.observe(429, {}, retry_after_s=0.1)
    assert shared.state()["backoff_rate"] >= 15.0
    shared.reset()


def test_settings_select_the_shared_budget(redis_url: str) -> None:
    settings = load_settings({"SYNC_RATE_BACKEND": redis_url, "SYNC_API_URL": "http://h:81/x"})
    assert settings.rate_backend == redis_url
    budget = RateBudget.from_settings(settings)
    assert budget.shared is not None
    assert budget.shared.key == "sync:rate:h:81"  # keyed by the upstream host
    assert RateBudget.from_settings(replace(settings, rate_backend=None)).shared is None
    with pytest.raises(SettingsError, match="SYNC_RATE_BACKEND"):
        load_settings({"SYNC_RATE_BACKEND": "memcached://x"})


@pytest.mark.anyio
async def test_an_unreachable_backend_stops_requests(key: str) -> None:
    import socket

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    budget = _budget(f"redis://127.0.0.1:{port}/0", key, 10.0)
    with pytest.raises(SharedBudgetError, match="unreachable"):
        await budget.acquire()
