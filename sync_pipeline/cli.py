"""sync-pipeline: demo | simulator | receiver | sync."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from sync_pipeline.private import owner_only_files
from sync_pipeline.settings import SettingsError, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sync-pipeline", description=__doc__)
    parser.add_argument("--log-level", default=os.environ.get("SYNC_LOG_LEVEL", "WARNING"))
    parser.add_argument("--data-dir", default=None, help="overrides SYNC_DATA_DIR")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run the whole product on the bundled simulator")
    demo.add_argument("--users", type=int, default=8)
    demo.add_argument("--seed", type=int, default=7)

    sim = commands.add_parser("simulator", help="serve the bundled upstream (contract part A)")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8700)
    sim.add_argument("--users", type=int, default=10)
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--receiver-url", default=None, help="where time-moves deliver notifications")

    receiver = commands.add_parser("receiver", help="serve intake (contract part B)")
    receiver.add_argument("--host", default=None)
    receiver.add_argument("--port", type=int, default=None)
    receiver.add_argument("--workers", type=int, default=1)

    sync = commands.add_parser(
        "sync", help="one sync against the configured upstream, as a Dagster run"
    )
    sync.add_argument("--full", action="store_true", help="re-pull every record")
    sync.add_argument(
        "--mode",
        choices=["incremental", "catchup"],
        default="catchup",
        help="incremental: only notified changes; catchup: every endpoint from its cursor",
    )
    sync.add_argument("--user", action="append", default=[], help="limit to a user (repeatable)")

    bench = commands.add_parser("bench", help="measure sync and intake throughput (see README)")
    from sync_pipeline.bench import add_bench_arguments

    add_bench_arguments(bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Dagster flags its own beta parameters at import; that is for us, not for the operator
    warnings.filterwarnings("ignore", module="dagster")
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    owner_only_files()  # warehouse, lake and landing files hold PHI
    if args.data_dir:
        os.environ["SYNC_DATA_DIR"] = args.data_dir
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "demo":
        from sync_pipeline.demo import run_demo

        return run_demo(settings, users=args.users, seed=args.seed)
    if args.command == "simulator":
        from sync_pipeline.simulator.server import run_simulator

        run_simulator(
            args.host,
            args.port,
            users=args.users,
            seed=args.seed,
            receiver_url=args.receiver_url,
            client_id=settings.client_id,
            client_secret=settings.client_secret,
        )
        return 0
    if args.command == "receiver":
        from sync_pipeline.intake.server import run_receiver

        run_receiver(
            settings,
            args.host or settings.receiver_host,
            args.port or settings.receiver_port,
            workers=args.workers,
        )
        return 0
    if args.command == "sync":
        from sync_pipeline.demo import run_sync_command

        return run_sync_command(settings, mode="full" if args.full else args.mode, users=args.user)
    if args.command == "bench":
        from sync_pipeline.bench import run_bench

        return run_bench(settings, args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    raise SystemExit(main())
