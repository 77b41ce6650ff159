"""The Parquet lake: one file per run (or partition) chunk under lake/<schema>/<table>/.

Readers never see a partial file: each file is written under a temporary name in the same
folder, fsync'd, then renamed into place (rename is atomic on a POSIX filesystem). Names are
deterministic per (run, chunk), so re-writing a chunk replaces it instead of adding a copy.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

TMP_MARKER = ".tmp-"


def table_dir(lake_dir: Path, table: str) -> Path:
    schema, name = table.split(".", 1)
    return lake_dir / schema / name


def write_chunk(lake_dir: Path, table: str, data: pa.Table, chunk_name: str) -> Path:
    """Write `data` atomically as <lake>/<schema>/<table>/<chunk_name>.parquet; return its path."""
    final = table_dir(lake_dir, table) / f"{chunk_name}.parquet"
    folder = final.parent
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = folder / f"{final.name}{TMP_MARKER}{uuid.uuid4().hex}"
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as sink:
            pq.write_table(data, sink, compression="zstd")
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(folder)
    return final


def remove_stray_temp_files(lake_dir: Path) -> int:
    """Delete temp files left by a writer that was killed mid-write (never readable data)."""
    removed = 0
    if not lake_dir.exists():
        return 0
    for path in lake_dir.rglob(f"*{TMP_MARKER}*"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
