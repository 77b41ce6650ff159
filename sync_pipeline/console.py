"""What the CLI shows: one log format, a live line per running step, a summary per run.

Log records of every library go through one rich handler on the same console as the live
display, so a warning prints above the progress line instead of through it. Dagster's own
console logger is turned down for CLI runs: the run's events stay in the instance (the UI shows
them) and the CLI reports each run's outcome itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.logging import RichHandler
from rich.status import Status

from sync_pipeline.sync import progress

if TYPE_CHECKING:  # `receiver` and `simulator` set up logging here and need no Dagster
    from dagster import ExecuteInProcessResult

    from sync_pipeline.warehouse.db import RunOutcome

console = Console(highlight=False, soft_wrap=True)


def setup_logging(level: str) -> None:
    handler = RichHandler(
        console=console, show_time=False, show_path=False, markup=False, rich_tracebacks=False
    )
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


class _LiveProgress(logging.Handler):
    """Turns the sync's progress records into the text of the step's live status line."""

    def __init__(self, status: Status, title: str) -> None:
        super().__init__(logging.DEBUG)
        self._status = status
        self._title = title
        self.last: progress.SyncProgress | None = None

    def emit(self, record: logging.LogRecord) -> None:
        state = getattr(record, progress.RECORD_ATTRIBUTE, None)
        if not isinstance(state, progress.SyncProgress):
            return
        self.last = state
        self._status.update(f"[bold]{self._title}[/bold] {describe_progress(state)}")


def describe_progress(state: progress.SyncProgress) -> str:
    text = (
        f"users {state.users_done}/{state.users} · endpoints {state.items_done}/{state.items} · "
        f"{state.records:,} records · {state.requests:,} requests"
    )
    if state.skipped:
        text += f" · {state.skipped} skipped (must reconnect)"
    return text + (f" · [red]{state.failed} failed[/red]" if state.failed else "")


@dataclass
class StepFacts:
    """What a step reports on its ✓ line; `failed` turns it into a ✗ line."""

    facts: dict[str, Any] = field(default_factory=dict)
    failed: bool = False
    sync_progress: progress.SyncProgress | None = None


@contextmanager
def step(title: str) -> Iterator[StepFacts]:
    """A live status line while the block runs (with the sync's progress when one reports),
    then one line with what it did and how long it took."""
    result = StepFacts()
    started = time.monotonic()
    with console.status(f"[bold]{title}…") as status:
        live = _LiveProgress(status, title)
        progress.LOGGER.addHandler(live)
        progress.LOGGER.setLevel(logging.DEBUG)
        progress.LOGGER.propagate = False  # progress records are for the display, not the log
        try:
            yield result
        finally:
            progress.LOGGER.removeHandler(live)
    result.sync_progress = live.last
    detail = ", ".join(f"{k} {v}" for k, v in result.facts.items())
    if not detail and live.last is not None:
        detail = describe_progress(live.last)
    mark = "[red]✗[/red]" if result.failed else "[green]✓[/green]"
    console.print(
        f"{mark} {title} [dim]({time.monotonic() - started:.1f}s)[/dim]"
        + (f": {detail}" if detail else "")
    )


def failure_reasons(result: ExecuteInProcessResult) -> list[str]:
    """The failed steps' descriptions (a Failure's own text, else the error's message)."""
    from dagster import DagsterEventType

    reasons = []
    for event in result.all_events:
        if event.event_type != DagsterEventType.STEP_FAILURE:
            continue
        data = event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            reasons.append(data.user_failure_data.description)
        elif data.error is not None:
            reasons.append(data.error.message.strip().splitlines()[-1])
    return reasons


def print_outcome(outcome: RunOutcome) -> None:
    console.print(
        f"  synced: {outcome.received:,} records received, {outcome.loaded:,} loaded, "
        f"{outcome.rejected:,} rejected (see ops.rejected_records), "
        f"{outcome.requests:,} HTTP requests (tokens and retries included)"
    )
    for reason, users, items in outcome.skipped:
        console.print(f"  skipped: {items} items of {users} user(s): {reason}")
    for reason, users, items in outcome.failures:
        console.print(f"  [red]failed[/red]: {items} items of {users} user(s): {reason}")
    if outcome.failures:
        console.print("  failed items keep their cursors; the next run retries them")
