"""Shared fixtures: one real simulator on a loopback port, and a capturing receiver."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from starfleet import SimFaults, SimulatorHandle, running_simulator
from sync_pipeline.settings import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET

SIM_USERS = 6
SIM_SEED = 0


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorHandle]:
    with running_simulator(users=SIM_USERS, seed=SIM_SEED) as handle:
        yield handle


@pytest.fixture
def http(sim: SimulatorHandle) -> Iterator[httpx.Client]:
    # every test starts from a well-behaved simulator with fresh counters
    sim.app_config.faults = SimFaults()
    sim.app.stats.reset()
    with httpx.Client(base_url=sim.base_url, timeout=10.0) as client:
        yield client
    sim.app_config.faults = SimFaults()


def request_token(client: httpx.Client, client_user_id: str, **overrides: str) -> httpx.Response:
    body = {
        "client_id": DEMO_CLIENT_ID,
        "client_secret": DEMO_CLIENT_SECRET,
        "client_user_id": client_user_id,
        "type": "access",
        **overrides,
    }
    return client.post("/v1/connect/token", json=body)


def bearer(client: httpx.Client, client_user_id: str) -> dict[str, str]:
    response = request_token(client, client_user_id)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@dataclass
class Captured:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    received: list[Captured] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A tiny HTTP server on a free port that answers 200 and keeps every POST."""
    received: list[Captured] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            received.append(
                Captured(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Receiver(f"http://127.0.0.1:{server.server_address[1]}", received)
    finally:
        server.shutdown()
        server.server_close()
