"""`sync-pipeline bench`: throughput of the sync and the receiver, measured, not asserted."""

from __future__ import annotations

import argparse

from sync_pipeline.settings import Settings


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a laptop-minute preset")


def run_bench(settings: Settings, args: argparse.Namespace) -> int:
    print("sync-pipeline bench is not built yet (issue 7).")
    return 1
