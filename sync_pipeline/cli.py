"""sync-pipeline: demo | simulator | receiver | sync | bench."""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from types import FrameType

from sync_pipeline.private import owner_only_files
from sync_pipeline.settings import SettingsError, load_settings


def bounded(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high], or a usage error (exit 2) that says so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


PORT = bounded(1, 65535)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sync-pipeline", description=__doc__)
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        metavar="LEVEL",
        default=os.environ.get("SYNC_LOG_LEVEL", "WARNING").upper(),
        help="log level (default: SYNC_LOG_LEVEL or WARNING)",
    )
    parser.add_argument("--data-dir", default=None, help="overrides SYNC_DATA_DIR")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="run the whole product on the bundled simulator",
        description="Start the simulator and the receiver on free loopback ports, deliver "
        "sessions and notifications, run intake and syncs as Dagster runs, print what landed. "
        "Replaces only data an earlier demo created in the data directory.",
    )
    demo.add_argument("--users", type=bounded(1, 1000), default=8, help="simulated users (8)")
    demo.add_argument("--seed", type=bounded(0, 2**31), default=7, help="world seed (7)")

    sim = commands.add_parser("simulator", help="serve the bundled upstream (contract part A)")
    sim.add_argument("--host", default="127.0.0.1", help="listen address (127.0.0.1)")
    sim.add_argument("--port", type=PORT, default=8700, help="listen port (8700)")
    sim.add_argument("--users", type=bounded(1, 10_000), default=10, help="users (10)")
    sim.add_argument("--seed", type=bounded(0, 2**31), default=1, help="world seed (1)")
    sim.add_argument("--receiver-url", default=None, help="where time-moves deliver notifications")

    receiver = commands.add_parser("receiver", help="serve intake (contract part B)")
    receiver.add_argument("--host", default=None, help="listen address (SYNC_RECEIVER_HOST)")
    receiver.add_argument("--port", type=PORT, default=None, help="port (SYNC_RECEIVER_PORT)")
    receiver.add_argument("--workers", type=bounded(1, 64), default=1, help="processes (1)")

    sync = commands.add_parser(
        "sync",
        help="one sync against the configured upstream, as Dagster runs",
        description="Intake of today's landing log, then one sync, as Dagster runs in the local "
        "instance. Exits 0 when everything synced (rejected records and users who must "
        "reconnect are reported, not failures), 1 when items failed or the upstream is "
        "unreachable, 128+N when stopped by signal N.",
    )
    sync.add_argument("--full", action="store_true", help="re-pull every record")
    sync.add_argument(
        "--mode",
        choices=["incremental", "catchup"],
        default="catchup",
        help="incremental: only notified changes; catchup (the default): every endpoint of "
        "every connected user from its cursor",
    )
    sync.add_argument("--user", action="append", default=[], help="limit to a user (repeatable)")

    # The benchmark ships beside the product, not in it: its arguments belong to the benchmarks
    # package, which is imported only when this command runs (main passes it the rest).
    commands.add_parser(
        "bench",
        add_help=False,
        help="measure sync and intake throughput against the limit (see README; bench --help)",
    )
    return parser


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        from benchmarks import bench_parser

        return bench_parser().parse_args(rest, namespace=args)
    if rest:
        parser.error("unrecognized arguments: " + " ".join(rest))
    return args


def _stop_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    # outside a run, SIGTERM stops the command like Ctrl-C does: context managers close
    # (servers stop, files close) instead of the process vanishing mid-step
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    # Dagster flags its own beta parameters at import; that is for us, not for the operator
    warnings.filterwarnings("ignore", module="dagster")
    from sync_pipeline.console import console, setup_logging

    setup_logging(args.log_level)
    owner_only_files()  # warehouse, lake and landing files hold PHI
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        return _run(args)
    except KeyboardInterrupt as stop:
        name = str(stop) or "SIGINT"
        console.print(f"[yellow]stopped by {name}[/yellow]")
        return 128 + signal.Signals[name].value if name in signal.Signals.__members__ else 130


def _run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.data_dir:  # the flag wins over SYNC_DATA_DIR, without rewriting the environment
        settings = replace(settings, data_dir=Path(args.data_dir).resolve())
    if args.command == "demo":
        from sync_pipeline.demo import run_demo

        return run_demo(settings, users=args.users, seed=args.seed)
    if args.command == "simulator":
        from starfleet.server import run_simulator

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
        from sync_pipeline.commands import run_sync_command

        return run_sync_command(settings, mode="full" if args.full else args.mode, users=args.user)
    if args.command == "bench":
        from benchmarks import run_bench

        return run_bench(settings, args)
    raise AssertionError(args.command)


def entry() -> None:
    """The `sync-pipeline` console script (and `python -m sync_pipeline.cli`): main, then the
    process ends at once with its exit code, without the interpreter's teardown.

    That teardown (freeing every module and object of an interpreter that imported Dagster and
    ran jobs in it; C extensions' finalizers) took 0.6-1 s after a small sync had printed its
    outcome, for nothing the command needs: by the time main returns, its context managers
    have closed every DuckDB connection and landing file and disposed the Dagster instance
    (commands.open_instance), and the run's events are in the instance (written as they
    happen). What atexit holds (logging's flush, multiprocessing's children) still runs, and
    stdout and stderr are flushed. A thread still working at that point (none is, in any
    command today) keeps the ordinary exit, which waits for it.

    main itself returns (tests call it in process)."""
    try:
        code = main()
    except SystemExit as stop:  # argparse's usage errors and --help
        code = _status(stop.code)
    except KeyboardInterrupt:  # before main's own handler (at start-up)
        code = 130
    except BaseException:
        sys.excepthook(*sys.exc_info())  # the traceback Python would print
        code = 1
    if any(
        t.is_alive() and not t.daemon
        for t in threading.enumerate()
        if t is not threading.main_thread()
    ):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):  # a closed pipe: nothing more can be said there
            stream.flush()
    os._exit(code)


def _status(code: object) -> int:
    """A SystemExit's code as a process exit status (None: 0; text: printed, 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    entry()
