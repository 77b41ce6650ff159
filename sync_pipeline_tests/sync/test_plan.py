"""Planning a sync: which requests a run makes, decided before any I/O."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from typing import Any

import pandas as pd
import pytest

from sync_pipeline.sync.plan import Shard, plan_sync, shard_of
from sync_pipeline.upstream.client import UserRef
from sync_pipeline.upstream.endpoints import ENDPOINTS

ALICE = UserRef("alice", "a" * 32)
BOB = UserRef("bob", "b" * 32)
T = dt.datetime(2026, 11, 1, 12, 0, 30, 250_000, tzinfo=dt.UTC)


def _notifications(*items: tuple[str, str, str, dt.datetime]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "notification_id": f"n{i}",
                "human_id": h,
                "endpoint": e,
                "object_id": o,
                "updated_at": u,
            }
            for i, (h, e, o, u) in enumerate(items)
        ],
        columns=["notification_id", "human_id", "endpoint", "object_id", "updated_at"],
    )


def _plan(mode: str = "incremental", notifications: pd.DataFrame | None = None, **kw):  # type: ignore[no-untyped-def]
    args = {
        "mode": mode,
        "users": [ALICE, BOB],
        "needs_reconnect": set(),
        "connected": {ALICE.human_id, BOB.human_id},
        "notifications": _notifications() if notifications is None else notifications,
        "cursors": {},
    }
    args.update(kw)
    return plan_sync(**args)


def test_nothing_pending_means_no_requests() -> None:
    assert _plan().items == ()


def test_a_lone_change_is_fetched_by_id_and_several_by_one_list() -> None:
    plan = _plan(
        notifications=_notifications(
            (ALICE.human_id, "medical/test_results", "r1", T),
            (BOB.human_id, "activities", "x1", T),
            (BOB.human_id, "activities", "x2", T - dt.timedelta(hours=1)),
            (BOB.human_id, "activities", "x2", T),  # the same object notified twice
        )
    )
    by_user = {i.user.human_id: i for i in plan.items}
    single = by_user[ALICE.human_id]
    assert (single.how, single.record_ids, single.notification_ids) == ("singles", ("r1",), ("n0",))
    listing = by_user[BOB.human_id]
    assert listing.how == "list"
    # the earliest notified change, floored to the filter's one-second precision
    assert listing.updated_since == (T - dt.timedelta(hours=1)).replace(microsecond=0)
    assert set(listing.notification_ids) == {"n1", "n2", "n3"}
    assert not listing.advances_cursor


def test_catchup_covers_every_endpoint_from_its_cursor_and_absorbs_notifications() -> None:
    cursor = T - dt.timedelta(days=1)
    plan = _plan(
        "catchup",
        notifications=_notifications((ALICE.human_id, "medical/test_results", "r1", T)),
        cursors={(ALICE.human_id, "medical/test_results"): cursor},
    )
    assert len(plan.items) == 2 * len(ENDPOINTS)
    item = next(
        i for i in plan.items if i.user == ALICE and i.endpoint.path == "medical/test_results"
    )
    assert (item.how, item.updated_since, item.notification_ids) == ("list", cursor, ("n0",))
    assert all(i.advances_cursor for i in plan.items)
    profile = next(i for i in plan.items if i.endpoint.single_object)
    assert profile.how == "object"


def test_full_ignores_cursors() -> None:
    plan = _plan("full", cursors={(ALICE.human_id, "activities"): T}, only_users={"alice"})
    assert {i.user for i in plan.items} == {ALICE}
    assert all(i.updated_since is None for i in plan.items)


def test_users_waiting_to_reconnect_or_unknown_are_not_fetched() -> None:
    stranger = "c" * 32
    plan = _plan(
        "catchup",
        needs_reconnect={BOB.human_id},
        notifications=_notifications(
            (BOB.human_id, "activities", "x1", T), (stranger, "activities", "x2", T)
        ),
    )
    assert {i.user for i in plan.items} == {ALICE}
    assert plan.unactionable == {"n0": "skipped_reconnect", "n1": "unknown_user"}
    assert plan.skipped_reconnect == (BOB.human_id,)


def test_users_without_an_open_connection_are_not_fetched() -> None:
    plan = _plan("catchup", connected={ALICE.human_id})
    assert {i.user for i in plan.items} == {ALICE}


# --- sharding: parallel runs split the users by a stable hash ---------------------------------

USERS = [UserRef(f"user-{i}", hashlib.md5(str(i).encode()).hexdigest()) for i in range(40)]
STRANGER = "f" * 32  # notified, but not in connect.users


def _sharded_inputs(mode: str) -> dict[str, Any]:
    waiting = USERS[3].human_id
    notes = [(u.human_id, "medical/test_results", f"r{i}", T) for i, u in enumerate(USERS) if i % 3]
    notes += [
        (USERS[5].human_id, "activities", "x1", T),
        (STRANGER, "activities", "x9", T),  # n27
        (waiting, "activities", "x2", T),  # skipped_reconnect
    ]
    return {
        "mode": mode,
        "users": USERS,
        "needs_reconnect": {waiting},
        "connected": {u.human_id for u in USERS},
        "notifications": _notifications(*notes),
        "cursors": {(USERS[1].human_id, "activities"): T},
    }


@pytest.mark.parametrize("mode", ["incremental", "catchup", "full"])
@pytest.mark.parametrize("count", [2, 3, 7])
def test_shards_partition_the_unsharded_plan(mode: str, count: int) -> None:
    whole = plan_sync(**_sharded_inputs(mode))
    parts = [plan_sync(**_sharded_inputs(mode), shard=Shard(i, count)) for i in range(count)]
    items = [set(p.items) for p in parts]
    # disjoint, and together exactly the unsharded plan (items, unactionable, reconnects)
    assert sum(len(i) for i in items) == len(whole.items) == len(set().union(*items))
    assert set().union(*items) == set(whole.items)
    unactionable = [p.unactionable for p in parts]
    assert sum(len(u) for u in unactionable) == len(whole.unactionable)
    assert {k: v for u in unactionable for k, v in u.items()} == dict(whole.unactionable)
    assert sorted(h for p in parts for h in p.skipped_reconnect) == list(whole.skipped_reconnect)
    # every user's items land in the one shard the hash names
    for index, part in enumerate(parts):
        assert {shard_of(i.user.human_id, count) for i in part.items} <= {index}
    if count <= len(USERS) // 10:
        assert all(part.items for part in parts)  # 40 users spread over a few shards


def test_notifications_of_other_shards_stay_pending() -> None:
    inputs = _sharded_inputs("incremental")
    owner = shard_of(STRANGER, 2)
    mine, theirs = (plan_sync(**inputs, shard=Shard(i, 2)) for i in (owner, 1 - owner))
    # the unknown user's notification is marked by its own shard only; the other leaves it
    assert mine.unactionable["n27"] == "unknown_user"
    assert "n27" not in theirs.unactionable
    notified = {n for i in theirs.items for n in i.notification_ids}
    others = {n for i in mine.items for n in i.notification_ids}
    assert notified and others and not notified & others


def test_shard_of_is_stable_across_processes_and_hash_seeds() -> None:
    ids = [u.human_id for u in USERS]
    here = [shard_of(h, 5) for h in ids]
    code = (
        "import json, sys; from sync_pipeline.sync.plan import shard_of; "
        "print(json.dumps([shard_of(h, 5) for h in json.load(sys.stdin)]))"
    )
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(ids),
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert json.loads(out.stdout) == here
    # pinned: a change of hash would move users between shards of a running deployment
    assert [shard_of("a" * 32, 4), shard_of("b" * 32, 4), shard_of("0" * 32, 1)] == [3, 2, 0]
    assert len(set(here)) == 5  # 40 users reach every one of 5 shards


@pytest.mark.parametrize(("index", "count"), [(0, 0), (2, 2), (-1, 3)])
def test_a_shard_outside_its_count_is_refused(index: int, count: int) -> None:
    with pytest.raises(ValueError, match="shard"):
        Shard(index, count)
