"""Staging normalised batches as Parquet chunks in the lake, in bounded memory.

Rows are buffered per table and flushed to one lake file per chunk once a buffer passes
`flush_rows`, so a run never holds a whole endpoint history in memory. The commit step reads
the run's chunks back with DuckDB's read_parquet.

The lake is a `LakeLocation`: a local folder, or an object store (then staged files are s3://
URLs, not paths). A bare `Path` is a local lake.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow as pa

from sync_pipeline.settings import LakeLocation
from sync_pipeline.warehouse import lake


class Stager:
    """Buffers typed rows per table and writes them as lake chunks. A table is written when its
    buffer passes `flush_rows`, when the caller says it is complete (`flush_table`), and,
    largest buffer first, whenever all buffers together pass `max_buffered_bytes`: memory stays
    bounded however many tables a run has open at once and however long their histories."""

    def __init__(
        self,
        location: LakeLocation | Path,
        run_id: str,
        *,
        flush_rows: int = 50_000,
        max_buffered_bytes: int = 64 * 2**20,
    ) -> None:
        if isinstance(location, Path):
            location = LakeLocation(local_dir=location)
        self._lake_dir = location.local_dir
        self._url = location.base
        # the object store the run's chunks go to (None: the local folder); the commit reads
        # them back through it
        self.store = lake.object_store(location.endpoint_url) if location.is_remote else None
        self._run_id = run_id
        self._flush_rows = flush_rows
        self._max_buffered_bytes = max_buffered_bytes
        self._buffers: dict[str, list[pa.Table]] = defaultdict(list)
        self._buffered_rows: dict[str, int] = defaultdict(int)
        self._buffered_bytes: dict[str, int] = defaultdict(int)
        self._chunks: dict[str, int] = defaultdict(int)
        self.files: dict[str, list[Path | str]] = defaultdict(list)

    def add(self, table: str, data: pa.Table) -> None:
        """Buffer typed rows of `table` (exactly its declared schema, normalize.to_arrow)."""
        if not data.num_rows:
            return
        self._buffers[table].append(data)
        self._buffered_rows[table] += data.num_rows
        self._buffered_bytes[table] += data.nbytes
        if self._buffered_rows[table] >= self._flush_rows:
            self._flush(table)
        while sum(self._buffered_bytes.values()) > self._max_buffered_bytes:
            self._flush(max(self._buffered_bytes, key=self._buffered_bytes.__getitem__))

    def flush_table(self, table: str) -> None:
        """Write what is buffered for `table` now (no more rows will come for it soon)."""
        self._flush(table)

    def finish(self) -> dict[str, list[Path | str]]:
        for table in list(self._buffers):
            self._flush(table)
        return dict(self.files)

    def discard(self) -> int:
        """Delete every chunk this stager wrote (the run will not commit them) and forget
        what is buffered."""
        self._buffers.clear()
        self._buffered_rows.clear()
        self._buffered_bytes.clear()
        files = [f for table_files in self.files.values() for f in table_files]
        self.files.clear()
        return lake.remove_files(files, self.store)

    def _flush(self, table: str) -> None:
        parts = self._buffers.pop(table, [])
        self._buffered_rows.pop(table, None)
        self._buffered_bytes.pop(table, None)
        if not parts:
            return
        chunk = self._chunks[table]
        self._chunks[table] += 1
        data = pa.concat_tables(parts)
        chunk_name = f"run={self._run_id}/part-{chunk:05d}"
        if self.store is not None:
            url = lake.write_object_chunk(self.store, self._url, table, data, chunk_name)
            self.files[table].append(url)
        else:
            self.files[table].append(lake.write_chunk(self._lake_dir, table, data, chunk_name))
