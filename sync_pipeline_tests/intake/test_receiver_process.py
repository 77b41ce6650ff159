"""The receiver as a real process: an acknowledged delivery survives SIGKILL."""

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from sync_pipeline.intake.landing import iter_landed, landed_days
from sync_pipeline_tests.intake.conftest import SECRET, signed_headers

RUN = (
    "from sync_pipeline.settings import load_settings;"
    "from sync_pipeline.intake.server import run_receiver;"
    "run_receiver(load_settings(), '127.0.0.1', {port}, workers={workers})"
)


# settings as values, none of them in the process's environment
RUN_WITH_VALUES = (
    "import sys;"
    "from sync_pipeline.settings import load_settings;"
    "from sync_pipeline.intake.server import run_receiver;"
    "settings = load_settings({{'SYNC_DATA_DIR': sys.argv[1], 'SYNC_CLIENT_SECRET': sys.argv[2]}});"
    "run_receiver(settings, '127.0.0.1', {port}, workers={workers})"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def receiver_process(
    data_dir: Path,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
    *,
    settings_as_values: bool = False,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The receiver in its own process, its settings from its environment or, with
    `settings_as_values`, built in code from values and no SYNC_* variable set at all."""
    port = free_port()
    if settings_as_values:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
        command = [RUN_WITH_VALUES.format(port=port, workers=workers), str(data_dir), SECRET]
    else:
        env = {
            **os.environ,
            "SYNC_DATA_DIR": str(data_dir),
            "SYNC_CLIENT_SECRET": SECRET,
            "SYNC_SESSION_PUBLIC_KEY": "",
            **(extra_env or {}),
        }
        command = [RUN.format(port=port, workers=workers)]
    process = subprocess.Popen(
        [sys.executable, "-c", *command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, "the receiver exited"
            assert time.monotonic() < deadline, "the receiver did not become healthy"
            time.sleep(0.05)
        yield process, base_url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def batch(n: int) -> bytes:
    return (
        '[{"humanId":"2f8b6c3a9d4e5f60718293a4b5c6d7e8","updatedAt":"2024-05-01T11:59:58.250Z",'
        '"endpoint":"https://api.humanapi.co/v1/human/sleeps","type":"wellness","model":"sleep",'
        f'"action":"created","objectId":"{n:024x}"}}]'
    ).encode()


def landed_bodies(data_dir: Path) -> list[str]:
    return [
        delivery.body
        for day in landed_days(data_dir, "notifications")
        for delivery in iter_landed(data_dir, "notifications", day)
    ]


@pytest.mark.slow
def test_an_acknowledged_delivery_survives_sigkill_and_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first_headers = signed_headers(batch(1))
    with receiver_process(data_dir) as (process, base_url):
        response = httpx.post(f"{base_url}/notifications", content=batch(1), headers=first_headers)
        assert response.status_code == 200
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    assert landed_bodies(data_dir) == [batch(1).decode()]
    with receiver_process(data_dir) as (_, base_url):
        again = httpx.post(f"{base_url}/notifications", content=batch(1), headers=first_headers)
        fresh = httpx.post(
            f"{base_url}/notifications", content=batch(2), headers=signed_headers(batch(2))
        )
    assert (again.json()["duplicate"], fresh.json()["duplicate"]) == (True, False)
    assert sorted(landed_bodies(data_dir)) == [batch(1).decode(), batch(2).decode()]
    assert dt.datetime.now(dt.UTC).date() in landed_days(data_dir, "notifications")


@pytest.mark.slow
def test_several_worker_processes_land_each_delivery_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with receiver_process(data_dir, workers=2) as (_, base_url):
        for n in range(20):
            headers = signed_headers(batch(n), nonce=str(n))
            for _ in range(2):  # each delivery twice, on fresh connections (any worker)
                response = httpx.post(
                    f"{base_url}/notifications", content=batch(n), headers=headers
                )
                assert response.status_code == 200
    assert sorted(landed_bodies(data_dir)) == sorted(batch(n).decode() for n in range(20))


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_worker_processes_close_half_sent_heads_at_the_deadline(
    tmp_path: Path, workers: int
) -> None:
    # worker processes import the protocol by name: the deadline must reach them too
    timeout = {"SYNC_RECEIVER_HEADER_TIMEOUT_S": "1"}
    with receiver_process(tmp_path / "data", workers=workers, extra_env=timeout) as (_, url):
        port = int(url.rsplit(":", 1)[1])
        # 5 s: well above the 1 s deadline, below the 10 s default it must not fall back to
        sockets = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(4)]
        try:
            for sock in sockets:
                sock.sendall(b"POST /notifications HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Hu")
            for sock in sockets:
                assert sock.recv(1024) == b""  # closed by the server
        finally:
            for sock in sockets:
                sock.close()


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.mark.slow
def test_worker_processes_get_settings_as_values_not_through_the_environment(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    with receiver_process(data_dir, workers=2, settings_as_values=True) as (process, base_url):
        for n in range(4):
            headers = signed_headers(batch(n), nonce=str(n))
            response = httpx.post(f"{base_url}/notifications", content=batch(n), headers=headers)
            assert response.status_code == 200  # signed with the secret the workers were given
        workers = _children(process.pid)
        assert workers
        for pid in workers:
            # what each worker was started with: the parent put nothing into its environment
            environment = Path(f"/proc/{pid}/environ").read_bytes()
            assert b"SYNC_CLIENT_SECRET" not in environment
            assert b"SYNC_DATA_DIR" not in environment
    assert sorted(landed_bodies(data_dir)) == sorted(batch(n).decode() for n in range(4))
