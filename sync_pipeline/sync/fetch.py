"""Execute a sync plan: fetch every work item concurrently, normalise each page, stage it.

Network and CPU only: no DuckDB here. What the commit step needs comes back as a FetchResult.
One failing (user, endpoint) never stops the others: its error is recorded, its cursor stays.
The (user, endpoint) item is the containment boundary of responses and waits: whatever one
item's requests meet (a body over the cap, a Link chain without end, a wait past its deadline,
or an error nobody foresaw) ends that item with a reason in `ItemResult.error`; every other
item goes on. Only a rejection of our own client credentials ends the run.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pandas as pd

from sync_pipeline.connect import source_status_rows
from sync_pipeline.normalize import Limits
from sync_pipeline.sync.plan import SyncPlan, WorkItem
from sync_pipeline.sync.stage import Stager
from sync_pipeline.sync.typing_worker import Chunk, TypedBatch, TypingProcess, type_chunks
from sync_pipeline.tables.registry import children_of
from sync_pipeline.upstream.client import (
    ClientCredentialsRejected,
    RequestAudit,
    UpstreamClient,
    UpstreamError,
    UserNeedsReconnect,
    UserRef,
)
from sync_pipeline.upstream.endpoints import ENDPOINTS, Endpoint
from sync_pipeline.upstream.errors import NEEDS_RECONNECT

log = logging.getLogger(__name__)


@dataclass
class ItemResult:
    item: WorkItem
    ok: bool = True
    error: str | None = None
    # newest updatedAt seen (upstream clock; a future stamp is already held to the upstream's
    # now): what the next cursor of a catch-up item is derived from (see FetchResult.next_cursor)
    newest_updated_at: datetime | None = None
    gone_ids: list[str] = field(default_factory=list)
    received: int = 0


@dataclass
class FetchResult:
    staged: dict[str, list]  # table -> lake files of this run
    items: list[ItemResult]
    received: dict[str, int]  # main table -> records received
    rejected: pd.DataFrame  # ops.rejected_upstream_records rows (without reject_id/run_id)
    refused: dict[str, int]  # human_id -> token endpoint status (403/404)
    source_status: pd.DataFrame
    audits: list[RequestAudit]
    requests: int
    # loaded records flagged on the way (ops.flagged_records rows, without run_id/flagged_at)
    flagged: pd.DataFrame = field(default_factory=pd.DataFrame)
    # the upstream's clock at the end of the fetch (its Date header, else the run's start) and
    # SYNC_CURSOR_LAG_S: no cursor moves past upstream_now - cursor_lag
    upstream_now: datetime | None = None
    cursor_lag: timedelta = timedelta(0)
    # seconds spent typing records (in the worker process or a thread), decoding raw pages a
    # second time for it, and the worker's peak resident memory (0 when no batch was big
    # enough to need it)
    typing_s: float = 0.0
    decode_s: float = 0.0
    worker_peak_rss_mib: float = 0.0

    def next_cursor(self, result: ItemResult) -> datetime | None:
        """The cursor a finished catch-up item leaves: the newest updatedAt it saw, held to the
        upstream's clock, minus the lag (so the next catch-up re-reads that window: idempotent,
        last updatedAt wins), never behind the cursor it started from, floored to the second
        (the filter's precision)."""
        start = result.item.updated_since
        newest = result.newest_updated_at
        if newest is None:
            return start
        if self.upstream_now is not None:
            newest = min(newest, self.upstream_now)
        cursor = newest - self.cursor_lag
        if start is not None:
            cursor = max(cursor, start)
        return cursor.replace(microsecond=0)


# called after each item with the result and the requests the run has made so far
ProgressFn = Callable[[ItemResult, int], None]


class StagingFailed(Exception):
    """Typing or staging a batch failed (the lake cannot be written, say). A batch holds
    records of many items, so no item could be reported done: the run fails as a whole and
    commits nothing, and the next run redoes the work."""


# Raw records buffered per table before one normalise call: pandas costs a fixed ~1 ms per
# call and column, so typing 2,000 records at once is far cheaper than 40 pages of 50, and
# small enough (a few MB per table) to keep memory bounded.
NORMALISE_BATCH = 2_000
# ... or fewer, once their response bodies add up to this: a page of big records (each up to
# SYNC_MAX_RECORD_BYTES) is typed soon instead of waiting for 2,000 of its kind; and across
# tables, the largest buffer is typed whenever all of them together pass twice that. Decoded,
# typed and converted, a batch takes several times its JSON size in the worker's memory.
NORMALISE_BATCH_BYTES = 8 * 2**20
# A batch of at least this many records is typed in the worker process (typing_worker.py);
# a smaller one in a thread: starting the worker costs about half a second of CPU, more than
# typing a few hundred records, and a catch-up of a few users never needs it.
WORKER_MIN_RECORDS = 500


@dataclass
class _Pending:
    """One table's buffered pages. Each keeps its decoded records while the batch may still
    be typed in the thread (fewer than the worker's minimum so far), and its raw body, which
    the worker reads instead when the batch grows past that."""

    endpoint: Endpoint
    owners: list[str] = field(default_factory=list)
    records: list[list[Any] | None] = field(default_factory=list)
    bodies: list[bytes | None] = field(default_factory=list)
    count: int = 0
    body_bytes: int = 0

    def add(
        self, human_id: str, records: list[Any], body: bytes | None, body_bytes: int, keep: bool
    ) -> None:
        self.owners.append(human_id)
        self.records.append(records if keep or body is None else None)
        self.bodies.append(body)
        self.count += len(records)
        self.body_bytes += body_bytes

    def chunks(self, raw: bool) -> list[Chunk]:
        """Each page as the worker takes it (`raw`: its body where there is one) or as the
        thread does (its records, all kept while the batch was below the worker's minimum)."""
        chunks: list[Chunk] = []
        for owner, records, body in zip(self.owners, self.records, self.bodies, strict=True):
            content = body if raw and body is not None else records
            if content is None:
                raise RuntimeError("a page's records were dropped before a typing in the thread")
            chunks.append((owner, content))
        return chunks


class _Batcher:
    """Buffers fetched pages per table across users and types them in batches, off the event
    loop: a big batch in the worker process, a small one in a thread (one thread, which also
    stages every typed batch, so a table's chunks reach the stager in order)."""

    def __init__(
        self,
        stager: Stager,
        results: dict[tuple[str, str], ItemResult],
        limits: Callable[[], Limits] = Limits,
        worker_min_records: int = WORKER_MIN_RECORDS,
    ) -> None:
        self._stager = stager
        self._results = results  # (human_id, table) -> the one item of that pair
        self._limits = limits  # read per batch: the upstream's clock moves on
        self._worker_min_records = worker_min_records
        self._pending: dict[str, _Pending] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="normalise")
        self._worker = TypingProcess()
        self.received: dict[str, int] = defaultdict(int)
        self.rejected: list[pd.DataFrame] = []
        self.flagged: list[pd.DataFrame] = []
        self.typing_s = 0.0
        self.decode_s = 0.0
        self.worker_peak_rss_mib = 0.0

    async def add(
        self,
        endpoint: Endpoint,
        human_id: str,
        records: list[Any],
        body_bytes: int = 0,
        plain_body: bytes | None = None,
    ) -> None:
        """Buffer one page (or record) of `human_id`; `plain_body` is the page's raw body when
        it decodes to `records` with orjson alone (Page.plain_body): sent on instead of them."""
        if not records:
            return
        pending = self._pending.setdefault(endpoint.table, _Pending(endpoint))
        keep = pending.count + len(records) < self._worker_min_records
        pending.add(human_id, records, plain_body, body_bytes, keep=keep)
        self._results[(human_id, endpoint.table)].received += len(records)
        if pending.count >= NORMALISE_BATCH or pending.body_bytes >= NORMALISE_BATCH_BYTES:
            await self._flush(endpoint.table)
        while sum(p.body_bytes for p in self._pending.values()) > 2 * NORMALISE_BATCH_BYTES:
            largest = max(self._pending.values(), key=lambda p: p.body_bytes)
            await self._flush(largest.endpoint.table)

    async def table_done(self, table: str) -> None:
        """No more records will come for `table`: type what is buffered now, while other
        tables are still being fetched, instead of all at the end of the run."""
        if table in self._pending:
            await self._flush(table)
        # its typed rows (this table and its children) go to the lake instead of waiting in
        # memory for the end of the run
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._stage_done, table)

    def _stage_done(self, table: str) -> None:
        self._stager.flush_table(table)
        # a child of this table alone is complete too; a shared child (record codes) still
        # gets rows from other tables
        for child in children_of(table):
            if child.parent == table:
                self._stager.flush_table(child.name)

    async def finish(self) -> None:
        try:
            for table in list(self._pending):
                await self._flush(table)
        finally:
            self._worker.close()
            self._pool.shutdown()

    async def _flush(self, table: str) -> None:
        pending = self._pending.pop(table)
        loop = asyncio.get_running_loop()
        try:
            in_worker = pending.count >= self._worker_min_records
            if in_worker:
                batch = await self._worker.type_chunks(
                    pending.endpoint, pending.chunks(raw=True), self._limits()
                )
            else:
                batch = await loop.run_in_executor(
                    self._pool,
                    type_chunks,
                    pending.endpoint,
                    pending.chunks(raw=False),
                    self._limits(),
                )
            await loop.run_in_executor(self._pool, self._stage, batch)
        except Exception as exc:  # BrokenProcessPool too: the worker died
            raise StagingFailed(f"staging {table} failed: {type(exc).__name__}") from exc
        self.typing_s += batch.seconds
        self.decode_s += batch.decode_s
        if in_worker:
            self.worker_peak_rss_mib = max(self.worker_peak_rss_mib, batch.peak_rss_mib)
        self.received[table] += batch.received
        if len(batch.rejected):
            self.rejected.append(batch.rejected)
        if len(batch.flagged):
            self.flagged.append(batch.flagged)
        for human_id, moment in batch.newest.items():
            result = self._results[(human_id, table)]
            if result.newest_updated_at is None or moment > result.newest_updated_at:
                result.newest_updated_at = moment

    def _stage(self, batch: TypedBatch) -> None:
        for name, data in batch.tables.items():
            self._stager.add(name, data)


async def fetch_plan(
    client: UpstreamClient,
    plan: SyncPlan,
    stager: Stager,
    audits: list[RequestAudit],
    *,
    workers: int = 16,
    snapshot_sources_for: Sequence[UserRef] = (),
    progress: ProgressFn | None = None,
    max_record_bytes: int = Limits.max_record_bytes,
    future_tolerance_s: float = Limits.future_tolerance_s,
    cursor_lag_s: float = 0.0,
    worker_min_records: int = WORKER_MIN_RECORDS,
) -> FetchResult:
    """Fetch every item with at most `workers` items in flight (a bounded queue, not one task
    per item: thousands of waiting tasks would spend their request deadlines queueing)."""
    results = {(i.user.human_id, i.endpoint.table): ItemResult(i) for i in plan.items}

    def limits() -> Limits:
        return Limits(max_record_bytes, client.upstream_now(), future_tolerance_s)

    batcher = _Batcher(stager, results, limits, worker_min_records)
    # Endpoint by endpoint (every user's item of one endpoint, then the next): a table's items
    # finish close together, so its records are typed and staged while later endpoints are
    # still fetched, rather than every table's last partial batch after the last request.
    position = {e.table: n for n, e in enumerate(ENDPOINTS)}
    items = sorted(plan.items, key=lambda i: position.get(i.endpoint.table, len(position)))
    unfinished: dict[str, int] = defaultdict(int)
    for i in items:
        unfinished[i.endpoint.table] += 1
    refused: dict[str, int] = {}
    snapshots: list[pd.DataFrame] = []

    async def fetch_by_id(item: WorkItem, record_ids: Iterable[str], result: ItemResult) -> None:
        for record_id in record_ids:
            record = await client.fetch_record(item.user, item.endpoint, record_id)
            if record is None:
                result.gone_ids.append(record_id)
            else:
                await batcher.add(item.endpoint, item.user.human_id, [record])

    async def run_item(item: WorkItem) -> None:
        result = results[(item.user.human_id, item.endpoint.table)]
        await fetch_item(item, result)
        table = item.endpoint.table
        unfinished[table] -= 1
        if not unfinished[table]:
            await batcher.table_done(table)
        if progress is not None:
            progress(result, client.request_count)

    async def fetch_item(item: WorkItem, result: ItemResult) -> bool:
        """Fetch one item into the batcher; False when its user was already refused."""
        user, endpoint = item.user, item.endpoint
        if user.human_id in refused:
            result.ok, result.error = False, NEEDS_RECONNECT
            return False
        try:
            if item.how == "list":
                seen: set[str] = set()
                async for page in client.iter_pages(
                    user, endpoint, updated_since=item.updated_since
                ):
                    seen.update(str(r.get("id")) for r in page.records if isinstance(r, dict))
                    await batcher.add(
                        endpoint, user.human_id, page.records, page.body_bytes, page.plain_body
                    )
                # a notified object the list did not return is gone (or older than the
                # cursor): only a GET by id can tell, and a 404 must set deleted_at
                await fetch_by_id(item, (r for r in item.record_ids if r not in seen), result)
            elif item.how == "object":
                record = await client.fetch_object(user, endpoint)
                if record is not None:
                    await batcher.add(endpoint, user.human_id, [record])
            else:
                await fetch_by_id(item, item.record_ids, result)
        except UserNeedsReconnect as exc:
            refused[user.human_id] = exc.status
            result.ok, result.error = False, NEEDS_RECONNECT
        except ClientCredentialsRejected:
            raise
        except UpstreamError as exc:
            result.ok, result.error = False, str(exc)
            log.warning("fetch failed for %s %s: %s", user.human_id, endpoint.path, exc)
        except StagingFailed:
            raise  # the lake cannot be written: no item can finish, the run fails whole
        except Exception as exc:  # the item boundary: a surprise fails this item, not the run
            # the type only: an exception's message may quote what the upstream sent (PHI)
            result.ok = False
            result.error = f"{endpoint.path}: unexpected {type(exc).__name__} while fetching"
            log.warning("fetch of %s %s failed: %s", user.human_id, endpoint.path, result.error)
        return True

    async def snapshot(user: UserRef) -> None:
        try:
            sources = await client.list_sources(user)
        except UserNeedsReconnect as exc:
            refused[user.human_id] = exc.status
            return
        except UpstreamError as exc:
            log.warning("sources snapshot failed for %s: %s", user.human_id, exc)
            return
        except Exception as exc:  # a snapshot is informative only: never worth the run
            log.warning("sources snapshot failed for %s: %s", user.human_id, type(exc).__name__)
            return
        snapshots.append(source_status_rows(user.human_id, sources, datetime.now(UTC)))

    queue: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue()
    for item in items:
        queue.put_nowait(partial(run_item, item))
    for user in snapshot_sources_for:
        queue.put_nowait(partial(snapshot, user))

    async def worker() -> None:
        while not queue.empty():
            job = queue.get_nowait()
            await job()

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, workers))))
    finally:
        await batcher.finish()
    return FetchResult(
        staged=stager.finish(),
        items=list(results.values()),
        received=dict(batcher.received),
        rejected=pd.concat(batcher.rejected, ignore_index=True)
        if batcher.rejected
        else pd.DataFrame(),
        refused=refused,
        source_status=pd.concat(snapshots, ignore_index=True) if snapshots else pd.DataFrame(),
        audits=audits,
        requests=client.request_count,
        flagged=pd.concat(batcher.flagged, ignore_index=True)
        if batcher.flagged
        else pd.DataFrame(),
        upstream_now=client.upstream_now(),
        cursor_lag=timedelta(seconds=cursor_lag_s),
        typing_s=batcher.typing_s,
        decode_s=batcher.decode_s,
        worker_peak_rss_mib=batcher.worker_peak_rss_mib,
    )
