"""Typing fetched pages into Arrow tables: in a worker process for big batches.

The fetch's event loop and the normaliser share one GIL inside one process: typing a batch
(Python walks over thousands of dicts, then pandas) holds it for tens of milliseconds at a
time, requests wait meanwhile, and the fetch falls behind the upstream's rate limit. So a big
batch is typed in a worker process. The loop parses each page anyway (it must: a page that
is not a JSON array fails its item, and the ids it lists decide what to fetch by id); it hands
the worker the page's raw body rather than the parsed records, because orjson reads the body
again in about a tenth of the time pickle needs for the dicts (25-50 ms per 2,000 records),
and the worker returns Arrow tables, which cross the process boundary as buffers.

`type_chunks` is the one typing function; small batches (a catch-up of a few users) run it in
the caller's thread instead, so a small sync never starts a process.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa

from sync_pipeline.normalize import Limits, normalize_records, to_arrow
from sync_pipeline.normalize.schemas import FLAGGED_SCHEMA
from sync_pipeline.sync import heap
from sync_pipeline.upstream.endpoints import Endpoint

# (human_id, records): a page's raw body when orjson alone decoded it (Page.plain_body), else
# its records as a list (a single record fetched by id, a page that needed a fallback decoder)
Chunk = tuple[str, bytes | list[Any]]


@dataclass(frozen=True)
class TypedBatch:
    tables: dict[str, pa.Table]  # main table and child tables, only those with rows
    rejected: pd.DataFrame  # ops.rejected_upstream_records rows (without reject_id, run_id)
    flagged: pd.DataFrame  # ops.flagged_records rows (without run_id, flagged_at)
    received: int
    newest: dict[str, datetime]  # human_id -> newest updated_at among its loaded records
    decode_s: float  # spent decoding raw page bodies again (work the fetch already did once)
    seconds: float  # spent typing it: normalising and converting to Arrow
    peak_rss_mib: float  # of the process that typed it


def type_chunks(endpoint: Endpoint, chunks: Sequence[Chunk], limits: Limits) -> TypedBatch:
    """Type one batch of `endpoint`'s pages, of one or many users. Never raises on what the
    records hold (normalize_records is the containment boundary)."""
    started = time.perf_counter()
    owners: list[str] = []
    records: list[Any] = []
    for human_id, content in chunks:
        page = orjson.loads(content) if isinstance(content, bytes) else content
        owners.extend([human_id] * len(page))
        records.extend(page)
    decoded = time.perf_counter()
    batch = normalize_records(endpoint, owners, records, limits)
    main = batch.tables[endpoint.table]
    newest: dict[str, datetime] = {}
    if len(main):
        latest = main.groupby("human_id", observed=True)["updated_at"].max()
        newest = {str(h): pd.Timestamp(t).to_pydatetime() for h, t in latest.items()}
    flagged = batch.flagged
    if flagged is None:
        flagged = FLAGGED_SCHEMA.empty_table().to_pandas()
    return TypedBatch(
        tables={name: to_arrow(name, frame) for name, frame in batch.tables.items() if len(frame)},
        rejected=batch.rejected,
        flagged=flagged,
        received=batch.received,
        newest=newest,
        decode_s=decoded - started,
        seconds=time.perf_counter() - decoded,
        peak_rss_mib=_peak_rss_mib(),
    )


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # kilobytes on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


# A batch (at most NORMALISE_BATCH records or NORMALISE_BATCH_BYTES of JSON, fetch.py) types in
# well under a second; one that takes this long means the worker is stuck, and the run fails
# rather than waiting for it for ever.
BATCH_TIMEOUT_S = 300.0


class TypingTimedOut(Exception):
    pass


class TypingProcess:
    """One worker process, started on the first batch sent to it: the fetch's event loop
    needs one core, and typing needs about another, so one worker keeps up; more would only
    contend on a small machine."""

    def __init__(self, batch_timeout_s: float = BATCH_TIMEOUT_S) -> None:
        self._executor: ProcessPoolExecutor | None = None
        self._batch_timeout_s = batch_timeout_s

    async def type_chunks(
        self, endpoint: Endpoint, chunks: Sequence[Chunk], limits: Limits
    ) -> TypedBatch:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=1, mp_context=_context(), initializer=heap.return_large_blocks_promptly
            )
        loop = asyncio.get_running_loop()
        typed = loop.run_in_executor(self._executor, type_chunks, endpoint, chunks, limits)
        try:
            return await asyncio.wait_for(typed, self._batch_timeout_s)
        except TimeoutError:
            self._kill()
            raise TypingTimedOut(
                f"typing a batch of {endpoint.table} took over {self._batch_timeout_s:g} s"
            ) from None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def _kill(self) -> None:
        """Stop a stuck worker: shutting the executor down would wait for its task. Python
        3.14 has ProcessPoolExecutor.kill_workers; before it, the processes are only in
        `_processes`."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        kill_workers = getattr(executor, "kill_workers", None)
        if kill_workers is not None:
            kill_workers()
        else:
            for process in list((getattr(executor, "_processes", None) or {}).values()):
                process.kill()
        executor.shutdown(wait=True, cancel_futures=True)


def _context() -> multiprocessing.context.BaseContext:
    """A forkserver that preloads this module (and so pandas, pyarrow and the normaliser), not
    the parent's __main__: under Dagster that is the `dagster` command, whose import a typing
    worker does not need. Forking the parent itself is no option: it runs threads (the event
    loop, Dagster's), and a fork copies their held locks. Spawn where there is no forkserver."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")
