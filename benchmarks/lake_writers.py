"""Commit throughput of concurrent writers: the single DuckDB file (one writer) beside a DuckLake
with its catalog in PostgreSQL (1, 2, 4 writer processes at once).

`python -m benchmarks.lake_writers --catalog 'postgres:dbname=… host=…' [--commits 20]
[--rows 2000]`. Each writer process commits what one sync commit writes, `--commits` times: a
batch of new medical.test_results rows for its own users upserted last-updatedAt-wins, the
previous batch's rows updated, and its cursors (ops.sync_state), one transaction each, through
db.connect and warehouse/conflicts.retrying like the sync. Measured, not asserted: rows
committed per second of wall time, and the conflict retries the catalog caused. The catalog
database must be empty (a fresh one per row of the table: every row starts from an empty lake).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from sync_pipeline.warehouse import db
from sync_pipeline.warehouse.conflicts import retrying
from sync_pipeline.warehouse.location import WarehouseLocation

TABLE = "medical.test_results"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _batch(writer: int, commit: int, rows: int) -> pa.Table:
    """`rows` records of this writer: half new this commit, half updates of the previous one."""
    half = rows // 2
    ids = [f"{commit * half + i:024x}" for i in range(half)]
    ids += [f"{max(commit - 1, 0) * half + i:024x}" for i in range(rows - half)]
    stamp = T0 + timedelta(minutes=commit)
    return pa.table(
        {
            "human_id": [f"writer{writer:02d}user{i % 10}" for i in range(rows)],
            "record_id": ids,
            "source_id": ["bench"] * rows,
            "created_at": [T0] * rows,
            "updated_at": [stamp] * rows,
            "name": [f"value {commit}"] * rows,
            "raw": ['{"bench": true}'] * rows,
        }
    )


class _Retries(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def _writer(
    target: WarehouseLocation, writer: int, commits: int, rows: int, start: float, out: mp.Queue
) -> None:
    retries = _Retries()
    logging.getLogger("sync_pipeline.warehouse.conflicts").addHandler(retries)
    while time.time() < start:  # every writer begins together
        time.sleep(0.005)
    for commit in range(commits):
        batch = _batch(writer, commit, rows)
        cursor = pa.table(
            {
                "human_id": [f"writer{writer:02d}user{i}" for i in range(10)],
                "endpoint": ["medical/test_results"] * 10,
                "cursor_updated_since": [T0 + timedelta(minutes=commit)] * 10,
                "last_synced_at": [datetime.now(UTC)] * 10,
                "last_run_id": [f"bench-{writer}-{commit}"] * 10,
            }
        )

        def unit(batch: pa.Table = batch, cursor: pa.Table = cursor) -> None:
            with db.connect(target) as con, db.transaction(con):
                db.upsert_latest(con, TABLE, batch, ("human_id", "record_id"))
                db.upsert_by_key(con, "ops.sync_state", cursor, ("human_id", "endpoint"))

        retrying(unit, what=f"bench writer {writer}")
    out.put((writer, time.time(), retries.count))


def measure(target: WarehouseLocation, writers: int, commits: int, rows: int) -> dict[str, float]:
    with db.connect(target):
        pass  # tables created once, before the clock starts
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    start = time.time() + 3.0  # the spawned interpreters are up by then
    procs = [
        ctx.Process(target=_writer, args=(target, w, commits, rows, start, out))
        for w in range(writers)
    ]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=3600) for _ in procs]
    for proc in procs:
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"a writer failed (exit {proc.exitcode})")
    wall = max(end for _, end, _ in results) - start
    total = writers * commits * rows
    return {
        "writers": writers,
        "commits": writers * commits,
        "rows": total,
        "seconds": round(wall, 2),
        "rows_per_s": round(total / wall),
        "commits_per_s": round(writers * commits / wall, 2),
        "conflict_retries": sum(n for _, _, n in results),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--catalog",
        help="a PostgreSQL DuckLake catalog (libpq keywords with "
        "{n}, replaced by the writer count, e.g. dbname=bench_{n})",
    )
    parser.add_argument("--commits", type=int, default=20)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--writers", default="1,2,4")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            {
                "warehouse": "single file",
                **measure(
                    WarehouseLocation(path=Path(tmp) / "warehouse.duckdb"),
                    1,
                    args.commits,
                    args.rows,
                ),
            }
        ]
        if args.catalog:
            for n in (int(w) for w in args.writers.split(",")):
                target = WarehouseLocation(
                    catalog="postgres:" + args.catalog.format(n=n),
                    data_path=f"{tmp}/lake{n}/ducklake/",
                )
                rows.append(
                    {
                        "warehouse": "DuckLake (PostgreSQL)",
                        **measure(target, n, args.commits, args.rows),
                    }
                )
    print("| warehouse | writers | commits | rows | s | rows/s | commits/s | conflict retries |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['warehouse']} | {r['writers']} | {r['commits']} | {r['rows']:,} | "
            f"{r['seconds']} | {r['rows_per_s']:,} | {r['commits_per_s']} | "
            f"{r['conflict_retries']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
