"""Measuring helpers: peak RSS per run, percentiles, and stage timers around the sync code.

The stage timers wrap functions the sync engine looks up at call time (normalisation, staging,
fetch, commit) for the duration of one run and restore them afterwards, so the benchmark times
the real code path without the engine carrying benchmark hooks. Typing runs in a worker process
or a thread and staging in a thread, both overlapping the fetch phase, whose wall time the
"fetch_phase" stage is.
"""

from __future__ import annotations

import functools
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS counter (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mib() -> float:
    """Peak RSS since the last reset (VmHWM) where the kernel offers it, else since start."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@dataclass
class StageClock:
    """Accumulated seconds per stage name."""

    seconds: dict[str, float] = field(default_factory=dict)
    # this process's peak RSS during the fetch phase (the typing worker is alive then only)
    fetch_peak_rss_mib: float | None = None

    def add(self, stage: str, elapsed: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + elapsed

    def wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(stage, time.perf_counter() - started)

        return timed

    def wrap_async(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.add(stage, time.perf_counter() - started)

        return timed

    def wrap_fetch_phase(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Time the fetch phase and keep this process's peak RSS during it apart from the
        commit's: the typing worker exits with the fetch, so the run's peak is the larger of
        (fetch peak + the worker's) and the commit's."""
        timed = self.wrap_async("fetch_phase", fn)

        @functools.wraps(fn)
        async def fetch_phase(*args: Any, **kwargs: Any) -> Any:
            try:
                return await timed(*args, **kwargs)
            finally:
                self.fetch_peak_rss_mib = peak_rss_mib()
                reset_peak_rss()

        return fetch_phase


@contextmanager
def patched(target: Any, name: str, replacement: Any) -> Iterator[None]:
    original = getattr(target, name)
    setattr(target, name, replacement)
    try:
        yield
    finally:
        setattr(target, name, original)


@contextmanager
def sync_stage_clock() -> Iterator[StageClock]:
    """Time read_inputs, fetch_plan, Stager.add/finish and commit_run (typing is timed where
    it runs, often the worker process: FetchResult.typing_s)."""
    from sync_pipeline.sync import run
    from sync_pipeline.sync.commit import commit_run
    from sync_pipeline.sync.fetch import fetch_plan
    from sync_pipeline.sync.stage import Stager

    clock = StageClock()
    with (
        patched(run, "read_inputs", clock.wrap("plan", run.read_inputs)),
        patched(run, "fetch_plan", clock.wrap_fetch_phase(fetch_plan)),
        patched(Stager, "add", clock.wrap("stage", Stager.add)),
        patched(Stager, "finish", clock.wrap("stage", Stager.finish)),
        patched(run, "commit_run", clock.wrap("commit", commit_run)),
    ):
        yield clock
