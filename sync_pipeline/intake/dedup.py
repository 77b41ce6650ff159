"""Which deliveries are already landed, for as long as a replay could still be accepted.

One SQLite database per landing kind (``<landing>/<kind>/_dedup.sqlite3``, WAL mode), shared by
every receiver process on the data directory. Each entry lives until the delivery's replay
window closes (notifications: signed timestamp + tolerance; sessions: the JWT ``exp``), after
which a replay is refused by the checks anyway, and is then pruned. So the state is bounded by
the window, and the number of files is three (database, WAL, shared memory) whatever the number
of deliveries: the marker file per delivery this replaces was never removed and could exhaust
the inodes.

Why SQLite: it is in the standard library, its locking is safe across processes, and WAL lets
readers and one writer work at once; with ``synchronous=NORMAL`` a commit does not fsync (the
landed line already was), a crash can lose at most the last entries, which only loses the
shortcut: readers deduplicate by digest too.

The store is a shortcut, never the truth: an error here is logged and the delivery is landed
as if new (readers drop the duplicate), so a broken store cannot refuse a delivery.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

FILENAME = "_dedup.sqlite3"
_FILE_MODE = 0o600
# prune expired entries every this many new entries (and when the store opens)
_PRUNE_EVERY = 256
_BUSY_TIMEOUT_S = 5.0


class DedupStore:
    """Landed digests with the end of their replay window; safe across threads and processes."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / FILENAME
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._since_prune = 0

    def _connection(self, now: float) -> sqlite3.Connection:
        if self._db is None:
            # created owner-only before SQLite opens it (its WAL and shm files copy the mode)
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE))
            db = sqlite3.connect(
                self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(
                    "CREATE TABLE IF NOT EXISTS seen "
                    "(digest TEXT PRIMARY KEY, expires_at REAL NOT NULL) WITHOUT ROWID"
                )
                db.execute("CREATE INDEX IF NOT EXISTS seen_by_expiry ON seen (expires_at)")
                db.execute("DELETE FROM seen WHERE expires_at <= ?", (now,))
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    def open(self, now: float) -> None:
        """Open (and prune) now, so a data directory that cannot hold it fails at startup."""
        with self._lock:
            self._connection(now)

    def seen(self, digest: str, now: float) -> bool:
        """True when `digest` was landed and its replay window is still open."""
        try:
            with self._lock:
                row = (
                    self._connection(now)
                    .execute(
                        "SELECT 1 FROM seen WHERE digest = ? AND expires_at > ?", (digest, now)
                    )
                    .fetchone()
                )
        except (sqlite3.Error, OSError) as exc:
            logger.warning("dedup store lookup failed (%s); landing as new", type(exc).__name__)
            return False
        return row is not None

    def remember(self, digest: str, expires_at: float, now: float) -> None:
        """Record a landed delivery until `expires_at` (epoch seconds); prune now and then."""
        try:
            with self._lock:
                db = self._connection(now)
                db.execute(
                    "INSERT INTO seen (digest, expires_at) VALUES (?, ?) ON CONFLICT (digest) "
                    "DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)",
                    (digest, expires_at),
                )
                self._since_prune += 1
                if self._since_prune >= _PRUNE_EVERY:
                    self._since_prune = 0
                    db.execute("DELETE FROM seen WHERE expires_at <= ?", (now,))
        except (sqlite3.Error, OSError) as exc:
            logger.warning("dedup store update failed (%s)", type(exc).__name__)

    def entries(self) -> int:
        """How many digests the store holds (for tests and health metrics)."""
        with self._lock:
            row = self._connection(0.0).execute("SELECT count(*) FROM seen").fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
