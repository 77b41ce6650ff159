"""Where the warehouse lives (SYNC_WAREHOUSE): the single DuckDB file, or a DuckLake.

- unset: the embedded default, one DuckDB file `<SYNC_DATA_DIR>/warehouse.duckdb`; one writing
  process at a time (the Dagster pool `warehouse` of one slot).
- `ducklake:postgres:<libpq keywords>` (e.g. `ducklake:postgres:dbname=lake host=db`): a DuckLake
  whose catalog is a PostgreSQL database. Many processes commit into it at once; the catalog's
  optimistic concurrency orders them (warehouse/conflicts.py retries a conflicting commit).
- `ducklake:<path>` (e.g. `ducklake:data/lake.ducklake`): a DuckLake with a local catalog file,
  itself a DuckDB file, so again one writing process at a time.

A DuckLake keeps its data as Parquet under its DATA_PATH, `<lake>/ducklake/` where the lake is
SYNC_LAKE_URL (s3://) or else `<SYNC_DATA_DIR>/lake`, beside the sync's staged chunks.

The catalog string can hold a password (`password=...`): it is never in a repr, a log line or
an exception (`shown` masks it); libpq's PGPASSWORD keeps it out of the setting altogether.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "ducklake:"
POSTGRES = "postgres:"
LAKE_SUBDIR = "ducklake"  # under the lake: DuckLake's own data files, apart from staged chunks

# libpq keyword values (`password=secret`, `password='with space'`) and URI user info
_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_URI_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


def mask_secrets(text: str) -> str:
    """`text` with every catalog password replaced (for messages that may quote a catalog)."""
    return _URI_PASSWORD.sub(r"\1***@", _PASSWORD.sub(r"\1***", text))


@dataclass(frozen=True)
class WarehouseLocation:
    """Where the warehouse is, and everything `db.connect` needs to open it: the single DuckDB
    file (`path`), or a DuckLake (`catalog` + `data_path`, and the S3 `endpoint_url` of a
    non-AWS data path); `key` (SYNC_WAREHOUSE_KEY) encrypts either. The one such type:
    `Settings.warehouse` and `WarehouseResource.location` both give it."""

    path: Path | None = None
    key: str | None = field(default=None, repr=False)
    # `postgres:<libpq keywords>` or a local catalog path; may carry a password: no repr
    catalog: str | None = field(default=None, repr=False)
    data_path: str | None = None
    endpoint_url: str | None = None

    @property
    def is_lake(self) -> bool:
        return self.catalog is not None

    @property
    def is_postgres(self) -> bool:
        return self.catalog is not None and self.catalog.startswith(POSTGRES)

    @property
    def many_writers(self) -> bool:
        """Whether several processes may commit at once (a PostgreSQL catalog); a DuckDB file,
        as the warehouse or as a local catalog, takes one writing process."""
        return self.is_postgres

    @property
    def shown(self) -> str:
        """For logs and messages: the file, or the catalog with its password masked."""
        if self.catalog is None:
            return str(self.path)
        return f"{PREFIX}{mask_secrets(self.catalog)} (data {self.data_path})"

    def exists(self) -> bool:
        """Whether there may be something to read (a PostgreSQL catalog is assumed to exist)."""
        if self.catalog is None:
            return self.path is not None and self.path.exists()
        return self.is_postgres or Path(self.catalog).exists()

    def __str__(self) -> str:
        return self.shown


def parse(raw: str) -> str | None:
    """SYNC_WAREHOUSE → its canonical form (`ducklake:<catalog>`, a local catalog's path made
    absolute), or None for the default file. Raises ValueError with a message that never
    quotes a password."""
    raw = raw.strip()
    if not raw:
        return None
    if not raw.startswith(PREFIX):
        raise ValueError(
            "SYNC_WAREHOUSE must be empty (the file <SYNC_DATA_DIR>/warehouse.duckdb), "
            "`ducklake:postgres:<connection>` or `ducklake:<catalog path>`, "
            f"got {mask_secrets(raw)[:40]!r}"
        )
    catalog = raw.removeprefix(PREFIX).strip()
    if catalog.startswith(POSTGRES):
        if not catalog.removeprefix(POSTGRES).strip():
            raise ValueError("SYNC_WAREHOUSE=ducklake:postgres: needs connection keywords")
    elif not catalog:
        raise ValueError("SYNC_WAREHOUSE=ducklake: needs a catalog (postgres:… or a file path)")
    else:
        catalog = str(Path(catalog).expanduser().resolve())
    return PREFIX + catalog


def locate(
    lake: str | None,
    *,
    file: Path,
    lake_base: str,
    key: str | None,
    endpoint_url: str | None = None,
) -> WarehouseLocation:
    """The warehouse of a parsed SYNC_WAREHOUSE (`lake`, see `parse`; None: the file `file`).
    A DuckLake keeps its Parquet under `<lake_base>/ducklake/`, where lake_base is the lake's
    root (SYNC_LAKE_URL, else <SYNC_DATA_DIR>/lake)."""
    if lake is None:
        return WarehouseLocation(path=file, key=key)
    catalog = parse(lake)
    assert catalog is not None
    return WarehouseLocation(
        key=key,
        catalog=catalog.removeprefix(PREFIX),
        data_path=f"{lake_base.rstrip('/')}/{LAKE_SUBDIR}/",
        endpoint_url=endpoint_url,
    )


# SYNC_WAREHOUSE_WRITERS: steps that may commit at once into a DuckLake on PostgreSQL
DEFAULT_LAKE_WRITERS = 4
MAX_LAKE_WRITERS = 64


def pool_limit(env: Mapping[str, str]) -> int:
    """Slots of the Dagster pool `warehouse` (every step that opens the warehouse is in it),
    written into the instance's dagster.yaml: 1 for a DuckDB file (the single file, or a
    DuckLake's local catalog file: one writing process), SYNC_WAREHOUSE_WRITERS (default 4) for
    a DuckLake on PostgreSQL, whose catalog takes concurrent commits. The pool is an instance
    setting, not the assets' definition, so the same code location serves both."""
    try:
        lake = parse(env.get("SYNC_WAREHOUSE", ""))
    except ValueError:
        return 1  # a bad setting stops the run itself, with its message
    if lake is None or not lake.removeprefix(PREFIX).startswith(POSTGRES):
        return 1
    raw = (env.get("SYNC_WAREHOUSE_WRITERS") or "").strip()
    if not raw:
        return DEFAULT_LAKE_WRITERS
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LAKE_WRITERS:
        raise ValueError(f"SYNC_WAREHOUSE_WRITERS must be 1..{MAX_LAKE_WRITERS}, got {raw!r}")
    return int(raw)
