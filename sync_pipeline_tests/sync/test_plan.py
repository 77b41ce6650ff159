"""Planning a sync: which requests a run makes, decided before any I/O."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from sync_pipeline.sync.plan import plan_sync
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
