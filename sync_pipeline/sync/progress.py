"""A running sync's progress as log records, so any front end can show it live.

The sync runs inside a Dagster step: in the CLI's own process (where a live display listens on
this logger) or in a worker process (where nobody does, and the records cost one level check).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sync_pipeline.upstream.errors import NEEDS_RECONNECT

if TYPE_CHECKING:  # the CLI imports this module to listen; it need not load the sync for that
    from sync_pipeline.sync.fetch import ItemResult
    from sync_pipeline.sync.plan import SyncPlan

LOGGER = logging.getLogger("sync_pipeline.progress")
# the attribute of a log record that carries a SyncProgress
RECORD_ATTRIBUTE = "sync_progress"


@dataclass(frozen=True)
class SyncProgress:
    items: int
    users: int
    items_done: int = 0
    users_done: int = 0
    records: int = 0
    requests: int = 0
    failed: int = 0
    skipped: int = 0  # items of users whose token was refused: they must reconnect


class ProgressReporter:
    """Counts finished (user, endpoint) items of one plan and logs a snapshot after each."""

    def __init__(self, plan: SyncPlan) -> None:
        self._open_items = Counter(item.user.human_id for item in plan.items)
        self._state = SyncProgress(items=len(plan.items), users=len(self._open_items))
        self._emit()

    def item_done(self, result: ItemResult, requests: int) -> None:
        human_id = result.item.user.human_id
        self._open_items[human_id] -= 1
        state = self._state
        self._state = replace(
            state,
            items_done=state.items_done + 1,
            users_done=state.users_done + (self._open_items[human_id] == 0),
            records=state.records + result.received,
            requests=requests,
            failed=state.failed + (not result.ok and result.error != NEEDS_RECONNECT),
            skipped=state.skipped + (not result.ok and result.error == NEEDS_RECONNECT),
        )
        self._emit()

    def _emit(self) -> None:
        if LOGGER.isEnabledFor(logging.DEBUG):
            LOGGER.debug("sync progress", extra={RECORD_ATTRIBUTE: self._state})
