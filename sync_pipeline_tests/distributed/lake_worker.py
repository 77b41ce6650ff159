"""One sync worker process for the DuckLake test: `python -m
sync_pipeline_tests.distributed.lake_worker <mode> <shard index> <shard count> <run id>` runs what
the `record_sync` step runs (run_sync for one shard of the users) with the settings of its
environment, and prints its commit summary as one JSON line."""

from __future__ import annotations

import json
import logging
import sys

from sync_pipeline.settings import load_settings
from sync_pipeline.sync.plan import Shard
from sync_pipeline.sync.run import run_sync


def main(argv: list[str]) -> int:
    mode, index, count, run_id = argv
    # WARNING and up on stderr: the conflict retries are logged there (the test reads them)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    report = run_sync(
        load_settings(),
        run_id=run_id,
        mode=mode,  # type: ignore[arg-type]
        shard=Shard(int(index), int(count)),
    )
    summary = report.summary
    print(
        json.dumps(
            {
                "run_id": summary.run_id,
                "tables": {t: load.received for t, load in summary.tables.items()},
                "failed": summary.failed_items,
                "cursors": summary.cursors_advanced,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
