import asyncio
import datetime as dt

from benchmarks.webhook_senders import drive_receiver
from sync_pipeline.intake.landing import iter_landed
from sync_pipeline.intake.server import RunningReceiver
from sync_pipeline.settings import Settings
from sync_pipeline_tests.intake.conftest import SECRET


def test_every_acknowledged_delivery_is_landed(
    receiver: RunningReceiver, settings: Settings
) -> None:
    result = asyncio.run(
        drive_receiver(receiver.base_url, SECRET, senders=4, deliveries=100, items_per_batch=50)
    )
    assert result["acknowledged"] == result["deliveries"] == 100
    assert result["p50_ms"] <= result["p99_ms"]
    landed = [
        delivery
        for day in {
            dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1),
            dt.datetime.now(dt.UTC).date(),
        }
        for delivery in iter_landed(settings.data_dir, "notifications", day)
    ]
    assert len(landed) == result["acknowledged"]
