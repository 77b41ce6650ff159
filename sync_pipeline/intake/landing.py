"""The landing log: every accepted delivery, durably, before it is acknowledged.

Layout: ``<data_dir>/landing/<kind>/<YYYY-MM-DD>/<hostname>-<pid>-<uuid>.jsonl`` (kind is
"notifications" or "sessions", the day is the UTC receive date), one JSON object per line.

Why it is safe with several receiver processes and crashes at any instruction:
- each process appends only to its own files (opened O_APPEND, O_EXCL on creation), one full
  line per write, then ``os.fsync``; a landed line is never rewritten. A crash can leave at most
  an incomplete last line in that process's file, and readers skip it (it was never
  acknowledged, so the sender retries).
- deduplication across processes uses one SQLite store per kind (`intake/dedup.py`): a digest
  is recorded *after* its line is fsync'd and kept until its replay window closes. A recorded
  digest proves the delivery is landed, so a duplicate can be acknowledged without writing.
  Two processes receiving the same delivery at the same instant may both append it (both saw
  no entry); that is harmless because readers deduplicate by digest too. A crash between
  append and record only loses the shortcut, never the delivery.
- within one process, concurrent duplicates share one write (see ``LandingLog.land``).
- a write that fails is cut back off its file (ftruncate to the length before it), so a
  delivery answered 503 is not in the log; the file is then left for a fresh one.
- files: one per process start and day (and a fresh one after a failed write), plus the three
  of the dedup store and a health probe per kind; never one per delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sync_pipeline.intake.dedup import DedupStore

logger = logging.getLogger(__name__)

Kind = Literal["notifications", "sessions"]
KINDS: tuple[Kind, ...] = ("notifications", "sessions")
# how long a delivery landed without a replay window of its own stays deduplicated
DEFAULT_REPLAY_WINDOW_S = 3600.0
_HEALTH_PROBE = "_health-probe"
_DIR_MODE = 0o700
_FILE_MODE = 0o600


class LandingCorruptError(RuntimeError):
    """A landed line other than a file's last one cannot be read: the log was altered."""


@dataclass(frozen=True)
class LandedDelivery:
    digest: str
    kind: str
    received_at: dt.datetime  # UTC, microseconds
    headers: dict[str, str]
    body: str
    claims: dict[str, Any] | None


def landing_root(data_dir: Path, kind: str) -> Path:
    if kind not in KINDS:
        raise ValueError(f"unknown landing kind {kind!r}; expected one of {KINDS}")
    return data_dir / "landing" / kind


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_private_dir(path: Path) -> None:
    """Create `path` (and missing parents) owner-only, fsyncing each parent it changed."""
    if path.is_dir():
        return
    _ensure_private_dir(path.parent)
    try:
        path.mkdir(mode=_DIR_MODE)
    except FileExistsError:
        return
    os.chmod(path, _DIR_MODE)  # mkdir's mode is filtered by the umask
    _fsync_dir(path.parent)


def encode_line(delivery: LandedDelivery) -> bytes:
    record = {
        "digest": delivery.digest,
        "kind": delivery.kind,
        "received_at": delivery.received_at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        "headers": delivery.headers,
        "body": delivery.body,
        "claims": delivery.claims,
    }
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        # a claim holding a lone surrogate (JSON allows the escape): ASCII escapes keep the
        # exact value and make the line valid UTF-8
        return json.dumps(record, separators=(",", ":")).encode("ascii") + b"\n"


def _decode_line(line: bytes) -> LandedDelivery:
    record = json.loads(line)
    return LandedDelivery(
        digest=record["digest"],
        kind=record["kind"],
        received_at=dt.datetime.fromisoformat(record["received_at"]).astimezone(dt.UTC),
        headers=dict(record["headers"]),
        body=record["body"],
        claims=record["claims"],
    )


class _DayFile:
    """This process's append-only file for one kind and day."""

    def __init__(self, directory: Path) -> None:
        _ensure_private_dir(directory)
        name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}.jsonl"
        self.path = directory / name
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, _FILE_MODE)
        _fsync_dir(directory)

    def append(self, line: bytes) -> None:
        """Append and fsync one line; on failure cut the file back to where it was."""
        start = os.lseek(self.fd, 0, os.SEEK_END)
        try:
            view = memoryview(line)
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
            os.fsync(self.fd)
        except OSError:
            # the delivery will be answered 503: it must not be in the log (a full line whose
            # fsync failed would otherwise be read back). If this fails too, the file may end
            # in a partial line, which stays its last line (the caller drops the file).
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, start)
            raise

    def close(self) -> None:
        os.close(self.fd)


class LandingLog:
    """Appends deliveries of one kind for one process; see the module docstring for the design."""

    def __init__(self, data_dir: Path, kind: Kind) -> None:
        self.root = landing_root(data_dir, kind)
        self.kind = kind
        self._lock = threading.Lock()
        self._files: dict[dt.date, _DayFile] = {}
        self._inflight: dict[str, asyncio.Future[bool]] = {}  # digest → its write
        self._dedup = DedupStore(self.root)
        # the last write's failure (its type), None after a success: /healthz reports it
        self.last_error: str | None = None
        self._prepared = False

    def prepare(self) -> None:
        """Create the folder and dedup store now, so a bad data directory fails at startup."""
        _ensure_private_dir(self.root)
        self._dedup.open(time.time())
        self._prepared = True

    def close(self) -> None:
        with self._lock:
            for day_file in self._files.values():
                day_file.close()
            self._files.clear()
        self._dedup.close()

    def dedup_entries(self) -> int:
        return self._dedup.entries()

    def land_sync(self, delivery: LandedDelivery, replay_until: float | None = None) -> bool:
        """Durably append `delivery` unless already landed; True when this call wrote it.

        `replay_until` (epoch seconds) is when a replay of it would be refused anyway; until
        then a duplicate is answered without writing. Default: an hour from now.
        """
        now = time.time()
        try:
            if not self._prepared:
                self.prepare()
            if self._dedup.seen(delivery.digest, now):
                return False
            self._append(delivery)
        except OSError as exc:
            self.last_error = type(exc).__name__
            raise
        self.last_error = None
        expires_at = now + DEFAULT_REPLAY_WINDOW_S if replay_until is None else replay_until
        self._dedup.remember(delivery.digest, expires_at, now)
        return True

    def _append(self, delivery: LandedDelivery) -> None:
        line = encode_line(delivery)
        day = delivery.received_at.astimezone(dt.UTC).date()
        with self._lock:
            day_file = self._files.get(day)
            if day_file is None:
                # a new day: yesterday's file is done (a late straggler just opens a new one)
                for stale in self._files.values():
                    stale.close()
                self._files.clear()
                day_file = self._files[day] = _DayFile(self.root / day.isoformat())
            try:
                day_file.append(line)
            except OSError:
                # The file may now end in a partial line; start a fresh file next time so
                # that partial line stays the last one of its file (readers skip it).
                del self._files[day]
                day_file.close()
                raise

    def health_problem(self, min_free_bytes: int, min_free_inodes: int) -> str | None:
        """Why the log cannot be written now, or None. Cheap: one statvfs."""
        # the nearest folder that exists: a landing folder removed while running is recreated
        # by the next write, so only its disk matters here
        existing = next((p for p in (self.root, *self.root.parents) if p.exists()), self.root)
        try:
            stats = os.statvfs(existing)
        except OSError as exc:
            return f"landing folder unusable ({type(exc).__name__})"
        if stats.f_bavail * stats.f_frsize < min_free_bytes:
            return "landing disk is full"
        # f_files is 0 where the file system has no inode limit
        if stats.f_files and stats.f_favail < min_free_inodes:
            return "landing disk has no free inodes"
        return None

    def probe(self, min_free_bytes: int, min_free_inodes: int) -> str | None:
        """`health_problem`, plus a real write and fsync in the landing folder, plus the last
        delivery write's failure (cleared by the next write that succeeds)."""
        problem = self.health_problem(min_free_bytes, min_free_inodes)
        if problem is not None:
            return problem
        try:
            fd = os.open(
                self.root / _HEALTH_PROBE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE
            )
            try:
                os.write(fd, b"ok\n")
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            return f"landing folder not writable ({type(exc).__name__})"
        if self.last_error is not None:
            return f"the last landing write failed ({self.last_error})"
        return None

    async def land(self, delivery: LandedDelivery, replay_until: float | None = None) -> bool:
        """`land_sync` off the event loop; True when this call wrote the delivery.

        Concurrent duplicates in this process await the same write. The write runs as its own
        task, so a caller that stops waiting (a timeout) does not interrupt it.
        """
        digest = delivery.digest
        task = self._inflight.get(digest)
        first = task is None
        if task is None:
            task = asyncio.ensure_future(asyncio.to_thread(self.land_sync, delivery, replay_until))
            self._inflight[digest] = task
            task.add_done_callback(lambda done: self._finished(digest, done))
        wrote = await asyncio.shield(task)
        return wrote and first

    def _finished(self, digest: str, task: asyncio.Future[bool]) -> None:
        del self._inflight[digest]
        if not task.cancelled():
            task.exception()  # retrieved here: the waiters who are still there re-raise it


def day_fingerprint(data_dir: Path, day: dt.date) -> str:
    """Changes whenever a delivery of either kind lands on `day`: the log is append-only, so
    (file name, size) of every day file says whether anything was added."""
    parts: list[str] = []
    for kind in KINDS:
        directory = landing_root(data_dir, kind) / day.isoformat()
        if directory.is_dir():
            parts.extend(f"{kind}/{p.name}:{p.stat().st_size}" for p in directory.glob("*.jsonl"))
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()[:16]


def landed_days(data_dir: Path, kind: str) -> list[dt.date]:
    root = landing_root(data_dir, kind)
    if not root.is_dir():
        return []
    days = []
    for child in root.iterdir():
        try:
            days.append(dt.date.fromisoformat(child.name))
        except ValueError:
            continue  # the dedup store and anything else that is not a day folder
    return sorted(days)


def iter_landed(data_dir: Path, kind: str, day: dt.date) -> Iterator[LandedDelivery]:
    """Each delivery landed on `day` once (deduplicated by digest), files in name order.

    An incomplete last line (a crash mid-write, or a write still in progress) is skipped: it
    was never acknowledged.
    """
    directory = landing_root(data_dir, kind) / day.isoformat()
    if not directory.is_dir():
        return
    seen: set[str] = set()
    for path in sorted(directory.glob("*.jsonl")):
        # line by line: a day's log can be far larger than memory, one line is one delivery
        with path.open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.endswith(b"\n"):  # only ever the last line: torn or in progress
                    logger.warning("skipping an incomplete last line in %s", path.name)
                    break
                try:
                    delivery = _decode_line(line)
                except (ValueError, KeyError, TypeError) as exc:
                    message = f"{path}: line {number} is not a landed delivery"
                    raise LandingCorruptError(message) from exc
                if delivery.digest not in seen:
                    seen.add(delivery.digest)
                    yield delivery
