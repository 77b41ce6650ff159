"""Table schemas, keys and parent links, and the Arrow conversion the loader relies on."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from sync_pipeline.normalize import normalize_records, to_arrow
from sync_pipeline.normalize.schemas import TABLE_SCHEMAS
from sync_pipeline.tables import registry
from sync_pipeline.tables.ops import REJECTED_RECORDS
from sync_pipeline.tables.registry import PARENT_OF, key_of
from sync_pipeline.upstream.endpoints import BY_PATH, ENDPOINTS

from .fixtures import HUMAN_ID, fixture_endpoint, load_records, record_fixture_files

RECORD_TABLES = [e.table for e in ENDPOINTS]
# contract part C's child tables
CHILD_TABLES = (
    "medical.test_result_components",
    "medical.vital_results",
    "medical.record_codes",
)
TABLE_KEYS = {table: key_of(table) for table in (*RECORD_TABLES, *CHILD_TABLES)}
COMMON = ["human_id", "record_id", "source_id", "created_at", "updated_at", "deleted_at", "raw"]


def test_schemas_cover_every_table() -> None:
    assert set(TABLE_SCHEMAS) == {*RECORD_TABLES, *CHILD_TABLES, REJECTED_RECORDS}
    assert set(registry.CHILD_TABLES) == set(CHILD_TABLES)
    assert list(registry.RECORD_TABLES) == RECORD_TABLES


@pytest.mark.parametrize("table", RECORD_TABLES)
def test_record_tables_start_with_the_common_columns(table: str) -> None:
    schema = TABLE_SCHEMAS[table]
    assert schema.names[: len(COMMON)] == COMMON
    assert schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert len(set(schema.names)) == len(schema.names)
    assert TABLE_KEYS[table] == ("human_id", "record_id")
    for name in schema.names:
        if pa.types.is_timestamp(schema.field(name).type):
            assert name.endswith("_at"), name


@pytest.mark.parametrize(
    ("table", "required"),
    [
        ("medical.test_results", {"name", "result_at", "status"}),
        (
            "medical.test_result_components",
            {
                "position",
                "name",
                "value",
                "value_numeric",
                "unit",
                "ref_low",
                "ref_high",
                "ref_range",
            },
        ),
        ("medical.vital_results", {"position", "name", "value", "unit", "loinc_code"}),
        (
            "medical.record_codes",
            {"table_name", "position", "code", "code_system", "code_system_name", "name"},
        ),
        ("wellness.weight", {"measured_at", "value", "unit"}),
        ("wellness.heart_rate", {"measured_at", "value", "unit"}),
        ("wellness.blood_pressure", {"measured_at", "systolic", "diastolic", "heart_rate", "unit"}),
        (
            "wellness.activities",
            {"start_at", "end_at", "type", "duration_s", "distance_m", "steps", "calories"},
        ),
        (REJECTED_RECORDS, {"table_name", "human_id", "record_id", "reason", "raw"}),
    ],
)
def test_contract_columns(table: str, required: set[str]) -> None:
    assert required <= set(TABLE_SCHEMAS[table].names)


def test_child_keys_and_parents() -> None:
    assert PARENT_OF == {
        "medical.test_result_components": "medical.test_results",
        "medical.vital_results": "medical.vitals",
    }
    for child in CHILD_TABLES:
        assert set(TABLE_KEYS[child]) <= set(TABLE_SCHEMAS[child].names)
        assert TABLE_SCHEMAS[child].field("position").type == pa.int64()
    assert TABLE_KEYS["medical.record_codes"] == ("table_name", "human_id", "record_id", "position")


def test_to_arrow_round_trips_every_table() -> None:
    seen: set[str] = set()
    for path in record_fixture_files():
        endpoint = fixture_endpoint(path)
        batch = normalize_records(
            endpoint, HUMAN_ID, load_records(f"{path.parent.name}/{path.name}")
        )
        frames = {**batch.tables, REJECTED_RECORDS: batch.rejected}
        for table, frame in frames.items():
            arrow = to_arrow(table, frame)
            assert arrow.schema == TABLE_SCHEMAS[table]
            assert arrow.schema.metadata is None
            assert arrow.num_rows == len(frame)
            back = arrow.to_pandas(types_mapper=pd.ArrowDtype)
            assert list(back.columns) == list(frame.columns)
            seen.add(table)
    # tables without a fixture still convert when empty
    for table in set(TABLE_SCHEMAS) - seen:
        assert to_arrow(table, TABLE_SCHEMAS[table].empty_table().to_pandas()).num_rows == 0


def test_to_arrow_keeps_values() -> None:
    batch = normalize_records(
        BY_PATH["weight/readings"], HUMAN_ID, load_records("wellness/weight.json")
    )
    arrow = to_arrow("wellness.weight", batch.tables["wellness.weight"])
    row = arrow.to_pylist()[0]
    assert row["value"] == 72.1
    assert row["measured_at"] == pd.Timestamp("2014-10-07T23:59:59Z").to_pydatetime()
    assert row["deleted_at"] is None


def test_to_arrow_refuses_other_columns() -> None:
    frame = pd.DataFrame({"human_id": ["h"]})
    with pytest.raises(ValueError, match="columns"):
        to_arrow("wellness.weight", frame)
