"""An installed code location (a wheel, not this checkout) has every data file it reads: each
one lives inside a shipped package (the code location or the simulator) and is declared package
data in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from starfleet.templates import fixture_root
from sync_pipeline.deploy import DEPLOY_DIR

from .conftest import REPOSITORY

PACKAGE = REPOSITORY / "sync_pipeline"
SIMULATOR = REPOSITORY / "starfleet"


def declared_package_data() -> set[Path]:
    pyproject = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())
    declared: set[Path] = set()
    for package, patterns in pyproject["tool"]["setuptools"]["package-data"].items():
        base = REPOSITORY / package.replace(".", "/")
        for pattern in patterns:
            declared |= {path.resolve() for path in base.glob(pattern)}
    return declared


def test_every_data_file_the_code_reads_is_declared_package_data() -> None:
    needed = [
        *DEPLOY_DIR.rglob("*.yaml"),  # instance storage and executor configs
        *Path(str(fixture_root())).rglob("*.json"),  # the simulator's real response bodies
        *(PACKAGE / "analytics" / "mapping").glob("*.csv"),  # the observation mapping
    ]
    assert len(needed) > 30
    packages = (PACKAGE, SIMULATOR)
    assert all(any(path.resolve().is_relative_to(p) for p in packages) for path in needed)
    undeclared = sorted(str(p) for p in needed if p.resolve() not in declared_package_data())
    assert not undeclared, f"not package data: {undeclared}"


def test_the_code_location_and_the_cli_leave_simulator_and_benchmark_unloaded() -> None:
    """The code location ships the product: loading its definitions, and the CLI parsing any
    command but `bench` and `demo`/`simulator`, imports neither `starfleet` nor `benchmarks`."""
    probe = (
        "import sys\n"
        "import sync_pipeline.definitions\n"
        "from sync_pipeline import cli\n"
        "cli._parse(['sync', '--mode', 'incremental'])\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'starfleet', 'benchmarks'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
    # and `bench` does reach the benchmark's own parser
    bench = "from sync_pipeline import cli\nprint(cli._parse(['bench', '--quick']).quick)\n"
    done = subprocess.run(
        [sys.executable, "-c", bench], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.stdout.strip() == "True", done.stderr[-2000:]
