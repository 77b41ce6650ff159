"""Typing batches of fetched pages: a raw page body and the records it decodes to type alike,
so the fetch may hand the worker process either."""

from __future__ import annotations

import asyncio
import multiprocessing

import orjson
import pyarrow as pa
import pytest

from sync_pipeline.normalize import Limits, normalize_records, to_arrow
from sync_pipeline.sync.typing_worker import TypingProcess, TypingTimedOut, type_chunks
from sync_pipeline.upstream.body import decode_plain
from sync_pipeline.upstream.endpoints import BY_PATH

ALICE, BOB = "a" * 32, "b" * 32
WEIGHT = BY_PATH["weight/readings"]


def _reading(record_id: str, updated_at: str, value: object = 70.5) -> dict[str, object]:
    return {
        "id": record_id,
        "updatedAt": updated_at,
        "timestamp": updated_at,
        "value": value,
        "unit": "kg",
    }


def test_a_raw_page_types_as_the_records_it_decodes_to() -> None:
    alice = [_reading("r1", "2020-01-01T00:00:00Z"), _reading("r2", "2020-01-03T00:00:00Z")]
    bob = [_reading("r1", "2020-01-02T00:00:00Z", value="heavy"), {"no": "id"}]
    from_bodies = type_chunks(WEIGHT, [(ALICE, orjson.dumps(alice)), (BOB, bob)], Limits())
    expected = normalize_records(WEIGHT, [ALICE] * 2 + [BOB] * 2, alice + bob, Limits())

    main = from_bodies.tables["wellness.weight"]
    assert main.equals(to_arrow("wellness.weight", expected.tables["wellness.weight"]))
    assert from_bodies.received == 4
    assert list(from_bodies.rejected["reason"]) == list(expected.rejected["reason"])
    # what the next cursor is derived from: each user's newest loaded updatedAt
    assert {h: t.isoformat() for h, t in from_bodies.newest.items()} == {
        ALICE: "2020-01-03T00:00:00+00:00",
        BOB: "2020-01-02T00:00:00+00:00",
    }


def test_only_tables_with_rows_come_back_each_with_its_declared_schema() -> None:
    typed = type_chunks(WEIGHT, [(ALICE, [_reading("r1", "2020-01-01T00:00:00Z")])], Limits())
    assert set(typed.tables) == {"wellness.weight"}
    assert isinstance(typed.tables["wellness.weight"], pa.Table)
    assert typed.seconds >= 0 and typed.decode_s >= 0 and typed.peak_rss_mib > 0


def test_a_body_orjson_refuses_is_not_handed_on_raw() -> None:
    """Lone surrogates: the json module reads them (the record is then repaired and flagged),
    orjson does not, so such a page travels as its decoded records instead."""
    plain, odd = b'[{"id": "r1"}]', b'[{"id": "r1", "note": "\\ud800"}]'
    assert decode_plain(plain) == ([{"id": "r1"}], True)
    records, is_plain = decode_plain(odd)
    assert records == [{"id": "r1", "note": "\ud800"}]
    assert not is_plain


async def _type_in_worker(worker: TypingProcess) -> None:
    await worker.type_chunks(WEIGHT, [(ALICE, [_reading("r1", "2020-01-01T00:00:00Z")])], Limits())


def test_a_batch_that_outlasts_its_bound_fails_and_the_worker_is_stopped() -> None:
    # no batch types within a microsecond (the worker is not even started by then)
    worker = TypingProcess(batch_timeout_s=1e-6)
    try:
        with pytest.raises(TypingTimedOut, match=r"wellness\.weight"):
            asyncio.run(_type_in_worker(worker))
        assert not multiprocessing.active_children()
    finally:
        worker.close()


def test_the_worker_types_a_batch_within_its_bound() -> None:
    worker = TypingProcess()
    try:
        typed = asyncio.run(
            worker.type_chunks(
                WEIGHT, [(ALICE, orjson.dumps([_reading("r1", "2020-01-01T00:00:00Z")]))], Limits()
            )
        )
        assert typed.received == 1
    finally:
        worker.close()
    assert not multiprocessing.active_children()
