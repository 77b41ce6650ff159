"""The Parquet lake: one file per run (or partition) chunk under <lake>/<schema>/<table>/.

The lake lives on the local filesystem (default: <data_dir>/lake) or on S3-compatible object
storage (settings.LakeLocation: SYNC_LAKE_URL s3://bucket/prefix, SYNC_LAKE_ENDPOINT_URL for a
non-AWS endpoint; credentials from the usual AWS_* environment, read by botocore). Either way
readers never see a partial file, by different means:

- Local: each file is written under a temporary name in the same folder, fsync'd, then renamed
  into place (rename is atomic on a POSIX filesystem). Names are deterministic per (run, chunk),
  so re-writing a chunk replaces it instead of adding a copy.
- Object store: there is no rename (a "rename" is copy + delete, and a reader can list the key
  in between). Instead, (1) each chunk is serialised in memory and sent in one PUT (or one
  multipart upload, which S3 makes visible only on completion) - never through a streaming file
  handle, whose close() on an exception would publish a truncated object; (2) every key is
  unique (run id + chunk number + uuid), so no write ever overwrites an object a reader might
  be reading, and a retried chunk adds a new key rather than racing an old one; (3) the commit
  step records the keys it loaded in ops.load_log.lake_files in the same DuckDB transaction as
  the rows - that is the manifest. Objects of a run that died before committing exist but are
  in no manifest: readers list the lake through ops.load_log, never by listing the bucket.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

TMP_MARKER = ".tmp-"
RUN_DIR_PREFIX = "run="  # sync staging writes <schema>/<table>/run=<run id>/part-*.parquet
REMOTE_SCHEMES = ("s3://",)


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


def remove_files(files: Iterable[str | Path], store: Any = None) -> int:
    """Delete staged files (local paths or object-store URLs, the latter through `store`, the
    lake's `object_store`) of a run that did not commit: they hold PHI and no manifest names
    them. Their emptied run folders go too."""
    removed = 0
    remote = [str(f) for f in files if is_remote(f)]
    local = [Path(f) for f in files if not is_remote(f)]
    for path in local:
        if path.exists():
            path.unlink()
            removed += 1
    for folder in {p.parent for p in local}:
        if folder.name.startswith(RUN_DIR_PREFIX) and folder.exists() and not any(folder.iterdir()):
            folder.rmdir()
    if remote:
        if store is None:
            raise ValueError("object-store files to remove, but no object store given")
        store.rm(remote)
        removed += len(remote)
    return removed


def remove_uncommitted(
    lake_dir: Path, committed_runs: set[str], *, older_than_s: float, now: float | None = None
) -> int:
    """Delete local staged files of runs that never committed (no ops.load_log row names their
    run) once older than `older_than_s`: left by a run killed before it could clean up. A run
    commits all its staged files in one transaction or none, so its id is what tells; paths are
    not compared, so a data directory that moved keeps its committed files. The age bound is
    what makes this safe while other runs (shards, workers) stage into the same lake: a file in
    flight is at most one run old, and a run's files are committed or discarded when it ends.
    An object-store lake is not swept here (a bucket lifecycle rule on `run=` keys does that
    job); failed runs there still delete their own files."""
    if not lake_dir.exists():
        return 0
    cutoff = (time.time() if now is None else now) - older_than_s
    removed = 0
    for folder in lake_dir.glob(f"*/*/{RUN_DIR_PREFIX}*"):
        if folder.name.removeprefix(RUN_DIR_PREFIX) in committed_runs or not folder.is_dir():
            continue
        for path in folder.glob("*.parquet"):
            try:
                if path.stat().st_mtime >= cutoff:
                    continue
                path.unlink()
            except FileNotFoundError:
                continue  # its own run removed it meanwhile
            removed += 1
        if not any(folder.iterdir()):
            folder.rmdir()
    return removed


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- object storage ------------------------------------------------------------------------------


# the S3 secret a DuckLake connection creates for httpfs (warehouse/db.py)
S3_SECRET = "warehouse_s3"


def is_remote(location: str | Path) -> bool:
    return str(location).startswith(REMOTE_SCHEMES)


def object_store(endpoint_url: str | None = None) -> Any:
    """The s3fs filesystem for the lake (fsspec caches instances, so writers and DuckDB share
    one per configuration); `endpoint_url` names a non-AWS store. Imported lazily: the local
    lake needs no S3 client."""
    import s3fs

    client_kwargs = {"endpoint_url": endpoint_url} if endpoint_url else {}
    return s3fs.S3FileSystem(client_kwargs=client_kwargs)


def write_object_chunk(fs: Any, base_url: str, table: str, data: pa.Table, chunk_name: str) -> str:
    """Write `data` as one new object <base>/<schema>/<table>/<chunk_name>-<uuid>.parquet and
    return its URL. The object appears whole or not at all (see the module docstring)."""
    schema, name = table.split(".", 1)
    url = f"{base_url}/{schema}/{name}/{chunk_name}-{uuid.uuid4().hex}.parquet"
    sink = pa.BufferOutputStream()
    pq.write_table(data, sink, compression="zstd")
    fs.pipe_file(url, sink.getvalue().to_pybytes())
    return url


def register_filesystems(
    con: duckdb.DuckDBPyConnection, files: Iterable[str | Path], store: Any = None
) -> None:
    """Let DuckDB read the lake's object-store files through fsspec. A no-op for local files,
    once registered (the sync registers its stager's store before it commits), and on a
    connection that reads S3 itself: a DuckLake warehouse on the object store has httpfs
    loaded with the lake's credentials (`S3_SECRET`, warehouse/db.py), which then reads the
    staged chunks as it reads its own data."""
    if not any(is_remote(f) for f in files) or "s3" in con.list_filesystems():
        return
    if con.execute(
        "SELECT count(*) FROM duckdb_secrets() WHERE name = ?", [S3_SECRET]
    ).fetchall() != [(0,)]:
        return
    if store is None:
        raise ValueError("object-store files to read, but no object store registered")
    con.register_filesystem(store)
