"""Stopping a sync on SIGINT or SIGTERM within seconds, with nothing half-committed.

Dagster turns an interrupt inside a step into a retry when the step has a retry policy (right
for a preempted pod, wrong for an operator pressing Ctrl-C), and its own handlers only raise
at checkpoints. While a sync runs, `StopSignals` owns both signals instead: the first one
cancels the fetch (in-flight requests are cancelled with it), the sync stages nothing more,
skips its commit and raises `SyncInterrupted`, which the asset turns into a failure that is
not retried. A signal that arrives during the commit lets the commit finish (it is one
transaction, and short) and then stops the run.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SyncInterrupted(Exception):
    def __init__(self, signal_name: str, *, committed: bool) -> None:
        self.signal_name = signal_name
        self.committed = committed
        done = "after its commit" if committed else "before its commit: nothing was committed"
        super().__init__(f"sync stopped by {signal_name} {done}")


class StopSignals:
    """Context manager: while active (main thread only; elsewhere it watches nothing), SIGINT
    and SIGTERM are remembered and cancel the task registered with `watch`."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def watch(self) -> None:
        """Called from inside the coroutine to cancel on a signal (at once if one came)."""
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        if self.received is not None and self._task is not None:
            self._task.cancel()

    def raise_if_received(self, *, committed: bool) -> None:
        if self.received is not None:
            raise SyncInterrupted(self.received, committed=committed)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received = self.received or signal.Signals(signum).name
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            # the handler runs between two bytecodes of the main thread, possibly inside the
            # event loop's select(): hand the cancel to the loop rather than reenter it
            loop.call_soon_threadsafe(task.cancel)
