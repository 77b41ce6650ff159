"""Issue 8, secrets and PHI at rest: a whole demo-like flow with DEBUG logging everywhere, then
every log line, Dagster event and file of the data directory is searched.

Where things may appear (the rule these tests enforce):
- access tokens, the client secret, any JWT: nowhere — not in logs, Dagster events, landing,
  the warehouse or the lake (contract A2: tokens never go in logs, tables or files).
- PHI (a patient's family name, a medication name): only in warehouse.duckdb and lake/ Parquet.
  Landing holds notifications (ids, endpoints, no PHI) and Connect sessions (source names, no
  PHI), so PHI must not be found there either; logs and Dagster events never show it.
- files the pipeline creates under the data dir are owner-only: 0600 files, 0700 folders
  (dagster/ belongs to Dagster, keys/ to the test harness: both excluded).
"""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from sync_pipeline_tests.e2e.harness import running_stack

pytestmark = pytest.mark.slow

JWT_PREFIX = "eyJhbGciOi"  # base64url of '{"alg":' — the start of every JWT header


@dataclass(frozen=True)
class Flow:
    data_dir: Path
    log_lines: list[str]
    dagster_events: list[str]
    tokens: list[str]
    client_secret: str
    phi: list[str]


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flow]:
    data_dir = tmp_path_factory.mktemp("secrets") / "data"
    log_path = data_dir.parent / "debug.log"
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    saved_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        with running_stack(data_dir, users=2, min_records=3, max_records=8) as stack:
            stack.sim.post_initial_sessions()
            stack.intake()
            stack.sync("catchup")
            stack.sim.advance(created=4, updated=3)
            stack.intake()
            stack.sync("incremental")
            tokens = list(stack.sim.app._tokens)  # every access token the simulator issued
            medications = {
                str(r["name"])
                for u in stack.sim.world.users
                for r in stack.sim.world.records(u.human_id, "medical/medications")
                if isinstance(r.get("name"), str) and len(r["name"]) >= 6
            }
            events = [
                str(event)
                for run in stack.instance.get_runs()
                for event in stack.instance.all_logs(run.run_id)
            ]
            secret = stack.settings.client_secret
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_level)
        handler.close()
    # the fixtures' patient family name, and medication names from the simulated records
    phi = ["Plasty", *sorted(medications)[:2]]
    assert tokens and phi and events
    yield Flow(
        data_dir=data_dir,
        log_lines=log_path.read_text(encoding="utf-8", errors="replace").splitlines(),
        dagster_events=events,
        tokens=tokens,
        client_secret=secret,
        phi=phi,
    )


def files_under(data_dir: Path, *, skip: tuple[str, ...] = ()) -> Iterator[Path]:
    for path in sorted(data_dir.rglob("*")):
        relative = path.relative_to(data_dir)
        if relative.parts[0] in skip or str(relative) in skip:
            continue
        if path.is_file():
            yield path


def hits(needles: list[str], flow: Flow, files: list[Path]) -> list[str]:
    found = []
    for needle in needles:
        found += [f"log: {line[:200]}" for line in flow.log_lines if needle in line]
        found += [f"dagster: {e[:200]}" for e in flow.dagster_events if needle in e]
        raw = needle.encode()
        found += [f"file {p}: {needle}" for p in files if raw in p.read_bytes()]
    return found


def test_the_flow_logged_at_debug(flow: Flow) -> None:
    # the search below only means something if DEBUG lines of the upstream client were kept
    assert any("sync_pipeline.upstream" in line and "DEBUG" in line for line in flow.log_lines)


def test_no_token_secret_or_jwt_anywhere(flow: Flow) -> None:
    everything = list(files_under(flow.data_dir, skip=("keys",)))
    needles = [*flow.tokens, flow.client_secret, JWT_PREFIX]
    found = hits(needles, flow, everything)
    assert not found, "\n".join(found[:40])


def test_no_phi_outside_the_warehouse_and_lake(flow: Flow) -> None:
    outside = list(
        files_under(
            flow.data_dir, skip=("lake", "keys", "warehouse.duckdb", "warehouse.duckdb.wal")
        )
    )
    found = hits(flow.phi, flow, outside)
    assert not found, "\n".join(sorted(set(found))[:40])
    # and the values really are in the warehouse (else the search proves nothing)
    with duckdb.connect(str(flow.data_dir / "warehouse.duckdb"), read_only=True) as con:
        row = con.execute(
            "SELECT count(*) FROM medical.profile WHERE raw LIKE '%Plasty%'"
        ).fetchone()
    assert row is not None and row[0] > 0


def test_data_files_are_owner_only(flow: Flow) -> None:
    wrong = []
    for path in sorted(flow.data_dir.rglob("*")):
        relative = path.relative_to(flow.data_dir)
        if relative.parts[0] in ("dagster", "keys"):
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        want = 0o700 if path.is_dir() else 0o600
        if mode != want:
            wrong.append(f"{relative}: {mode:o} (want {want:o})")
    assert (flow.data_dir / "warehouse.duckdb").exists()
    assert not wrong, "\n".join(wrong)
