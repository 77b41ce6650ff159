"""Isolation against a hostile upstream on loopback: the real run_sync into a real DuckDB file.

Poison is mixed among good records for two users: a lone surrogate, an oversized record and a
5,000-deep sourceData on the same page as good records, a profile object nested 5,000 deep,
a gzip bomb, a Link chain that
never ends and one that repeats, an object where a list belongs, a record stamped 2199, a
`Retry-After` of three years, an `X-RateLimit-Reset` ten years ahead and `expires_in: 0`.
Every good record of every item that is not itself poisoned lands; each poisoned item fails
alone with its reason in the report (what the CLI and Dagster turn into a failed run).
"""

from __future__ import annotations

import json
import os
import resource
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from starlette.requests import Request
from starlette.responses import Response

from sync_pipeline.settings import Settings, load_settings
from sync_pipeline.sync import run as run_module
from sync_pipeline.sync.run import SyncReport, run_sync
from sync_pipeline.upstream.endpoints import ENDPOINTS
from sync_pipeline.warehouse import db

from .hostile_upstream import (
    ALICE,
    BOB,
    USERS,
    HostileUpstream,
    good_record,
    gzip_bomb,
    raw_json_response,
    serving,
)

pytestmark = pytest.mark.slow

A, B = ALICE[1], BOB[1]
MAX_RECORD_BYTES = 64 * 1024
DEADLINE_S = 10.0


class Raw:
    """A record served as these exact bytes (what json.dumps cannot write: 5,000 levels)."""

    def __init__(self, body: bytes) -> None:
        self.body = body


def encode(records: list[Any]) -> bytes:
    # ensure_ascii: lone surrogates go out as "\ud800" escapes, as a broken upstream sends them
    return (
        b"["
        + b",".join(r.body if isinstance(r, Raw) else json.dumps(r).encode() for r in records)
        + b"]"
    )


def paged(request: Request, records: list[Any]) -> Response:
    return raw_json_response(encode(records), total=len(records))


def endless_chain(request: Request, records: list[Any]) -> Response:
    offset = int(request.query_params.get("offset", "0"))
    next_url = request.url.include_query_params(offset=offset + 1)
    return raw_json_response(
        encode([good_record(f"alice-chain-{offset}")]),
        total=2,
        Link=f'<{next_url}>; rel="next"',
    )


def repeating_chain(request: Request, records: list[Any]) -> Response:
    return raw_json_response(encode(records), Link=f'<{request.url}>; rel="next"')


def an_object(request: Request, records: list[Any]) -> Response:
    return raw_json_response(b'{"status": 200, "data": "not a list"}')


def years_of_retry_after(request: Request, records: list[Any]) -> Response:
    return Response(b'{"status":429}', status_code=429, headers={"Retry-After": "99999999"})


def reset_in_ten_years(request: Request, records: list[Any]) -> Response:
    reset = int(time.time()) + 10 * 365 * 86_400
    return raw_json_response(
        encode(records),
        total=len(records),
        **{"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)},
    )


BOMB = gzip_bomb(200 * 2**20)  # ~200 kB on the wire, 200 MB inflated


def bomb(request: Request, records: list[Any]) -> Response:
    return Response(BOMB, media_type="application/json", headers={"Content-Encoding": "gzip"})


POISONED_ITEMS = {
    (A, "medical/profile"): "body is nested deeper than the JSON decoder allows",
    (A, "activities"): "over the 33554432-byte limit (SYNC_MAX_RESPONSE_BYTES)",
    (A, "sleeps"): "next-page links go on far past X-Total-Count 2",
    (B, "sleeps"): "next-page link repeats an earlier page",
    (A, "weight/readings"): "expected a JSON array, got an object",
    (A, "blood_glucose/readings"): "asked to wait 99999999 s, past the request's 10 s deadline",
}


def hostile_world() -> HostileUpstream:
    upstream = HostileUpstream()
    for client_user_id, human_id in USERS:
        # a record whose text was cut mid-emoji, on the same page as good records
        upstream.add(
            human_id,
            "medical/allergies",
            good_record(f"{client_user_id}-cut", name="cut emoji \ud83d", status="\udc00!"),
            good_record(f"{client_user_id}-allergy-2"),
            good_record(f"{client_user_id}-huge-number", value=10**30),
        )
        # on that page too: a record over SYNC_MAX_RECORD_BYTES, and one that is no object
        upstream.add(
            human_id,
            "medical/allergies",
            good_record(f"{client_user_id}-oversized", note="x" * (4 * MAX_RECORD_BYTES)),
            42,
            good=False,
        )
        upstream.poison[(human_id, "medical/allergies")] = paged
    # nested past the JSON decoder: one record of a page (rejected, the page loads), and a
    # whole single-object body (that item fails)
    deep = b"[" * 5000 + b"]" * 5000
    upstream.add(
        A,
        "medical/issues",
        Raw(b'{"id":"alice-deep","updatedAt":"2020-06-01T10:00:00Z","sourceData":' + deep + b"}"),
        good=False,
    )
    upstream.add(A, "medical/issues", good_record("alice-after-deep"))
    upstream.poison[(A, "medical/issues")] = paged
    upstream.poison[(A, "medical/profile")] = lambda request, records: raw_json_response(
        b'{"id": "p", "demographics": ' + deep + b"}"
    )
    upstream.poison[(A, "activities")] = bomb
    upstream.poison[(A, "sleeps")] = endless_chain
    upstream.poison[(B, "sleeps")] = repeating_chain
    upstream.poison[(A, "weight/readings")] = an_object
    upstream.poison[(A, "blood_glucose/readings")] = years_of_retry_after
    upstream.poison[(B, "blood_oxygen/readings")] = reset_in_ten_years
    # stamped 175 years ahead: loaded, flagged, and no cursor follows it
    upstream.add(A, "heart_rate/readings", good_record("alice-future", "2199-01-01T00:00:00.000Z"))
    return upstream


def make_warehouse(data_dir: Path, base_url: str) -> Settings:
    settings = load_settings(
        {
            "SYNC_DATA_DIR": str(data_dir),
            "SYNC_API_URL": base_url,
            "SYNC_AUTH_URL": base_url,
            "SYNC_HTTP_DEADLINE_S": str(DEADLINE_S),
            "SYNC_HTTP_TIMEOUT_S": "5",
            "SYNC_HTTP_MAX_ATTEMPTS": "3",
            "SYNC_HTTP_MAX_PAUSE_S": "1",
            "SYNC_PAGE_SIZE": "50",
            "SYNC_MAX_RECORD_BYTES": str(MAX_RECORD_BYTES),
        }
    )
    now = datetime.now(UTC)
    data_dir.mkdir(parents=True)
    with db.connect(settings.warehouse_path) as con:
        db.append(
            con,
            "connect.app_users",
            pa.Table.from_pylist(
                [
                    {
                        "client_user_id": c,
                        "human_id": h,
                        "first_seen_at": now,
                        "last_seen_at": now,
                        "last_session_status": "SUCCESS",
                        "reconnected_at": now,  # connected, never refused
                    }
                    for c, h in USERS
                ]
            ),
        )
        db.append(
            con,
            "connect.connection_history",
            pa.Table.from_pylist(
                [
                    {"human_id": h, "source_id": "src", "source_name": "Test", "valid_from": now}
                    for _, h in USERS
                ]
            ),
        )
    return settings


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[HostileUpstream, str]]:
    world = hostile_world()
    with serving(world) as base_url:
        yield world, base_url


def query(settings: Settings, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def stored_ids(settings: Settings) -> set[tuple[str, str, str]]:
    out = set()
    for endpoint in ENDPOINTS:
        for human_id, record_id in query(
            settings, f"SELECT human_id, record_id FROM {endpoint.table}"
        ):
            out.add((endpoint.path, human_id, record_id))
    return out


def catchup(settings: Settings) -> SyncReport:
    return run_sync(settings, run_id=f"isolation-{uuid.uuid4().hex[:8]}", mode="catchup")


def test_poison_fails_only_its_own_item_and_every_good_record_lands(
    upstream: tuple[HostileUpstream, str], tmp_path: Path
) -> None:
    world, base_url = upstream
    settings = make_warehouse(tmp_path / "data", base_url)
    report = catchup(settings)

    # each poisoned item failed alone, with its reason; every other item synced
    failed = {(h, path): why for h, path, why in report.summary.failed_items}
    assert set(failed) == set(POISONED_ITEMS), failed
    for item, reason in POISONED_ITEMS.items():
        assert reason in failed[item], (item, failed[item])
    assert len([r for r in report.fetched.items if r.ok]) == 2 * len(ENDPOINTS) - len(failed)

    # every good record of every other item landed, the ones beside the poison included
    must_land = {
        (path, human_id, r["id"])
        for (human_id, path), records in world.good.items()
        if (human_id, path) not in POISONED_ITEMS
        for r in records
    }
    assert must_land <= stored_ids(settings)
    assert ("medical/allergies", A, "alice-allergy-2") in must_land
    assert ("medical/issues", A, "alice-after-deep") in must_land
    [(human_id, reason, raw_length)] = query(
        settings,
        "SELECT human_id, reason, length(raw) FROM ops.rejected_records "
        "WHERE table_name = 'medical.issues' AND record_id = 'alice-deep'",
    )
    assert human_id == A and raw_length < 2048  # an excerpt, not the 10 kB element
    assert reason.startswith("record is nested deeper than the JSON decoder allows (")

    # the cut text is loaded repaired, and flagged where an analyst finds it
    assert query(
        settings, "SELECT name, status FROM medical.allergies WHERE record_id = 'alice-cut'"
    ) == [("cut emoji \ufffd", "\ufffd!")]
    assert query(
        settings,
        "SELECT human_id, record_id FROM ops.flagged_records WHERE flag = 'text_repaired' "
        "ORDER BY human_id",
    ) == [(A, "alice-cut"), (B, "bob-cut")]
    assert report.summary.flagged == 3  # the two cut texts and the record stamped 2199
    query(settings, "SELECT json_extract(raw, '$.name') FROM medical.allergies")  # all valid

    # the oversized record is rejected with its id and size; its body is not kept
    rejects = query(
        settings,
        "SELECT human_id, record_id, reason, length(raw) FROM ops.rejected_records "
        "WHERE table_name = 'medical.allergies' ORDER BY human_id, record_id",
    )
    oversized = [r for r in rejects if r[1] and r[1].endswith("-oversized")]
    assert [(h, i) for h, i, _, _ in oversized] == [(A, "alice-oversized"), (B, "bob-oversized")]
    for _, _, reason, raw_length in oversized:
        assert "over the 65536-byte limit" in reason and "bytes" in reason
        assert raw_length < 4096
    assert len([r for r in rejects if r[1] is None]) == 2  # the two `42`s, one per user

    # received = loaded + rejected, per table
    for load in report.summary.tables.values():
        assert load.received == load.loaded + load.rejected
    allergies = report.summary.tables["medical.allergies"]
    assert (allergies.received, allergies.rejected) == (12, 4)

    # tokens: expires_in 0 is floored, not one token request per data request
    assert world.requests["token"] <= 2 * len(USERS)
    # a gzip bomb, a 5,000-deep body and a 55-page chain later, the process stayed small
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 < 2**30


def test_a_future_stamp_is_flagged_and_never_hides_a_later_update(
    upstream: tuple[HostileUpstream, str], tmp_path: Path
) -> None:
    world, base_url = upstream
    settings = make_warehouse(tmp_path / "data", base_url)
    catchup(settings)
    lag = timedelta(seconds=settings.cursor_lag_s)

    flagged = query(
        settings,
        "SELECT record_id FROM ops.flagged_records WHERE flag = 'future_updated_at'",
    )
    assert flagged == [("alice-future",)]
    stored_at = query(
        settings,
        "SELECT updated_at FROM wellness.heart_rate WHERE record_id = 'alice-future'",
    )[0][0]
    assert stored_at <= datetime.now(UTC)  # held to the upstream's clock, raw keeps 2199
    cursor = query(
        settings,
        "SELECT cursor_updated_since FROM ops.sync_state WHERE human_id = ? AND endpoint = ?",
        [A, "heart_rate/readings"],
    )[0][0]
    assert cursor <= datetime.now(UTC) - lag  # the cursor did not follow the stamp to 2199

    # the record is really updated upstream, and another one appears: both arrive
    later = (datetime.now(UTC) + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    key = (A, "heart_rate/readings")
    saved = list(world.records[key])
    try:
        world.records[key] = [
            r for r in saved if not (isinstance(r, dict) and r["id"] == "alice-future")
        ] + [good_record("alice-future", later, value=99.0), good_record("alice-later", later)]
        catchup(settings)
    finally:
        world.records[key] = saved
    assert query(
        settings,
        "SELECT record_id, value FROM wellness.heart_rate WHERE human_id = ? "
        "AND record_id IN ('alice-future', 'alice-later') ORDER BY record_id",
        [A],
    ) == [("alice-future", 99.0), ("alice-later", 1.5)]


def lake_files(settings: Settings) -> list[Path]:
    return sorted(settings.lake_dir.rglob("*.parquet"))


def test_staged_parquet_of_a_run_that_did_not_commit_is_removed(
    upstream: tuple[HostileUpstream, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, base_url = upstream
    settings = make_warehouse(tmp_path / "data", base_url)
    real_commit = run_module.commit_run

    def commit_that_dies(*args: Any, **kwargs: Any) -> Any:
        assert lake_files(settings), "nothing was staged: the test would prove nothing"
        raise RuntimeError("killed during commit")

    monkeypatch.setattr(run_module, "commit_run", commit_that_dies)
    with pytest.raises(RuntimeError, match="killed during commit"):
        catchup(settings)
    assert lake_files(settings) == []  # PHI of a run that did not commit is gone

    # files left by a run killed outright: deleted once old enough, never while in flight
    monkeypatch.setattr(run_module, "commit_run", real_commit)
    catchup(settings)
    committed = lake_files(settings)
    assert committed
    table_dir = committed[0].parent.parent
    killed_long_ago = table_dir / "run=killed-long-ago" / "part-00000.parquet"
    in_flight = table_dir / "run=staging-now" / "part-00000.parquet"
    for orphan in (killed_long_ago, in_flight):
        orphan.parent.mkdir()
        orphan.write_bytes(committed[0].read_bytes())
    two_days_ago = time.time() - 2 * 86_400
    os.utime(killed_long_ago, (two_days_ago, two_days_ago))
    for path in committed:
        os.utime(path, (two_days_ago, two_days_ago))  # old, but their run committed
    catchup(replace(settings))
    remaining = set(lake_files(settings))
    assert not killed_long_ago.exists() and not killed_long_ago.parent.exists()
    assert in_flight in remaining
    assert set(committed) <= remaining
