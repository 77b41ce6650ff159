"""Issue 8, encryption at rest: with SYNC_WAREHOUSE_KEY set the warehouse is written encrypted
(no PHI findable in the file's bytes, no opening it without the key), and where the running
DuckDB cannot write encrypted files, connect() refuses instead of writing plaintext.

Which of the two applies is decided by probing DuckDB independently of connect(): the project's
duckdb 1.4.4 with duckdb-ext-httpfs can (the encrypted round trip is tested); a DuckDB without
a loadable httpfs (2.0 here) cannot (the refusal is tested)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from sync_pipeline.settings import SettingsError, load_settings
from sync_pipeline.tables.ops import REJECTED_UPSTREAM_RECORDS
from sync_pipeline.tables.registry import schema_of
from sync_pipeline.warehouse import db

KEY = "correct-horse-battery-staple"
PHI = "Plasty-Hemoglobin-4711"  # a value that must not be findable in the file's bytes


def can_write_encrypted() -> bool:
    """Whether this DuckDB loads httpfs (OpenSSL), which encrypted writes need."""
    config: dict[str, str | bool | int | float | list[str]] = {}
    spec = importlib.util.find_spec("duckdb_ext")
    if spec is not None and spec.submodule_search_locations:
        location = Path(next(iter(spec.submodule_search_locations)))
        config["extension_directory"] = str(location / "extensions")
    with duckdb.connect(":memory:", config=config) as con:
        try:
            con.execute("LOAD httpfs")
        except duckdb.Error:
            return False
    return True


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, None), ({"SYNC_WAREHOUSE_KEY": ""}, None), ({"SYNC_WAREHOUSE_KEY": KEY}, KEY)],
    ids=["unset", "empty", "set"],
)
def test_the_key_comes_from_sync_warehouse_key(env: dict[str, str], expected: str | None) -> None:
    assert load_settings(env).warehouse_key == expected


def test_a_non_ascii_key_is_refused() -> None:
    with pytest.raises(SettingsError, match="ASCII"):
        load_settings({"SYNC_WAREHOUSE_KEY": "schlüssel"})


def test_a_warehouse_key_encrypts_the_file_or_fails_without_writing(tmp_path: Path) -> None:
    path = tmp_path / "data" / "warehouse.duckdb"
    if not can_write_encrypted():
        with (
            pytest.raises(db.WarehouseEncryptionUnavailable) as caught,
            db.connect(path, key=KEY),
        ):
            pass
        message = str(caught.value)
        # names the setting and the fix, never the key
        assert "SYNC_WAREHOUSE_KEY" in message and "duckdb-ext-httpfs" in message
        assert KEY not in message
        assert not path.exists()  # nothing written, least of all plaintext
        return

    with db.connect(path, key=KEY) as con:
        db.append(con, REJECTED_UPSTREAM_RECORDS, _reject_row(PHI))
        con.execute("CHECKPOINT")
    raw = b"".join(p.read_bytes() for p in path.parent.iterdir() if p.is_file())
    assert PHI.encode() not in raw and b"rejected_upstream_records" not in raw
    with db.connect(path, key=KEY, read_only=True) as con:
        assert con.execute("SELECT raw FROM ops.rejected_records").fetchall() == [(PHI,)]
    with pytest.raises(duckdb.Error), duckdb.connect(str(path), read_only=True) as plain:
        plain.execute("SELECT raw FROM ops.rejected_records").fetchall()
    with pytest.raises(duckdb.Error) as wrong, db.connect(path, key="wrong-key", read_only=True):
        pass
    assert "wrong-key" not in str(wrong.value)


def _reject_row(raw: str) -> pa.Table:
    schema = schema_of(REJECTED_UPSTREAM_RECORDS)
    values = {f.name: pa.nulls(1, f.type) for f in schema}
    values["raw"] = pa.array([raw], schema.field("raw").type)
    return pa.table(values, schema=schema)
