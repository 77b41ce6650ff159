"""Child-process bodies for test_ratelimit_shared.py, in a module of their own so a spawned
child imports only the rate budget (not Dagster and the rest of the test's imports)."""

from __future__ import annotations

import asyncio
import time
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event

from sync_pipeline.upstream.ratelimit import RateBudget
from sync_pipeline.upstream.shared_budget import SharedBudget


def budget(url: str, key: str, rate: float | None, burst: int = 1) -> RateBudget:
    return RateBudget(rate, burst=burst, shared=SharedBudget(url, key))


def pace(
    url: str,
    key: str,
    rate: float,
    seconds: float,
    ready: Queue,
    start_at: Synchronized,
    go: Event,
    out: Queue,
) -> None:
    """Take as many grants as the shared budget gives from `start_at` for `seconds`, with 8
    concurrent requesters; put the grant times (wall clock) on `out`."""

    async def run() -> list[float]:
        shared = budget(url, key, rate)
        await shared.acquire()  # connected: the budget works in this process
        ready.put(True)
        while not go.is_set():
            await asyncio.sleep(0.01)
        start = float(start_at.value)
        until = start + seconds
        await asyncio.sleep(max(0.0, start - time.time()))
        grants: list[float] = []

        async def requester() -> None:
            while time.time() < until:
                await shared.acquire()
                grants.append(time.time())

        await asyncio.gather(*(requester() for _ in range(8)))
        return grants

    out.put(asyncio.run(run()))


def wait_for_pause(url: str, key: str, ready: Event, go: Event, out: Queue) -> None:
    """Once told a 429 happened elsewhere, measure how long one request must wait."""
    shared = budget(url, key, 1000.0, burst=4)
    asyncio.run(shared.acquire())
    ready.set()
    go.wait(30)
    started = time.monotonic()
    asyncio.run(shared.acquire())
    out.put((time.monotonic() - started, shared.rate_per_s))
