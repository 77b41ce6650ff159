"""The receiver's bounds, against a real uvicorn on 127.0.0.1: what a stranger, a slow client or
a full disk can cost it. No timing is asserted: every wait has a generous bound that only a
stuck server would exceed."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import jwt
import pytest

from benchmarks.webhook_senders import drive_receiver
from sync_pipeline.intake.checks import Rejected, token_replay_until
from sync_pipeline.intake.dedup import FILENAME
from sync_pipeline.intake.landing import LandedDelivery, LandingLog, iter_landed
from sync_pipeline.intake.server import RunningReceiver, running_receiver
from sync_pipeline.settings import Settings
from sync_pipeline_tests.intake.conftest import SECRET, KeyPair, landed_lines, signed_headers

MIB = 1024 * 1024
GENEROUS_S = 10.0  # far above any healthy answer; only a stuck server reaches it
BATCH = json.dumps(
    [
        {
            "humanId": "2f8b6c3a9d4e5f60718293a4b5c6d7e8",
            "updatedAt": "2024-05-01T11:59:58.250Z",
            "endpoint": "https://api.humanapi.co/v1/human/sleeps",
            "type": "wellness",
            "model": "sleep",
            "action": "created",
            "objectId": "5f3c2b1a0f9e8d7c6b5a4938",
        }
    ]
).encode()


@pytest.fixture
def bounded(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings,
        max_body_bytes=2 * MIB,
        receiver_header_timeout_s=1.0,
        receiver_body_timeout_s=1.0,
    )


@pytest.fixture
def served(bounded: Settings) -> Iterator[RunningReceiver]:
    with running_receiver(bounded) as running:
        yield running


def connect(base_url: str) -> socket.socket:
    parts = urlsplit(base_url)
    sock = socket.create_connection((parts.hostname or "", parts.port or 80), timeout=GENEROUS_S)
    return sock


def head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def read_answer(sock: socket.socket) -> tuple[int, bytes]:
    """Status and everything received until the server's answer is complete or it closes."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    status = int(received.split(b" ", 2)[1]) if received else 0
    return status, received


def test_a_stale_timestamp_is_refused_before_any_body_byte_is_sent(served: RunningReceiver) -> None:
    stale = str(int((time.time() - 3600) * 1000))
    headers = {**signed_headers(b"x" * MIB, timestamp=stale), "Content-Length": str(MIB)}
    with closing(connect(served.base_url)) as sock:
        sock.sendall(head("/notifications", headers))  # the head only: not one body byte
        status, answer = read_answer(sock)
    assert status == 401 and b"timestamp outside the accepted window" in answer


def test_a_session_without_a_valid_token_is_refused_before_any_body_byte_is_sent(
    served: RunningReceiver, other_keys: KeyPair
) -> None:
    now = int(time.time())
    forged = jwt.encode(
        {"client_user_id": "u", "human_id": "h", "iat": now, "exp": now + 60},
        other_keys.private,
        algorithm="RS256",
    )
    headers = {"Authorization": f"Bearer {forged}", "Content-Length": str(MIB)}
    with closing(connect(served.base_url)) as sock:
        sock.sendall(head("/connect/sessions", headers))
        status, answer = read_answer(sock)
    assert status == 401 and b"token not valid" in answer


def test_a_token_expiring_beyond_the_accepted_horizon_is_refused(
    served: RunningReceiver, keys: KeyPair, bounded: Settings
) -> None:
    now = int(time.time())
    far = now + bounded.session_max_token_lifetime_s + 3600
    token = jwt.encode(
        {"client_user_id": "u", "human_id": "h", "iat": now, "exp": far},
        keys.private,
        algorithm="RS256",
    )
    body = b'{"event":"close","response":{"status":"SUCCESS"}}'
    response = httpx.post(
        f"{served.base_url}/connect/sessions",
        content=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=GENEROUS_S,
    )
    assert response.status_code == 401
    assert response.json() == {"error": "token expires too far in the future"}
    assert landed_lines(bounded.data_dir, "sessions") == []


def test_half_open_connections_do_not_stop_health_or_deliveries_and_are_closed(
    served: RunningReceiver,
) -> None:
    half_head = b"POST /notifications HTTP/1.1\r\nHost: 127.0.0.1\r\nX-HumanAPI-Sig"
    with ExitStack() as stack:
        stragglers = []
        for _ in range(500):  # loopback only, bounded
            sock = stack.enter_context(closing(connect(served.base_url)))
            sock.sendall(half_head)
            stragglers.append(sock)
        with httpx.Client(base_url=served.base_url, timeout=GENEROUS_S) as client:
            assert client.get("/healthz").status_code == 200
            delivered = client.post("/notifications", content=BATCH, headers=signed_headers(BATCH))
            assert delivered.status_code == 200
        # each half-sent head is cut at the head deadline (1 s here): the server closes it
        for sock in stragglers:
            assert sock.recv(1024) == b""


def test_a_body_that_stops_arriving_gets_408_and_lands_nothing(
    served: RunningReceiver, bounded: Settings
) -> None:
    headers = {**signed_headers(BATCH), "Content-Length": str(len(BATCH))}
    with closing(connect(served.base_url)) as sock:
        sock.sendall(head("/notifications", headers) + BATCH[:10])
        status, answer = read_answer(sock)
    assert status == 408 and b"body not received in time" in answer
    assert landed_lines(bounded.data_dir, "notifications") == []


def test_deliveries_beyond_the_in_flight_limit_get_503_and_the_first_still_lands(
    bounded: Settings,
) -> None:
    one_at_a_time = dataclasses.replace(
        bounded, receiver_max_inflight=1, receiver_body_timeout_s=30
    )
    with running_receiver(one_at_a_time) as served:
        headers = {**signed_headers(BATCH, nonce="1"), "Content-Length": str(len(BATCH))}
        with closing(connect(served.base_url)) as holder:
            holder.sendall(head("/notifications", headers) + BATCH[:10])  # holds the one slot
            with httpx.Client(base_url=served.base_url, timeout=GENEROUS_S) as client:
                deadline = time.monotonic() + GENEROUS_S
                for attempt in itertools.count(2):  # until the holder's body is being read
                    refused_nonce = str(attempt)
                    refused = client.post(
                        "/notifications",
                        content=BATCH,
                        headers=signed_headers(BATCH, nonce=refused_nonce),
                    )
                    if refused.status_code == 503 or time.monotonic() > deadline:
                        break
                assert refused.status_code == 503
                assert "too many deliveries in flight" in refused.json()["error"]
                assert client.get("/healthz").status_code == 200  # health is not a delivery
            holder.sendall(BATCH[10:])
            status, _ = read_answer(holder)
        assert status == 200
    landed = landed_lines(bounded.data_dir, "notifications")
    nonces = {json.loads(line)["headers"]["x-humanapi-nonce"] for line in landed}
    assert "1" in nonces and refused_nonce not in nonces


def test_a_thousand_deliveries_leave_a_bounded_number_of_files(
    served: RunningReceiver, bounded: Settings
) -> None:
    report = asyncio.run(drive_receiver(served.base_url, SECRET, senders=8, deliveries=1000))
    assert report["acknowledged"] == 1000
    files = [p for p in (bounded.data_dir / "landing").rglob("*") if p.is_file()]
    # per kind: one landing file per process and day, the dedup store (3 files), the probe
    assert len(files) <= 12, sorted(str(p) for p in files)
    today = dt.datetime.now(dt.UTC).date()
    assert len(list(iter_landed(bounded.data_dir, "notifications", today))) == 1000


def test_a_landing_folder_that_cannot_be_written_makes_health_and_deliveries_503(
    served: RunningReceiver, bounded: Settings
) -> None:
    # Tests may run as root, for whom file modes do not apply: put a file where the landing
    # folder was, which no process can write into.
    folder = bounded.data_dir / "landing" / "notifications"
    moved = folder.with_name("moved-away")
    folder.rename(moved)
    folder.write_text("")
    with httpx.Client(base_url=served.base_url, timeout=GENEROUS_S) as client:
        health = client.get("/healthz")
        assert health.status_code == 503 and "notifications" in health.json()["error"]
        refused = client.post("/notifications", content=BATCH, headers=signed_headers(BATCH))
        assert refused.status_code == 503
        assert landed_lines(bounded.data_dir, "notifications") == []
        # repaired: health reports the failed write until a delivery lands again
        folder.unlink()
        moved.rename(folder)
        assert client.get("/healthz").status_code == 503
        later = signed_headers(BATCH, nonce="2")
        assert client.post("/notifications", content=BATCH, headers=later).status_code == 200
        assert client.get("/healthz").status_code == 200
    # the refused delivery was never acknowledged and is not in the log
    landed = landed_lines(bounded.data_dir, "notifications")
    assert [json.loads(line)["headers"]["x-humanapi-nonce"] for line in landed] == ["2"]


@pytest.mark.parametrize(
    ("free_bytes", "free_inodes", "problem"),
    [(2**62, 0, "landing disk is full"), (0, 2**62, "landing disk has no free inodes")],
)
def test_a_full_landing_disk_makes_health_and_deliveries_503_before_the_body(
    bounded: Settings, free_bytes: int, free_inodes: int, problem: str
) -> None:
    # free space and inodes are a real statvfs of the landing disk; a reserve above any disk
    # is what a full one looks like
    full = dataclasses.replace(
        bounded, landing_min_free_bytes=free_bytes, landing_min_free_inodes=free_inodes
    )
    if free_inodes and os.statvfs(bounded.data_dir.parent).f_files == 0:
        problem = ""  # a file system without an inode limit (btrfs) never runs out of them
    with (
        running_receiver(full) as served,
        httpx.Client(base_url=served.base_url, timeout=GENEROUS_S) as client,
    ):
        health = client.get("/healthz")
        headers = {**signed_headers(BATCH), "Content-Length": str(len(BATCH))}
        with closing(connect(served.base_url)) as sock:
            sock.sendall(head("/notifications", headers))  # no body: refused before it
            status, answer = read_answer(sock)
    if not problem:
        assert health.status_code == 200
        return
    assert health.status_code == 503 and problem in health.json()["error"]
    assert status == 503 and problem.encode() in answer
    assert landed_lines(full.data_dir, "notifications") == []


def test_several_worker_dedup_stores_agree_through_one_database(tmp_path: Path) -> None:
    # two LandingLogs on one folder are what two worker processes are
    first, second = LandingLog(tmp_path, "notifications"), LandingLog(tmp_path, "notifications")
    delivery = LandedDelivery("a" * 64, "notifications", dt.datetime.now(dt.UTC), {}, "[]", None)
    try:
        assert first.land_sync(delivery, time.time() + 60) is True
        assert second.land_sync(delivery, time.time() + 60) is False
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize(
    ("exp", "answer"),
    [
        (1_000_600, 1_000_600.0),
        (1_000_600.5, 1_000_600.5),
        (1_000_000 + 86_401, "token expires too far in the future"),
        (10**400, "token expires too far in the future"),
        (float("inf"), "token exp is not a time"),
        (float("nan"), "token exp is not a time"),
        (True, "token exp is not a time"),
        ("1000600", "token exp is not a time"),
        (None, "token exp is not a time"),
    ],
)
def test_the_dedup_horizon_of_a_session_is_its_exp_within_the_maximum(
    exp: object, answer: float | str
) -> None:
    claims = {"exp": exp}
    if isinstance(answer, float):
        assert token_replay_until(claims, 1_000_000.0, 86_400) == answer
        return
    with pytest.raises(Rejected) as refused:
        token_replay_until(claims, 1_000_000.0, 86_400)
    assert (refused.value.status, refused.value.reason) == (401, answer)


def test_dedup_entries_live_until_the_replay_window_closes(
    served: RunningReceiver, bounded: Settings, keys: KeyPair
) -> None:
    now = int(time.time())
    timestamp = str(now * 1000)
    token = jwt.encode(
        {"client_user_id": "u", "human_id": "h", "iat": now, "exp": now + 120},
        keys.private,
        algorithm="RS256",
    )
    session = b'{"event":"close","response":{"status":"SUCCESS"}}'
    with httpx.Client(base_url=served.base_url, timeout=GENEROUS_S) as client:
        notified = client.post(
            "/notifications", content=BATCH, headers=signed_headers(BATCH, timestamp=timestamp)
        )
        connected = client.post(
            "/connect/sessions", content=session, headers={"Authorization": f"Bearer {token}"}
        )
    assert (notified.status_code, connected.status_code) == (200, 200)

    def expiries(kind: str) -> list[float]:
        path = bounded.data_dir / "landing" / kind / FILENAME
        with closing(sqlite3.connect(path)) as db:
            return [row[0] for row in db.execute("SELECT expires_at FROM seen")]

    # notifications: the signed timestamp + tolerance; sessions: the token's exp
    assert expiries("notifications") == [now + bounded.signature_tolerance_s]
    assert expiries("sessions") == [now + 120]
