"""Issue 4's "Done when", proved against the running simulator + receiver + real Dagster runs.

One stack is shared by the whole module (a catch-up run is the expensive part). The tests run
in file order and each one states what it needs: the tables are level with the simulator's
truth at the end of every test (a test that bends the upstream restores it and re-levels).
"""

from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from starfleet.config import SimFaults
from starfleet.delivery import new_nonce, signed_notification
from starfleet.records import iso_instant, parse_instant
from starfleet.world import Change, notification_items
from sync_pipeline.intake.server import running_receiver
from sync_pipeline.sync import commit as commit_module
from sync_pipeline.sync.run import run_sync
from sync_pipeline.tables.registry import key_of
from sync_pipeline.upstream.endpoints import ENDPOINTS, Endpoint
from sync_pipeline_tests.e2e.harness import Stack, running_stack

pytestmark = pytest.mark.slow

CHILD_TABLES = (
    "medical.test_result_components",
    "medical.vital_results",
    "medical.record_codes",
)
RECORD_TABLES = tuple(e.table for e in ENDPOINTS)
TABLE_KEYS = {table: key_of(table) for table in (*RECORD_TABLES, *CHILD_TABLES)}
LIST_ENDPOINTS = tuple(e for e in ENDPOINTS if not e.single_object)
# typed columns checked against the upstream's value wherever a table and a record both have them
TYPED_NUMERIC = ("value", "steps", "systolic", "diastolic", "calories")
TYPED_TEXT = ("status", "name")


@dataclass
class Shared:
    stack: Stack
    first_run_id: str
    truth_counts: dict[str, int]  # endpoint table -> records upstream when the first run ran


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    data_dir = tmp_path_factory.mktemp("record_sync") / "data"
    with running_stack(data_dir, users=2, seed=11, min_records=2, max_records=5) as stack:
        stack.sim.post_initial_sessions()
        stack.intake()
        truth_counts = {
            e.table: sum(len(recs) for recs in _truth(stack, e).values()) for e in ENDPOINTS
        }
        run = stack.sync("catchup")
        yield Shared(stack=stack, first_run_id=run.run_id, truth_counts=truth_counts)


# --- helpers ------------------------------------------------------------------------------


def _ms(instant: str) -> int:
    return round((parse_instant(instant) - datetime(1970, 1, 1)).total_seconds() * 1000)


def _truth(stack: Stack, endpoint: Endpoint) -> dict[str, list[dict[str, Any]]]:
    world = stack.sim.world
    return {u.human_id: world.records(u.human_id, endpoint.path) for u in world.users}


def _truth_keys(stack: Stack, endpoint: Endpoint) -> set[tuple[str, str, int]]:
    return {
        (human_id, r["id"], _ms(r["updatedAt"]))
        for human_id, records in _truth(stack, endpoint).items()
        for r in records
    }


def _db_keys(stack: Stack, table: str) -> set[tuple[str, str, int]]:
    rows = stack.query(
        f"SELECT human_id, record_id, epoch_ms(updated_at) FROM {table} WHERE deleted_at IS NULL"
    )
    return {(str(h), str(r), int(ms)) for h, r, ms in rows}


def _columns(stack: Stack, table: str) -> set[str]:
    schema, name = table.split(".")
    rows = stack.query(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = ? AND table_name = ?",
        [schema, name],
    )
    return {str(r[0]) for r in rows}


def assert_level_with_truth(stack: Stack) -> None:
    """Row by row, per user and table: keys and updatedAt, the raw record, typed columns."""
    for endpoint in ENDPOINTS:
        table = endpoint.table
        assert _db_keys(stack, table) == _truth_keys(stack, endpoint), table
        columns = _columns(stack, table)
        numeric = [c for c in TYPED_NUMERIC if c in columns]
        text = [c for c in TYPED_TEXT if c in columns]
        selected = ", ".join(["human_id", "record_id", "raw", *numeric, *text])
        stored = {
            (str(row[0]), str(row[1])): row[2:]
            for row in stack.query(f"SELECT {selected} FROM {table} WHERE deleted_at IS NULL")
        }
        for human_id, records in _truth(stack, endpoint).items():
            for record in records:
                raw, *values = stored[(human_id, record["id"])]
                assert json.loads(raw) == record, (table, record["id"])
                for column, value in zip([*numeric, *text], values, strict=True):
                    if record.get(column) is None or isinstance(record[column], (dict, list)):
                        continue
                    if column in numeric:
                        assert value == pytest.approx(float(record[column])), (table, column)
                    else:
                        assert value == record[column], (table, column)


def assert_no_duplicate_keys(stack: Stack) -> None:
    for table, keys in TABLE_KEYS.items():
        key_list = ", ".join(keys)
        dupes = stack.query(
            f"SELECT {key_list}, count(*) FROM {table} GROUP BY {key_list} HAVING count(*) > 1"
        )
        assert dupes == [], table


def checksums(stack: Stack) -> dict[str, tuple[int, int]]:
    """Every record and child table, every column (raw, deleted_at included)."""
    out = {}
    for table in (*RECORD_TABLES, *CHILD_TABLES):
        row = stack.query(f"SELECT count(*), coalesce(sum(hash(t)), 0) FROM {table} t")[0]
        out[table] = (int(row[0]), int(row[1]))
    return out


def rowids(stack: Stack) -> dict[str, list[tuple[Any, ...]]]:
    """Where each row of every record and child table sits (DuckDB's rowid): a row deleted and
    inserted again, even unchanged, moves."""
    return {
        table: stack.query(f"SELECT rowid FROM {table} ORDER BY rowid")
        for table in (*RECORD_TABLES, *CHILD_TABLES)
    }


def cursors(stack: Stack) -> dict[tuple[str, str], datetime]:
    rows = stack.query("SELECT human_id, endpoint, cursor_updated_since FROM ops.sync_state")
    return {(str(h), str(e)): c for h, e, c in rows}


def deliver(stack: Stack, items: list[dict[str, str]]) -> None:
    """A signed webhook delivery to the receiver, as the upstream sends it."""
    body, headers = signed_notification(
        items,
        stack.settings.client_secret,
        timestamp_ms=int(datetime.now().timestamp() * 1000),
        nonce=new_nonce(),
    )
    response = httpx.post(f"{stack.receiver_url}/notifications", content=body, headers=headers)
    assert response.status_code == 200, response.text


def pending_notifications(stack: Stack) -> int:
    rows = stack.query(
        "SELECT count(*) FROM ops.notifications WHERE status NOT IN ('synced', 'gone')"
    )
    return int(rows[0][0])


def user_ids(stack: Stack) -> list[tuple[str, str]]:
    return [(u.client_user_id, u.human_id) for u in stack.sim.world.users]


# --- 1. a catch-up run fills every table ---------------------------------------------------


def test_catchup_fills_every_table_and_load_log_balances(shared: Shared) -> None:
    stack = shared.stack
    for table in (*RECORD_TABLES, *CHILD_TABLES):
        assert stack.query(f"SELECT count(*) FROM {table}")[0][0] > 0, table
    log = {
        str(t): (int(rec), int(ld), int(rej), int(ins))
        for t, rec, ld, rej, ins in stack.query(
            "SELECT table_name, received, loaded, rejected, inserted FROM ops.load_log "
            "WHERE run_id = ?",
            [shared.first_run_id],
        )
    }
    # child tables have manifest rows too (their lake files); the ledger is per record table
    assert set(log) == {*RECORD_TABLES, *CHILD_TABLES}
    log = {t: counts for t, counts in log.items() if t in RECORD_TABLES}
    rejects = dict(
        stack.query(
            "SELECT table_name, count(*) FROM ops.rejected_records WHERE run_id = ? "
            "GROUP BY table_name",
            [shared.first_run_id],
        )
    )
    for table, (received, loaded, rejected, inserted) in log.items():
        # every record upstream was received once; received = loaded + rejected, each counted
        assert received == shared.truth_counts[table], table
        assert rejected == rejects.get(table, 0) == 0, table
        assert received == loaded + rejected, table
        assert inserted == loaded, table  # a fresh warehouse: every loaded record is new
    assert pending_notifications(stack) == 0


# --- 3. changes + notifications: one incremental run levels the tables ----------------------


def test_notified_changes_one_incremental_run_levels_tables(shared: Shared) -> None:
    stack = shared.stack
    before = {
        (str(h), str(r)): str(raw)
        for table in RECORD_TABLES
        for h, r, raw in stack.query(f"SELECT human_id, record_id, raw FROM {table}")
    }
    items = stack.sim.advance(created=8, updated=8)["items"]
    assert {i["action"] for i in items} == {"created", "updated"}
    stack.intake()
    stack.reset_stats()
    stack.sync("incremental")
    assert 0 < stack.data_requests() <= len(items)
    assert pending_notifications(stack) == 0
    assert_level_with_truth(stack)
    # an updated record's changed value is what the warehouse now holds
    # (an update may hit a record created by the same advance: compare only older records)
    updated = [
        i for i in items if i["action"] == "updated" and (i["humanId"], i["objectId"]) in before
    ]
    assert updated
    after = {
        (str(h), str(r)): str(raw)
        for table in RECORD_TABLES
        for h, r, raw in stack.query(f"SELECT human_id, record_id, raw FROM {table}")
    }
    assert all(
        after[(i["humanId"], i["objectId"])] != before[(i["humanId"], i["objectId"])]
        for i in updated
    )
    created = [i for i in items if i["action"] == "created"]
    assert all((i["humanId"], i["objectId"]) not in before for i in created)


# --- 2 + 4. nothing notified: no requests; lost changes wait for the catch-up -------------


def test_no_notifications_no_requests_and_lost_changes_wait_for_catchup(
    shared: Shared, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = shared.stack
    assert pending_notifications(stack) == 0
    world = stack.sim.world
    with world.lock:  # the upstream changes, but no notification is ever posted (lost)
        changes = world.advance(created=4, updated=4, rng=random.Random(404))
    assert changes
    stack.intake()
    stack.reset_stats()
    stack.sync("incremental")
    # no new notifications: not one data request (nor a token), and the changes stay unseen
    assert stack.data_requests() == 0
    assert stack.sim_stats()["total"] == 0
    changed = {(c.human_id, c.record_id, _ms(c.updated_at)) for c in changes}
    stored = set().union(*(_db_keys(stack, t) for t in RECORD_TABLES))
    assert not changed & stored

    # a catch-up whose commit dies: nothing it fetched is visible, no cursor moved
    cursors_before, sums_before = cursors(stack), checksums(stack)

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("killed during commit")

    monkeypatch.setattr(commit_module, "_store_audits", crash)
    with pytest.raises(RuntimeError, match="killed during commit"):
        run_sync(stack.settings, run_id="crashed-catchup", mode="catchup")
    monkeypatch.undo()
    assert cursors(stack) == cursors_before
    assert checksums(stack) == sums_before

    stack.sync("catchup")
    assert_level_with_truth(stack)
    after = cursors(stack)
    # a cursor trails the newest change by SYNC_CURSOR_LAG_S (each catch-up re-reads that
    # window)
    lag = timedelta(seconds=stack.settings.cursor_lag_s)
    for change in changes:
        floor = parse_instant(change.updated_at).replace(microsecond=0)
        cursor = after[(change.human_id, change.path)]
        assert cursor.replace(tzinfo=None) >= floor - lag, change
        assert cursor > cursors_before[(change.human_id, change.path)], change


# --- 5. duplicate and out-of-order updates ---------------------------------------------------


def test_duplicate_deliveries_and_stale_versions_keep_the_newest(shared: Shared) -> None:
    stack = shared.stack
    world = stack.sim.world
    items = stack.sim.advance(updated=4)["items"]
    deliver(stack, items)  # the same batch twice more, as a re-sending upstream would
    deliver(stack, items)
    # and an older version shows up after the newer one was stored (a lagging replica)
    endpoint = next(e for e in LIST_ENDPOINTS if e.path == "heart_rate/readings")
    user = world.users[0]
    store = user.store(endpoint.path)
    current = world.records(user.human_id, endpoint.path)[0]
    stored_before = stack.query(
        "SELECT epoch_ms(updated_at) FROM wellness.heart_rate WHERE human_id = ? AND record_id = ?",
        [user.human_id, current["id"]],
    )
    assert stored_before == [(_ms(current["updatedAt"]),)]
    stale = copy.deepcopy(current)
    stale["updatedAt"] = iso_instant(parse_instant(current["updatedAt"]) - timedelta(days=3))
    stale["value"] = float(current["value"]) + 17
    with world.lock:
        store.put(stale)
    try:
        change = Change(user.human_id, endpoint.path, stale["id"], "updated", stale["updatedAt"])
        deliver(stack, notification_items([change]))
        stack.intake()
        notified = stack.query("SELECT count(*) FROM ops.notifications WHERE status = 'received'")[
            0
        ][0]
        assert notified >= 3 * len(items) + 1
        stack.reset_stats()
        stack.sync("incremental")
        served = stack.sim_stats()["by_path"]
        assert any(path.startswith(endpoint.path) for path in served)  # the stale one was served
    finally:
        with world.lock:
            store.put(current)
    assert pending_notifications(stack) == 0
    row = stack.query(
        "SELECT epoch_ms(updated_at), value, raw FROM wellness.heart_rate "
        "WHERE human_id = ? AND record_id = ?",
        [user.human_id, current["id"]],
    )
    assert len(row) == 1
    stored_ms, stored_value, stored_raw = row[0]
    assert stored_ms == _ms(current["updatedAt"])  # the newest updatedAt won
    assert stored_value == pytest.approx(float(current["value"]))
    assert json.loads(stored_raw) == current
    assert_level_with_truth(stack)
    assert_no_duplicate_keys(stack)


# --- 7. a 404 sets deleted_at ----------------------------------------------------------------


# one gone object is fetched by id; two or more on one endpoint make the plan list them, and
# an object the list does not return must still be asked for by id (404 → deleted_at)
@pytest.mark.parametrize("gone", [1, 2])
def test_gone_records_get_deleted_at_and_stay(shared: Shared, gone: int) -> None:
    stack = shared.stack
    endpoint = next(e for e in LIST_ENDPOINTS if e.path == "medical/test_results")
    human_id = stack.sim.world.users[1].human_id
    victims = [r["id"] for r in stack.sim.world.records(human_id, endpoint.path)[:gone]]
    assert len(victims) == gone
    children_sql = (
        "SELECT count(*) FROM medical.test_result_components WHERE human_id = ? AND record_id = ?"
    )
    children_before = {v: stack.query(children_sql, [human_id, v]) for v in victims}
    changes = []
    for victim in victims:
        response = httpx.post(
            f"{stack.sim.base_url}/_sim/delete",
            json={"human_id": human_id, "path": endpoint.path, "record_id": victim},
        )
        assert response.json() == {"deleted": True}
        now = iso_instant(datetime.now(UTC).replace(tzinfo=None))
        changes.append(Change(human_id, endpoint.path, victim, "updated", now))
    deliver(stack, notification_items(changes))
    stack.intake()
    run = stack.sync("incremental")
    for victim in victims:
        row = stack.query(
            "SELECT deleted_at IS NOT NULL, raw IS NOT NULL FROM medical.test_results "
            "WHERE human_id = ? AND record_id = ?",
            [human_id, victim],
        )
        assert row == [(True, True)], victim
        # its children stay with it
        assert stack.query(children_sql, [human_id, victim]) == children_before[victim]
        statuses = stack.query(
            "SELECT status FROM ops.notifications WHERE object_id = ? AND sync_run_id = ?",
            [victim, run.run_id],
        )
        assert statuses == [("gone",)], victim
    deleted = stack.query(
        "SELECT deleted FROM ops.load_log WHERE run_id = ? AND table_name = ?",
        [run.run_id, endpoint.table],
    )
    assert deleted == [(gone,)]
    assert_level_with_truth(stack)  # live rows still match; the deleted one is kept aside


# --- 8. full re-pull of one user ---------------------------------------------------------------


def test_full_repull_of_one_user_fetches_only_them_and_changes_nothing(shared: Shared) -> None:
    stack = shared.stack
    (client_user_id, human_id), (_, other) = user_ids(stack)
    before = checksums(stack)
    stack.reset_stats()
    run = stack.sync("full", users=[client_user_id])
    stats = stack.sim_stats()
    assert set(stats["by_human_id"]) == {human_id}
    assert other not in stats["by_human_id"]
    # the whole history: every endpoint asked from the beginning (no updated_since)
    assert {e.path for e in ENDPOINTS} <= set(stats["by_path"])
    assert checksums(stack) == before
    # every record was rewritten (a full re-pull re-derives rows and children), none changed
    assert stack.query(
        "SELECT sum(inserted), sum(updated) FROM ops.load_log WHERE run_id = ?", [run.run_id]
    ) == [(0, 0)]


# --- 9. catch-up twice is a no-op; the CLI ----------------------------------------------------


def test_catchup_again_leaves_identical_tables(shared: Shared) -> None:
    """The tables are level (the previous test ended on a run); a catch-up re-fetches what sits
    at each cursor's second and must change nothing: those records, equal to the stored rows,
    are not even rewritten, and ops.load_log counts none of them inserted or updated."""
    stack = shared.stack
    first, placed = checksums(stack), rowids(stack)
    run = stack.sync("catchup")
    assert checksums(stack) == first
    assert rowids(stack) == placed
    assert_no_duplicate_keys(stack)
    received, inserted, updated = stack.query(
        "SELECT sum(received), sum(inserted), sum(updated) FROM ops.load_log WHERE run_id = ?",
        [run.run_id],
    )[0]
    assert received > 0
    assert (inserted, updated) == (0, 0)


# --- 6. unknown fields and wrong types --------------------------------------------------------


def test_corrupt_records_load_with_raw_or_are_rejected(shared: Shared) -> None:
    """Runs last on the shared stack: corrupt copies replace good rows (same updatedAt)."""
    stack = shared.stack
    stack.sim.app_config.faults = SimFaults(corrupt_rate=0.4, seed=6)
    try:
        run = stack.sync("full")
    finally:
        stack.sim.app_config.faults = SimFaults()
    truth = {e.table: len(_truth_keys(stack, e)) for e in ENDPOINTS}
    log = stack.query(
        "SELECT table_name, received, loaded, rejected FROM ops.load_log WHERE run_id = ? "
        "AND table_name IN (SELECT unnest(?::VARCHAR[]))",
        [run.run_id, list(RECORD_TABLES)],
    )
    rejects = dict(
        stack.query(
            "SELECT table_name, count(*) FROM ops.rejected_records WHERE run_id = ? "
            "GROUP BY table_name",
            [run.run_id],
        )
    )
    assert {str(r[0]) for r in log} == set(RECORD_TABLES)
    for table, received, loaded, rejected in log:
        assert received == truth[table], table  # everything was served once, broken or not
        assert received == loaded + rejected, table
        assert rejected == rejects.get(table, 0), table
    assert sum(rejects.values()) > 0
    reasons = stack.query(
        "SELECT reason, raw FROM ops.rejected_records WHERE run_id = ?", [run.run_id]
    )
    assert all(reason and json.loads(raw) for reason, raw in reasons)
    # unknown fields never break a load: those records are stored with the field kept in raw
    kept = sum(
        stack.query(f"SELECT count(*) FROM {t} WHERE raw LIKE '%simUnexpected%'")[0][0]
        for t in RECORD_TABLES
    )
    assert kept > 0
    assert_no_duplicate_keys(stack)


def test_cli_full_sync_as_a_subprocess(shared: Shared, tmp_path: Path) -> None:
    stack = shared.stack
    data_dir = tmp_path / "cli-data"
    settings = replace(stack.settings, data_dir=data_dir)
    # the CLI's own data dir gets its users the way production does: sessions via a receiver
    with running_receiver(settings) as receiver:
        saved = stack.sim.app_config.receiver_url
        stack.sim.app_config.receiver_url = receiver.base_url
        try:
            sessions = stack.sim.post_initial_sessions()
        finally:
            stack.sim.app_config.receiver_url = saved
    assert [s["delivery_status"] for s in sessions] == [200] * len(sessions)
    env = {
        **os.environ,
        "SYNC_API_URL": stack.sim.base_url,
        "SYNC_AUTH_URL": stack.sim.base_url,
        "SYNC_DATA_DIR": str(data_dir),
        "SYNC_SESSION_PUBLIC_KEY": stack.settings.session_public_key or "",
    }
    env.pop("DAGSTER_HOME", None)
    cli = Path(sys.executable).with_name("sync-pipeline")
    done = subprocess.run(
        [str(cli), "sync", "--full"], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    import duckdb

    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        for endpoint in ENDPOINTS:
            count = con.execute(f"SELECT count(*) FROM {endpoint.table}").fetchall()[0][0]
            assert count == len(_truth_keys(stack, endpoint)), endpoint.table
