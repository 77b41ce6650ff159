"""Owner-only files for everything that holds health data or credentials."""

from __future__ import annotations

import os

_OWNER_ONLY = 0o077


def owner_only_files() -> None:
    """Make every file and folder this process creates from now on owner-only (0600 / 0700).

    A process-wide umask, not per-file modes, because DuckDB creates its database and WAL files
    itself, and `mkdir(parents=True)` applies a mode only to the last folder. It only ever
    tightens: bits already masked stay masked.
    """
    current = os.umask(_OWNER_ONLY)
    os.umask(current | _OWNER_ONLY)
