"""Suite-wide guard: no test reads a file beside the repository.

The repository must be self-contained: a clone copied alone into an empty folder passes its
tests. On the machines we develop on, other folders sit beside the clone (the project's shared
notes and fixtures among them), so a test that reads `../something` passes here and fails
everywhere else. A Python audit hook sees every file open and directory listing of the test
process; any path under the repository's parent folder but outside the repository fails the
test that made it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The tests' landing days are fixed dates in 2025: make them partitions whatever today is (read
# when the code location loads, so before any test imports it).
os.environ.setdefault("SYNC_PARTITIONS_START", "2025-01-01")

REPOSITORY = Path(__file__).resolve().parents[1]
_BESIDE = str(REPOSITORY.parent) + os.sep
_INSIDE = str(REPOSITORY) + os.sep
_AUDITED = frozenset({"open", "os.listdir", "os.scandir"})
_escapes: list[str] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event not in _AUDITED or not args:
        return
    target = args[0]
    if isinstance(target, bytes):
        target = os.fsdecode(target)
    if not isinstance(target, str | os.PathLike):
        return  # a file descriptor: opened earlier, already audited
    path = os.path.abspath(target) + os.sep
    if path.startswith(_BESIDE) and not path.startswith(_INSIDE):
        _escapes.append(path.rstrip(os.sep))


if REPOSITORY.parent != REPOSITORY.parent.parent:  # a clone at / has no "beside"
    sys.addaudithook(_audit)


@pytest.fixture(autouse=True)
def _stays_inside_the_repository() -> Iterator[None]:
    seen = len(_escapes)
    yield
    escaped = _escapes[seen:]
    assert not escaped, f"the test read outside the repository: {sorted(set(escaped))}"
