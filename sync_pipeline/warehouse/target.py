"""Where the warehouse lives (SYNC_WAREHOUSE): the single DuckDB file, or a DuckLake.

- unset: the embedded default, one DuckDB file `<SYNC_DATA_DIR>/warehouse.duckdb`; one writing
  process at a time (the Dagster pool `warehouse` of one slot).
- `ducklake:postgres:<libpq keywords>` (e.g. `ducklake:postgres:dbname=lake host=db`): a DuckLake
  whose catalog is a PostgreSQL database. Many processes commit into it at once; the catalog's
  optimistic concurrency orders them (warehouse/conflicts.py retries a conflicting commit).
- `ducklake:<path>` (e.g. `ducklake:data/lake.ducklake`): a DuckLake with a local catalog file,
  itself a DuckDB file, so again one writing process at a time.

A DuckLake keeps its data as Parquet under its DATA_PATH: `<SYNC_LAKE_URL>/ducklake` (local
folder or s3://), beside the sync's staged chunks, which stay where they were.

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
class WarehouseTarget:
    """The single DuckDB file (`file`), or a DuckLake (`catalog` + `data_path`)."""

    file: Path | None = None
    # `postgres:<libpq keywords>` or a local catalog path; may carry a password: no repr
    catalog: str | None = field(default=None, repr=False)
    data_path: str | None = None

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
            return str(self.file)
        return f"{PREFIX}{mask_secrets(self.catalog)} (data {self.data_path})"

    def exists(self) -> bool:
        """Whether there may be something to read (a PostgreSQL catalog is assumed to exist)."""
        if self.catalog is None:
            return self.file is not None and self.file.exists()
        return self.is_postgres or Path(self.catalog).exists()

    def __str__(self) -> str:
        return self.shown


def parse(raw: str, *, data_dir: Path, lake_url: str | None) -> WarehouseTarget | None:
    """SYNC_WAREHOUSE → a DuckLake target, or None for the default file. Raises ValueError with
    a message that never quotes a password."""
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
    base = (lake_url or "").rstrip("/") or str(data_dir / "lake")
    return WarehouseTarget(catalog=catalog, data_path=f"{base}/{LAKE_SUBDIR}/")


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
        target = parse(env.get("SYNC_WAREHOUSE", ""), data_dir=Path("."), lake_url=None)
    except ValueError:
        return 1  # a bad setting stops the run itself, with its message
    if target is None or not target.many_writers:
        return 1
    raw = (env.get("SYNC_WAREHOUSE_WRITERS") or "").strip()
    if not raw:
        return DEFAULT_LAKE_WRITERS
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LAKE_WRITERS:
        raise ValueError(f"SYNC_WAREHOUSE_WRITERS must be 1..{MAX_LAKE_WRITERS}, got {raw!r}")
    return int(raw)
