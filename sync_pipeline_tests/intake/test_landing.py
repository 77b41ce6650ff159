import asyncio
import datetime as dt
from pathlib import Path

import pytest

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
