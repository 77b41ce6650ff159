"""Issue 8, secrets and PHI at rest: a whole demo-like flow with DEBUG logging everywhere (the
shared `flow` fixture, flow.py: it includes a failing endpoint and hostile deliveries, so
error paths are searched too), then every log line, Dagster event and file of the data
directory is searched.

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

import stat
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from sync_pipeline_tests.reliability.flow import Flow

pytestmark = pytest.mark.slow

JWT_PREFIX = "eyJhbGciOi"  # base64url of '{"alg":' — the start of every JWT header


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
