"""The suite reads nothing beside the repository (the guard in conftest.py proves it per test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from starfleet.templates import fixture_root

from .conftest import REPOSITORY


def test_the_real_fixtures_live_inside_the_repository() -> None:
    root = Path(str(fixture_root())).resolve()
    assert root.is_relative_to(REPOSITORY)
    assert len(list(root.glob("medical/*.json"))) == 14
    assert len(list(root.glob("wellness/*.json"))) == 14


def test_reading_beside_the_repository_is_caught(tmp_path: Path) -> None:
    beside = REPOSITORY.parent / "a-folder-beside-the-clone"
    # the guard records the attempt whether or not the path exists
    with pytest.raises(OSError):
        (beside / "fixture.json").read_text()
    from . import conftest

    assert str(beside / "fixture.json") in conftest._escapes
    conftest._escapes.remove(str(beside / "fixture.json"))
