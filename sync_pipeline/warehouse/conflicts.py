"""Commit conflicts between concurrent writers of a DuckLake, retried a bounded number of times.

A DuckLake on PostgreSQL takes commits from many processes at once with optimistic
concurrency: a transaction works on the snapshot it began with, and its COMMIT fails with a
TransactionException when another writer committed a change that conflicts with it (both
deleted from the same table, one altered a table the other wrote...). The failed transaction
has changed nothing, so the whole unit of work (open, read, write, commit) is simply done
again on the newer snapshot. Every unit passed here must therefore be repeatable: it reads
its inputs inside the work and keeps no state across attempts. The single DuckDB file never
raises these (one writer), so the same code path costs nothing there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import duckdb
import stamina

from sync_pipeline.warehouse.location import mask_secrets

log = logging.getLogger(__name__)

T = TypeVar("T")

# Attempts per unit of work, and the backoff between them (stamina: exponential with jitter,
# capped): enough for a handful of workers committing at once, bounded so a stuck catalog
# fails the step instead of spinning.
CONFLICT_ATTEMPTS = 10
WAIT_INITIAL_S = 0.1
WAIT_MAX_S = 5.0
TIMEOUT_S = 600.0

# What DuckDB and DuckLake say when a commit lost to a concurrent one
_CONFLICT_WORDS = ("conflict", "concurrent")


def is_conflict(exc: BaseException) -> bool:
    """A commit that lost to a concurrent writer (retrying it may succeed)."""
    return isinstance(exc, duckdb.TransactionException) and any(
        word in str(exc).lower() for word in _CONFLICT_WORDS
    )


def retrying(work: Callable[[], T], *, what: str) -> T:
    """Run `work` until it commits without a conflict, at most CONFLICT_ATTEMPTS times; each
    retry is logged (WARNING) with `what` and the conflict. Other errors pass straight up."""
    attempt_no = 0

    def should_retry(exc: Exception) -> bool:
        if not is_conflict(exc):
            return False
        log.warning(
            "warehouse commit conflict in %s (attempt %d of %d), retrying: %s",
            what,
            attempt_no,
            CONFLICT_ATTEMPTS,
            mask_secrets(str(exc)).splitlines()[0][:300],
        )
        return True

    for attempt in stamina.retry_context(
        on=should_retry,
        attempts=CONFLICT_ATTEMPTS,
        timeout=TIMEOUT_S,
        wait_initial=WAIT_INITIAL_S,
        wait_max=WAIT_MAX_S,
    ):
        with attempt:
            attempt_no = attempt.num
            return work()
    raise AssertionError("stamina.retry_context yields until success or raises")
