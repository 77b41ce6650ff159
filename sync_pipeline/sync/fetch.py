"""Execute a sync plan: fetch every work item concurrently, normalise each page, stage it.

Network and CPU only: no DuckDB here. What the commit step needs comes back as a FetchResult.
One failing (user, endpoint) never stops the others: its error is recorded, its cursor stays.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pandas as pd

from sync_pipeline.connect import source_status_rows
from sync_pipeline.normalize import PARENT_OF, NormalizedBatch, normalize_records
from sync_pipeline.sync.plan import SyncPlan, WorkItem
from sync_pipeline.sync.stage import Stager
from sync_pipeline.upstream.client import (
    ClientCredentialsRejected,
    RequestAudit,
    UpstreamClient,
    UpstreamError,
    UserNeedsReconnect,
    UserRef,
)
from sync_pipeline.upstream.endpoints import CHILD_TABLES, ENDPOINTS, Endpoint
from sync_pipeline.upstream.errors import NEEDS_RECONNECT

log = logging.getLogger(__name__)


@dataclass
class ItemResult:
    item: WorkItem
    ok: bool = True
    error: str | None = None
    # newest updatedAt seen (upstream clock): the next cursor for catch-up items
    newest_updated_at: datetime | None = None
    gone_ids: list[str] = field(default_factory=list)
    received: int = 0


@dataclass
class FetchResult:
    staged: dict[str, list]  # table -> lake files of this run
    items: list[ItemResult]
    received: dict[str, int]  # main table -> records received
    rejected: pd.DataFrame  # ops.rejected_records rows (without reject_id/run_id)
    refused: dict[str, int]  # human_id -> token endpoint status (403/404)
    source_status: pd.DataFrame
    audits: list[RequestAudit]
    requests: int


# called after each item with the result and the requests the run has made so far
ProgressFn = Callable[[ItemResult, int], None]

# Raw records buffered per table before one normalise call: pandas costs a fixed ~1 ms per
# call and column, so typing 2,000 records at once is far cheaper than 40 pages of 50, and
# small enough (a few MB per table) to keep memory bounded.
NORMALISE_BATCH = 2_000


class _Batcher:
    """Buffers fetched pages per table across users and types them in batches, off the event
    loop (one worker thread, so the loop keeps requests flowing while pandas works)."""

    def __init__(self, stager: Stager, results: dict[tuple[str, str], ItemResult]) -> None:
        self._stager = stager
        self._results = results  # (human_id, table) -> the one item of that pair
        self._pending: dict[str, tuple[Endpoint, list[str], list[dict[str, Any]]]] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="normalise")
        self.received: dict[str, int] = defaultdict(int)
        self.rejected: list[pd.DataFrame] = []

    async def add(self, endpoint: Endpoint, human_id: str, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        _, owners, buffered = self._pending.setdefault(endpoint.table, (endpoint, [], []))
        owners.extend([human_id] * len(records))
        buffered.extend(records)
        self._results[(human_id, endpoint.table)].received += len(records)
        if len(buffered) >= NORMALISE_BATCH:
            await self._flush(endpoint.table)

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
        for child in CHILD_TABLES:
            if child != "medical.record_codes" and PARENT_OF.get(child) == table:
                self._stager.flush_table(child)

    async def finish(self) -> None:
        for table in list(self._pending):
            await self._flush(table)
        self._pool.shutdown()

    async def _flush(self, table: str) -> None:
        endpoint, owners, records = self._pending.pop(table)
        loop = asyncio.get_running_loop()
        batch = await loop.run_in_executor(
            self._pool, self._type_and_stage, endpoint, owners, records
        )
        self.received[table] += batch.received
        if len(batch.rejected):
            self.rejected.append(batch.rejected)
        main = batch.tables[table]
        if len(main):
            newest = main.groupby("human_id", observed=True)["updated_at"].max()
            for human_id, seen in newest.items():
                result = self._results[(str(human_id), table)]
                moment = pd.Timestamp(seen).to_pydatetime()
                if result.newest_updated_at is None or moment > result.newest_updated_at:
                    result.newest_updated_at = moment

    def _type_and_stage(
        self, endpoint: Endpoint, owners: list[str], records: list[dict[str, Any]]
    ) -> NormalizedBatch:
        batch = normalize_records(endpoint, owners, records)
        for name, frame in batch.tables.items():
            self._stager.add(name, frame)
        return batch


async def fetch_plan(
    client: UpstreamClient,
    plan: SyncPlan,
    stager: Stager,
    audits: list[RequestAudit],
    *,
    workers: int = 16,
    snapshot_sources_for: Sequence[UserRef] = (),
    progress: ProgressFn | None = None,
) -> FetchResult:
    """Fetch every item with at most `workers` items in flight (a bounded queue, not one task
    per item: thousands of waiting tasks would spend their request deadlines queueing)."""
    results = {(i.user.human_id, i.endpoint.table): ItemResult(i) for i in plan.items}
    batcher = _Batcher(stager, results)
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
                    seen.update(str(r.get("id")) for r in page.records)
                    await batcher.add(endpoint, user.human_id, page.records)
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
    )
