"""Property: whatever JSON an upstream sends as a record of any endpoint, normalising it never
raises, every record is loaded or rejected (received = loaded + rejected), and what is loaded
can be staged (Arrow with the table's schema) and its raw read back as JSON.

Hypothesis draws records shaped like each endpoint's own (its fields, at their paths) holding
arbitrary JSON values: strings with lone surrogates and control characters, integers beyond 64
bits, NaN/inf, tiny floats, deep nesting, wrong types, non-objects.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync_pipeline.normalize import Limits, _normalize, normalize_records, to_arrow
from sync_pipeline.normalize.guard import MAX_DEPTH
from sync_pipeline.normalize.schemas import SPECS
from sync_pipeline.tables.ops import REJECTED_UPSTREAM_RECORDS
from sync_pipeline.upstream.endpoints import ENDPOINTS, Endpoint
from sync_pipeline.upstream.models import UndecodableRecord
from sync_pipeline.warehouse import db

from .fixtures import HUMAN_ID

OTHER_USER = "fedcba9876543210fedcba9876543210"
CLOCK = datetime(2026, 1, 1, tzinfo=UTC)

# every code point, lone surrogates (category Cs) and control characters included, and text
# that surely has one (drawn uniformly, they would be rare)
ANY_TEXT = st.one_of(
    st.text(st.characters(codec=None, exclude_categories=()), max_size=12),
    st.tuples(
        st.text(max_size=4), st.sampled_from(["\ud800", "\udfff", "\ud83d", "\x00", "\x1b"])
    ).map("".join),
)
INSTANT_TEXT = st.sampled_from(
    [
        "2020-03-09T16:52:00.000Z",
        "2020-03-09T16:52Z",
        "2020-03-09",
        "2199-01-01T00:00:00Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999Z",
        "2020-13-45T99:99:99Z",
        "2020-03-09T16:52:00+14:00",
        "01/27/1958",
        "",
        " ",
        "\ud800",
    ]
)
NUMBER = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([5e-324, -0.0, 1e308, 2**63, -(2**63) - 1]),
)
NUMERIC_TEXT = st.sampled_from(["136", " 5.1 THO/uL", "1e400", "-inf", "NaN", "0x1F", "３"])
SCALAR = st.one_of(st.none(), st.booleans(), NUMBER, ANY_TEXT, INSTANT_TEXT, NUMERIC_TEXT)
JSON = st.recursive(
    SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(ANY_TEXT, inner, max_size=3)
    ),
    max_leaves=12,
)


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"sourceData": value}
    return value


DEEP = st.integers(min_value=MAX_DEPTH - 5, max_value=MAX_DEPTH + 60).map(nested)
VALUE = st.one_of(JSON, JSON, JSON, DEEP)
CODE = st.fixed_dictionaries(
    {},
    optional={
        "code": VALUE,
        "codeSystem": st.one_of(st.just("2.16.840.1.113883.6.1"), VALUE),
        "codeSystemName": st.one_of(st.just(" loinc "), VALUE),
        "name": VALUE,
        "inferred": VALUE,
    },
)
# an element of components / results / codes, its fields holding anything
CHILD = st.fixed_dictionaries(
    {},
    optional={
        "name": VALUE,
        "value": st.one_of(NUMERIC_TEXT, VALUE),
        "refRange": st.one_of(st.sampled_from(["> 14; < 54", "4.2 - 5.9", "<=3"]), VALUE),
        "low": NUMBER,
        "high": NUMBER,
        "unit": VALUE,
        "normalizedName": VALUE,
        "codes": st.lists(st.one_of(CODE, VALUE), max_size=2),
        "code": VALUE,
        "codeSystem": VALUE,
        "inferred": VALUE,
    },
)


def _set(record: dict[Any, Any], path: tuple[Any, ...], value: Any) -> None:
    """Put `value` at a spec path, building objects (and lists for index/"*" steps) on the way."""
    target: Any = record
    for step, next_step in zip(path, (*path[1:], None), strict=True):
        if next_step is None:
            break
        container: Any = [] if isinstance(next_step, int) or next_step == "*" else {}
        if isinstance(target, dict) and isinstance(step, str) and step != "*":
            target = target.setdefault(step, container)
        elif isinstance(target, list):
            if not target:
                target.append(container)
            target = target[0]
        else:
            return
    last = path[-1]
    if isinstance(target, dict) and isinstance(last, str) and last != "*":
        target[last] = value
    elif isinstance(target, list):
        target.append(value)


@st.composite
def records(draw: st.DrawFn, endpoint: Endpoint) -> Any:
    """One record of `endpoint`: usually an object with its fields (any values), else anything."""
    choice = draw(st.integers(0, 19))
    if choice < 2:
        return draw(VALUE)  # not an object at all, or one of any shape
    if choice == 2:  # an element the page decoder could not decode (too deep)
        return draw(
            st.builds(
                UndecodableRecord,
                reason=st.just("record is nested deeper than the JSON decoder allows"),
                size=st.integers(0, 2**40),
                record_id=st.one_of(st.none(), ANY_TEXT),
                excerpt=ANY_TEXT,
            )
        )
    record: dict[Any, Any] = {}
    common = {
        "id": st.one_of(st.text(min_size=1, max_size=6), VALUE),
        "updatedAt": st.one_of(INSTANT_TEXT, VALUE),
        "createdAt": st.one_of(INSTANT_TEXT, VALUE),
        "source": VALUE,
    }
    for key, strategy in common.items():
        if draw(st.integers(0, 5)):
            record[key] = draw(strategy)
    for field in SPECS[endpoint.table].fields:
        if draw(st.booleans()):
            kind = {"instant": INSTANT_TEXT, "date": INSTANT_TEXT, "float": NUMBER}.get(
                field.kind, SCALAR
            )
            _set(record, field.path, draw(st.one_of(kind, VALUE)))
    for key in ("components", "results", "codes"):  # child lists
        if draw(st.integers(0, 3)) == 0:
            record[key] = draw(st.lists(st.one_of(CHILD, JSON), max_size=3))
    if draw(st.integers(0, 4)) == 0:
        record["sourceData"] = draw(VALUE)
    return record


@st.composite
def pages(draw: st.DrawFn, endpoint: Endpoint) -> tuple[list[str], list[Any]]:
    page = draw(st.lists(records(endpoint), min_size=1, max_size=6))
    if draw(st.booleans()):
        page = page + page[: draw(st.integers(0, len(page)))]  # resent copies: identical bodies
    owners = [draw(st.sampled_from([HUMAN_ID, OTHER_USER])) for _ in page]
    return owners, page


def check_batch(endpoint: Endpoint, owners: list[str], page: list[Any]) -> None:
    limits = Limits(max_record_bytes=4096, clock=CLOCK)
    batch = normalize_records(endpoint, owners, page, limits)
    # the rules alone handle it: the per-record fallback (the boundary's last line) not needed
    assert _normalize(SPECS[endpoint.table], owners, page, limits).received == len(page)
    main = batch.tables[endpoint.table]
    assert batch.received == len(page) == len(main) + len(batch.rejected)
    for table, frame in batch.tables.items():
        to_arrow(table, frame)  # stageable: exactly the table's Arrow schema
    for raw in [*main["raw"], *batch.rejected["raw"]]:
        orjson.loads(raw)  # strict UTF-8 JSON: no lone surrogate survives, even escaped
    assert batch.rejected["reason"].str.len().gt(0).all()
    if len(main):
        assert (main["updated_at"] <= pd.Timestamp(CLOCK) + pd.Timedelta(minutes=5)).all()
    assert batch.flagged is not None
    assert set(batch.flagged["record_id"]) <= set(main["record_id"])


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.path for e in ENDPOINTS])
def test_any_record_of_any_endpoint_is_loaded_or_rejected(endpoint: Endpoint) -> None:
    @settings(
        max_examples=12,
        deadline=None,
        derandomize=True,  # the same examples in every CI run; raise max_examples to explore
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(pages(endpoint))
    def check(drawn: tuple[list[str], list[Any]]) -> None:
        check_batch(endpoint, *drawn)

    check()


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.sampled_from(ENDPOINTS).flatmap(lambda e: st.tuples(st.just(e), pages(e))))
def test_any_page_of_any_endpoint_is_loaded_or_rejected(
    drawn: tuple[Endpoint, tuple[list[str], list[Any]]],
) -> None:
    endpoint, (owners, page) = drawn
    check_batch(endpoint, owners, page)


REJECTS = REJECTED_UPSTREAM_RECORDS  # the record sync's reject table


def test_identical_rejects_are_each_on_record_and_a_rerun_adds_none(tmp_path: Path) -> None:
    """received = loaded + rejected per record, also when rejects have identical bodies:
    the same bad record sent for two users, and twice in one page, is four rejects."""
    endpoint = next(e for e in ENDPOINTS if e.table == "wellness.weight")
    bad = {"id": "5e6a1f", "updatedAt": "not a time"}
    batch = normalize_records(endpoint, [HUMAN_ID, HUMAN_ID, OTHER_USER, OTHER_USER], [bad] * 4)
    assert len(batch.rejected) == 4
    with db.connect(tmp_path / "w.duckdb") as con:
        db.ensure_tables(con)
        assert db.store_rejects(con, REJECTS, batch.rejected, "run-1", CLOCK) == 4
        # a re-run: lands once
        assert db.store_rejects(con, REJECTS, batch.rejected, "run-2", CLOCK) == 0
        assert con.execute("SELECT count(*) FROM ops.rejected_records").fetchone() == (4,)
        con.execute("SELECT json_extract(raw, '$.id') FROM ops.rejected_records").fetchall()


def test_raw_of_every_loaded_or_rejected_record_is_json_duckdb_reads(tmp_path: Path) -> None:
    endpoint = next(e for e in ENDPOINTS if e.table == "medical.test_results")
    page = [
        {"id": "a", "updatedAt": "2020-01-01T00:00:00Z", "name": "cut emoji \ud83d"},
        {"id": "b\udc00", "updatedAt": "2020-01-01T00:00:00Z"},
        {"id": "c", "updatedAt": "bad", "note": "\ud800"},
        {"id": "d", "updatedAt": "2020-01-01T00:00:00Z", "sourceData": nested(MAX_DEPTH + 50)},
    ]
    batch = normalize_records(endpoint, HUMAN_ID, page)
    assert batch.received == len(batch.tables[endpoint.table]) + len(batch.rejected) == 4
    raws = [*batch.tables[endpoint.table]["raw"], *batch.rejected["raw"]]
    with duckdb.connect(str(tmp_path / "j.duckdb")) as con:
        for raw in raws:
            assert con.execute("SELECT json_valid(?)", [raw]).fetchone() == (True,)
    deep = batch.rejected[batch.rejected["record_id"] == "d"]
    assert deep["reason"].str.contains("nested").all()


def test_a_record_typing_fails_on_unforeseen_is_rejected_and_the_rest_load(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The last line of the record boundary: should typing a batch fail in a way no rule
    foresaw, each record is typed alone and only the one that still fails is rejected, with
    the error's type (not its message, which could quote PHI) as the reason."""
    from sync_pipeline.normalize import common

    real = common.CONVERTERS["text"]

    def fragile(values: Any) -> pd.Series:
        if "explode" in values:
            raise RuntimeError("secret patient detail")
        return real(values)

    monkeypatch.setitem(common.CONVERTERS, "text", fragile)
    endpoint = next(e for e in ENDPOINTS if e.table == "wellness.weight")
    good = {"id": "a", "updatedAt": "2020-01-01T00:00:00Z", "timestamp": "2020-01-01T00:00Z"}
    page = [good, {**good, "id": "b", "unit": "explode"}, {**good, "id": "c"}]
    batch = normalize_records(endpoint, HUMAN_ID, page)
    assert batch.tables[endpoint.table]["record_id"].tolist() == ["a", "c"]
    assert batch.rejected[["record_id", "reason"]].values.tolist() == [
        ["b", "record could not be typed (RuntimeError)"]
    ]
    assert "secret patient detail" not in caplog.text
