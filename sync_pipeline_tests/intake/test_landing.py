import asyncio
import datetime as dt
import os
import time
from pathlib import Path

import pytest

from sync_pipeline.intake.dedup import FILENAME, DedupStore
from sync_pipeline.intake.landing import (
    LandedDelivery,
    LandingCorruptError,
    LandingLog,
    encode_line,
    iter_landed,
    landed_days,
)

DAY = dt.date(2024, 5, 1)
AT = dt.datetime(2024, 5, 1, 23, 59, 59, 999999, tzinfo=dt.UTC)


def delivery(digest: str, body: str = "[]") -> LandedDelivery:
    return LandedDelivery(digest, "notifications", AT, {"x-humanapi-nonce": "1"}, body, None)


def day_dir(data_dir: Path) -> Path:
    return data_dir / "landing" / "notifications" / DAY.isoformat()


def test_a_delivery_round_trips_and_lands_under_its_utc_day(tmp_path: Path) -> None:
    log = LandingLog(tmp_path, "notifications")
    log.prepare()
    original = delivery("a" * 64, '[{"note":"ünïcode"}]')
    assert log.land_sync(original) is True
    assert log.land_sync(original) is False
    log.close()
    assert list(iter_landed(tmp_path, "notifications", DAY)) == [original]
    assert landed_days(tmp_path, "notifications") == [DAY]
    assert landed_days(tmp_path, "sessions") == []


def test_concurrent_duplicates_in_one_process_share_one_write(tmp_path: Path) -> None:
    log = LandingLog(tmp_path, "notifications")

    async def land_many() -> list[bool]:
        return await asyncio.gather(*(log.land(delivery("b" * 64)) for _ in range(20)))

    assert sorted(asyncio.run(land_many())) == [False] * 19 + [True]
    log.close()
    [landed_file] = day_dir(tmp_path).glob("*.jsonl")
    assert landed_file.read_bytes().count(b"\n") == 1


def test_readers_skip_a_torn_last_line_and_dedup_across_files(tmp_path: Path) -> None:
    directory = day_dir(tmp_path)
    directory.mkdir(parents=True)
    (directory / "a.jsonl").write_bytes(
        encode_line(delivery("1")) + encode_line(delivery("2")) + encode_line(delivery("3"))[:20]
    )
    # another process landed "2" too (the harmless cross-process race)
    (directory / "b.jsonl").write_bytes(encode_line(delivery("2")) + encode_line(delivery("4")))
    assert [d.digest for d in iter_landed(tmp_path, "notifications", DAY)] == ["1", "2", "4"]


def test_a_damaged_line_inside_a_file_is_an_error_not_a_silent_skip(tmp_path: Path) -> None:
    directory = day_dir(tmp_path)
    directory.mkdir(parents=True)
    (directory / "a.jsonl").write_bytes(b"{broken\n" + encode_line(delivery("1")))
    with pytest.raises(LandingCorruptError, match="line 1"):
        list(iter_landed(tmp_path, "notifications", DAY))


def test_unknown_kinds_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown landing kind"):
        landed_days(tmp_path, "webhooks")


def test_a_write_whose_fsync_fails_is_cut_back_off_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a delivery answered 503 must not be read back as received, even when its full line
    # reached the file before fsync failed
    log = LandingLog(tmp_path, "notifications")
    log.prepare()
    assert log.land_sync(delivery("a" * 64)) is True
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        log.land_sync(delivery("b" * 64))
    assert log.last_error == "OSError"
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert [d.digest for d in iter_landed(tmp_path, "notifications", DAY)] == ["a" * 64]
    assert log.land_sync(delivery("c" * 64)) is True  # a fresh file; the error clears
    assert log.last_error is None
    log.close()
    landed = sorted(d.digest for d in iter_landed(tmp_path, "notifications", DAY))
    assert landed == ["a" * 64, "c" * 64]


def test_dedup_entries_expire_with_their_replay_window_and_are_pruned(tmp_path: Path) -> None:
    store = DedupStore(tmp_path)
    now = 1_000_000.0
    store.remember("old", now + 10, now)
    assert store.seen("old", now + 5) is True
    assert store.seen("old", now + 11) is False  # the window closed: a replay is refused anyway
    for n in range(600):  # pruning runs every few hundred entries
        store.remember(f"d{n}", now + 100 + n, now + 50)
    later = now + 100 + 600
    for n in range(600):
        store.remember(f"e{n}", later + 10, later)
    # everything whose window closed before `later` is gone: the store is bounded by the window
    assert store.entries() <= 600 + 256
    assert store.seen("old", now) is False
    store.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [FILENAME] or set(files) <= {FILENAME, f"{FILENAME}-wal", f"{FILENAME}-shm"}


def test_a_thousand_deliveries_make_a_constant_number_of_files(tmp_path: Path) -> None:
    log = LandingLog(tmp_path, "notifications")
    log.prepare()
    for n in range(1000):
        assert log.land_sync(delivery(f"{n:064x}"), replay_until=time.time() + 60) is True
    assert log.dedup_entries() == 1000
    log.close()
    files = [p for p in (tmp_path / "landing").rglob("*") if p.is_file()]
    assert len(files) <= 4  # one landing file + the dedup store's database, WAL and shm
