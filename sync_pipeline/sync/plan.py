"""What a sync run fetches: pure planning from notifications, users and cursors (no I/O).

Request-count rule for notified changes: k changed objects of one user on one endpoint cost k
single GETs, or about ceil(k / page_size) list pages with `updated_since` = the earliest notified
change. A list is never dearer once k >= 2, so singles are used only for a lone change, where a
single GET also tells us precisely when the object is gone (404 → deleted_at).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

import pandas as pd

from sync_pipeline.upstream.client import UserRef
from sync_pipeline.upstream.endpoints import BY_PATH, ENDPOINTS, Endpoint

SyncMode = Literal["incremental", "catchup", "full"]


@dataclass(frozen=True)
class WorkItem:
    """One (user, endpoint) fetch."""

    user: UserRef
    endpoint: Endpoint
    # "list": pages with updated_since (None = whole history); "singles": GET by id;
    # "object": a single-object endpoint (medical/profile)
    how: Literal["list", "singles", "object"]
    updated_since: datetime | None = None
    # singles: the ids to GET; list: notified ids the pages must contain (one missing from
    # them is asked for by id, so a 404 still sets deleted_at)
    record_ids: tuple[str, ...] = ()
    # notifications this item answers; marked synced/gone/failed when it commits
    notification_ids: tuple[str, ...] = ()
    # (notification_id, object_id): a notification is 'gone' when its own object answered 404
    notified_objects: tuple[tuple[str, str], ...] = ()
    # catch-up items advance the (user, endpoint) cursor once their load commits
    advances_cursor: bool = False


@dataclass(frozen=True)
class SyncPlan:
    items: tuple[WorkItem, ...]
    # notifications we cannot act on, with the status they get (unknown_user, skipped_reconnect)
    unactionable: Mapping[str, str] = field(default_factory=dict)
    skipped_reconnect: tuple[str, ...] = ()  # human_ids waiting for a new Connect session


@dataclass(frozen=True)
class Shard:
    """This run's share of the users: those with `shard_of(human_id, count) == index`."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard index must be in 0..count-1, got {self.index}/{self.count}")

    def owns(self, human_id: str) -> bool:
        return self.count == 1 or shard_of(human_id, self.count) == self.index


EVERYONE = Shard()  # the default: one run owns every user


def shard_of(human_id: str, count: int) -> int:
    """The shard (0..count-1) a user belongs to: the same in every process and on every machine.

    blake2b, not hash(): Python salts str hashes per process (PYTHONHASHSEED), so two workers
    would disagree about who owns a user and sync some twice and others never."""
    if count < 1:
        raise ValueError("shard count must be at least 1")
    digest = hashlib.blake2b(human_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def floor_to_second(ts: datetime) -> datetime:
    """The upstream filter has second precision; flooring never skips a change."""
    return ts.replace(microsecond=0)


def plan_sync(
    *,
    mode: SyncMode,
    users: Iterable[UserRef],
    needs_reconnect: set[str],
    connected: set[str],
    notifications: pd.DataFrame,
    cursors: Mapping[tuple[str, str], datetime],
    only_users: set[str] | None = None,
    shard: Shard = EVERYONE,
) -> SyncPlan:
    """Plan one run.

    - incremental: only what pending notifications name (nothing pending → no requests);
    - catchup: every endpoint of every connected user from its cursor, plus pending notifications;
    - full: every endpoint of the selected users from the beginning of history.
    `only_users` (human_ids or client_user_ids) narrows any mode to some users; `shard` to the
    users one of several parallel runs owns. Notifications of users outside either stay pending
    (not marked) for the run that owns them.
    """
    by_human = {u.human_id: u for u in users if shard.owns(u.human_id)}
    if only_users:
        by_human = {
            h: u for h, u in by_human.items() if h in only_users or u.client_user_id in only_users
        }
    syncable = {h: u for h, u in by_human.items() if h not in needs_reconnect and h in connected}
    # one item per (user, endpoint); a catch-up list also answers that pair's notifications
    items: dict[tuple[str, str], WorkItem] = {}
    unactionable: dict[str, str] = {}

    if mode in ("catchup", "full"):
        for human_id in sorted(syncable):
            for endpoint in ENDPOINTS:
                since = None if mode == "full" else cursors.get((human_id, endpoint.path))
                items[(human_id, endpoint.path)] = WorkItem(
                    syncable[human_id],
                    endpoint,
                    "object" if endpoint.single_object else "list",
                    updated_since=since,
                    advances_cursor=True,
                )

    if len(notifications):
        for key, group in notifications.groupby(["human_id", "endpoint"], sort=True):
            hid, ep_path = (str(part) for part in key)
            ids = tuple(str(n) for n in group["notification_id"])
            if not shard.owns(hid):
                continue  # another shard's user (known or not): that shard's run marks it
            if only_users and hid not in by_human:
                continue  # another user's notification: left pending for a later run
            if hid not in by_human:
                unactionable.update(dict.fromkeys(ids, "unknown_user"))
                continue
            if hid not in syncable:
                unactionable.update(dict.fromkeys(ids, "skipped_reconnect"))
                continue
            existing = items.get((hid, ep_path))
            if existing is not None:
                objects = () if existing.how == "object" else _object_ids(group)
                items[(hid, ep_path)] = replace(
                    existing,
                    notification_ids=existing.notification_ids + ids,
                    record_ids=tuple(sorted(set(existing.record_ids) | set(objects))),
                    notified_objects=existing.notified_objects + _pairs(group),
                )
                continue
            items[(hid, ep_path)] = _notified_item(syncable[hid], BY_PATH[ep_path], group, ids)
    return SyncPlan(
        items=tuple(items.values()),
        unactionable=unactionable,
        skipped_reconnect=tuple(sorted(h for h in by_human if h in needs_reconnect)),
    )


def _notified_item(
    user: UserRef, endpoint: Endpoint, group: pd.DataFrame, ids: tuple[str, ...]
) -> WorkItem:
    if endpoint.single_object:
        return WorkItem(user, endpoint, "object", notification_ids=ids)
    object_ids = _object_ids(group)
    pairs = _pairs(group)
    if len(object_ids) == 1:
        return WorkItem(
            user,
            endpoint,
            "singles",
            record_ids=object_ids,
            notification_ids=ids,
            notified_objects=pairs,
        )
    earliest = pd.Timestamp(group["updated_at"].min()).to_pydatetime()
    return WorkItem(
        user,
        endpoint,
        "list",
        updated_since=floor_to_second(earliest),
        record_ids=object_ids,
        notification_ids=ids,
        notified_objects=pairs,
    )


def _object_ids(group: pd.DataFrame) -> tuple[str, ...]:
    return tuple(sorted(set(group["object_id"].astype(str))))


def _pairs(group: pd.DataFrame) -> tuple[tuple[str, str], ...]:
    return tuple(
        (str(n), str(o)) for n, o in zip(group["notification_id"], group["object_id"], strict=True)
    )
