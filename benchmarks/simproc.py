"""The simulator in its own process, so serving it does not share the benchmarked process's GIL.

`python -m benchmarks.simproc ...` builds the world, optionally dumps every record as
JSONL (one file per endpoint: the input of the `read_json` run), serves on a free loopback port,
prints one JSON line (base URL, record counts) and serves until its stdin closes.
`simulator_process` is the parent side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx

from starfleet.config import SimFaults
from starfleet.server import running_simulator
from starfleet.world import SimWorld
from sync_pipeline.settings import load_settings

_STARTUP_TIMEOUT_S = 300.0  # building a million-record world takes a while


@dataclass(frozen=True)
class SimSize:
    users: int
    min_records: int
    max_records: int
    seed: int = 7


def jsonl_name(path: str) -> str:
    return path.replace("/", "__") + ".jsonl"


def dump_jsonl(world: SimWorld, folder: Path) -> dict[str, int]:
    """Every record as the upstream serves it, one file per endpoint; returns counts per path."""
    folder.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    paths = sorted({p for u in world.users for p in u.stores})
    with world.lock:
        for path in paths:
            n = 0
            with (folder / jsonl_name(path)).open("wb") as out:
                for user in world.users:
                    store = user.store(path)
                    for record in store.ordered():
                        out.write(store.json_bytes(record) + b"\n")
                        n += 1
            counts[path] = n
    return counts


def _child(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.simproc")
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--min-records", type=int, required=True)
    parser.add_argument("--max-records", type=int, required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--rate-limit", type=float, default=None)
    parser.add_argument("--receiver-url", default=None)
    parser.add_argument("--session-key-file", default=None)
    parser.add_argument("--jsonl-dir", default=None)
    args = parser.parse_args(argv)
    settings = load_settings()  # client id and secret come from the environment, not argv
    private_pem = Path(args.session_key_file).read_text() if args.session_key_file else None
    with running_simulator(
        users=args.users,
        seed=args.seed,
        min_records=args.min_records,
        max_records=args.max_records,
        receiver_url=args.receiver_url,
        session_private_key_pem=private_pem,
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        faults=SimFaults(latency_ms=args.latency_ms, rate_limit_per_s=args.rate_limit),
        port=0,
    ) as sim:
        by_path = dump_jsonl(sim.world, Path(args.jsonl_dir)) if args.jsonl_dir else {}
        ready = {
            "base_url": sim.base_url,
            "records": sim.world.total_records(),
            "records_by_path": by_path,
            "users": len(sim.world.users),
        }
        print(json.dumps(ready), flush=True)
        sys.stdin.read()  # serve until the parent closes our stdin (or dies)


@dataclass
class SimProcess:
    """The parent's view: the base URL, what the world holds, and the /_sim control routes."""

    base_url: str
    records: int
    records_by_path: dict[str, int]
    users: int

    def _post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = httpx.post(f"{self.base_url}{path}", json=body or {}, timeout=120.0)
        return response.raise_for_status().json()

    def advance(self, created: int, updated: int) -> dict[str, Any]:
        return cast(
            dict[str, Any], self._post("/_sim/advance", {"created": created, "updated": updated})
        )

    def post_initial_sessions(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self._post("/_sim/sessions/initial"))

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.base_url}/_sim/stats", timeout=30.0)
        return cast(dict[str, Any], response.raise_for_status().json())

    def reset_stats(self) -> None:
        self._post("/_sim/stats/reset")

    def users_list(self) -> list[dict[str, str]]:
        response = httpx.get(f"{self.base_url}/_sim/users", timeout=30.0)
        return cast(list[dict[str, str]], response.raise_for_status().json())


@contextmanager
def simulator_process(
    size: SimSize,
    *,
    faults: SimFaults,
    receiver_url: str,
    session_key_file: Path,
    jsonl_dir: Path,
    client_id: str,
    client_secret: str,
) -> Iterator[SimProcess]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.simproc",
        f"--users={size.users}",
        f"--min-records={size.min_records}",
        f"--max-records={size.max_records}",
        f"--seed={size.seed}",
        f"--latency-ms={faults.latency_ms}",
        f"--receiver-url={receiver_url}",
        f"--session-key-file={session_key_file}",
        f"--jsonl-dir={jsonl_dir}",
    ]
    if faults.rate_limit_per_s is not None:
        command.append(f"--rate-limit={faults.rate_limit_per_s}")
    env = {**os.environ, "SYNC_CLIENT_ID": client_id, "SYNC_CLIENT_SECRET": client_secret}
    proc = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the simulator process exited with {proc.wait(_STARTUP_TIMEOUT_S)}")
        ready = json.loads(line)
        yield SimProcess(
            base_url=ready["base_url"],
            records=int(ready["records"]),
            records_by_path={k: int(v) for k, v in ready["records_by_path"].items()},
            users=int(ready["users"]),
        )
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    _child(sys.argv[1:])
