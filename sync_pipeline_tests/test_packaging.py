"""An installed code location (a wheel, not this checkout) has every data file it reads: each
one lives inside a shipped package (the code location or the simulator) and is declared package
data in pyproject.toml."""

from __future__ import annotations

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
