"""Issue 8, crashes: the receiver process SIGKILLed while several senders are delivering.

Every delivery that was answered 200 must be in the landing log afterwards, exactly once; the
landing log stays readable (a torn last line from the kill is not an acknowledged delivery).
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest

from sync_pipeline_tests.intake.conftest import signed_headers
from sync_pipeline_tests.intake.test_receiver_process import (
    batch,
    landed_bodies,
    receiver_process,
)

pytestmark = pytest.mark.slow

SENDERS = 6
KILL_AFTER_ACKS = 120  # enough acknowledged deliveries before the kill to mean something


@pytest.mark.parametrize("workers", [1, 2])
def test_every_acknowledged_delivery_survives_a_sigkill_mid_load(
    tmp_path: Path, workers: int
) -> None:
    data_dir = tmp_path / "data"
    acked: list[bytes] = []
    lock = threading.Lock()
    enough = threading.Event()
    failures: Counter[str] = Counter()

    def sender(number: int, base_url: str) -> None:
        with httpx.Client(base_url=base_url, timeout=5) as client:
            for n in range(number, 100_000, SENDERS):
                body = batch(n)
                try:
                    answer = client.post(
                        "/notifications", content=body, headers=signed_headers(body, nonce=str(n))
                    )
                except httpx.TransportError as exc:
                    with lock:
                        failures[type(exc).__name__] += 1
                    return  # the receiver is gone: what it acknowledged is what counts
                if answer.status_code == 200:
                    with lock:
                        acked.append(body)
                        if len(acked) >= KILL_AFTER_ACKS:
                            enough.set()

    with receiver_process(data_dir, workers=workers) as (process, base_url):
        threads = [
            threading.Thread(target=sender, args=(n, base_url), daemon=True) for n in range(SENDERS)
        ]
        for thread in threads:
            thread.start()
        assert enough.wait(60), f"only {len(acked)} deliveries acknowledged"
        os.killpg(process.pid, signal.SIGKILL)  # mid-load: every sender is still sending
        process.wait(10)
        for thread in threads:
            thread.join(15)
        assert not any(t.is_alive() for t in threads)

    assert sum(failures.values()) == SENDERS, "some sender never saw the kill: not mid-load"
    landed = Counter(landed_bodies(data_dir))
    missing = [b for b in acked if landed[b.decode()] == 0]
    assert missing == [], f"{len(missing)} of {len(acked)} acknowledged deliveries lost"
    assert [body for body, count in landed.items() if count > 1] == []
    # nothing landed that was never sent
    assert set(landed) <= {batch(n).decode() for n in range(100_000)}
