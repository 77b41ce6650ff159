"""Execute a sync plan: fetch every work item concurrently, normalise each page, stage it.

Network and CPU only: no DuckDB here. What the commit step needs comes back as a FetchResult.
One failing (user, endpoint) never stops the others: its error is recorded, its cursor stays.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd

from sync_pipeline.connect import source_status_rows
from sync_pipeline.normalize import NormalizedBatch, normalize_records
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


ProgressFn = Callable[[ItemResult], None]


async def fetch_plan(
    client: UpstreamClient,
    plan: SyncPlan,
    stager: Stager,
    audits: list[RequestAudit],
    *,
    snapshot_sources_for: list[UserRef] = (),  # type: ignore[assignment]
    progress: ProgressFn | None = None,
) -> FetchResult:
    received: dict[str, int] = defaultdict(int)
    rejected: list[pd.DataFrame] = []
    refused: dict[str, int] = {}
    snapshots: list[pd.DataFrame] = []

    def take(batch: NormalizedBatch, endpoint_table: str, result: ItemResult) -> None:
        received[endpoint_table] += batch.received
        result.received += batch.received
        for table, frame in batch.tables.items():
            stager.add(table, frame)
        if len(batch.rejected):
            rejected.append(batch.rejected)
        main = batch.tables.get(endpoint_table)
        if main is not None and len(main):
            newest = pd.Timestamp(main["updated_at"].max())
            if not pd.isna(newest):
                seen = newest.to_pydatetime()
                if result.newest_updated_at is None or seen > result.newest_updated_at:
                    result.newest_updated_at = seen

    async def run_item(item: WorkItem) -> ItemResult:
        result = ItemResult(item)
        user, endpoint = item.user, item.endpoint
        if user.human_id in refused:
            result.ok, result.error = False, "user needs to reconnect"
            return result
        try:
            if item.how == "list":
                seen: set[str] = set()
                async for page in client.iter_pages(
                    user, endpoint, updated_since=item.updated_since
                ):
                    seen.update(str(r.get("id")) for r in page.records)
                    take(
                        normalize_records(endpoint, user.human_id, page.records),
                        endpoint.table,
                        result,
                    )
                # a notified object the list did not return is gone (or older than the
                # cursor): only a GET by id can tell, and a 404 must set deleted_at
                for record_id in item.record_ids:
                    if record_id in seen:
                        continue
                    record = await client.fetch_record(user, endpoint, record_id)
                    if record is None:
                        result.gone_ids.append(record_id)
                    else:
                        take(
                            normalize_records(endpoint, user.human_id, [record]),
                            endpoint.table,
                            result,
                        )
            elif item.how == "object":
                record = await client.fetch_object(user, endpoint)
                if record is not None:
                    take(
                        normalize_records(endpoint, user.human_id, [record]), endpoint.table, result
                    )
            else:
                for record_id in item.record_ids:
                    record = await client.fetch_record(user, endpoint, record_id)
                    if record is None:
                        result.gone_ids.append(record_id)
                    else:
                        take(
                            normalize_records(endpoint, user.human_id, [record]),
                            endpoint.table,
                            result,
                        )
        except UserNeedsReconnect as exc:
            refused[user.human_id] = exc.status
            result.ok, result.error = False, "user needs to reconnect"
        except ClientCredentialsRejected:
            raise
        except UpstreamError as exc:
            result.ok, result.error = False, str(exc)
            log.warning("fetch failed for %s %s: %s", user.human_id, endpoint.path, exc)
        if progress is not None:
            progress(result)
        return result

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

    results = await asyncio.gather(*(run_item(i) for i in plan.items))
    await asyncio.gather(*(snapshot(u) for u in snapshot_sources_for))
    return FetchResult(
        staged=stager.finish(),
        items=list(results),
        received=dict(received),
        rejected=pd.concat(rejected, ignore_index=True) if rejected else pd.DataFrame(),
        refused=refused,
        source_status=pd.concat(snapshots, ignore_index=True) if snapshots else pd.DataFrame(),
        audits=audits,
        requests=client.request_count,
    )
