"""Serving the simulator: blocking (`run_simulator`, for the CLI) or in a background thread
(`running_simulator`, for the demo, tests and benchmarks)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import httpx
import uvicorn

from starfleet.app import ABORT_SCOPE_KEY, SimulatorApp, create_app
from starfleet.config import SimConfig, SimFaults
from starfleet.world import DEFAULT_NOTIFICATION_API_BASE, SimWorld, build_world
from sync_pipeline.settings import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools missing: dropped connections degrade to cut-off responses
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

_STARTUP_TIMEOUT_S = 10.0


def _protocol() -> type[asyncio.Protocol] | str:
    if HttpToolsProtocol is None:
        return "auto"

    class AbortableProtocol(HttpToolsProtocol):
        """Lets the app abort the TCP connection under a request (the drop_rate fault)."""

        def on_message_begin(self) -> None:
            super().on_message_begin()
            cast(dict[str, Any], self.scope)[ABORT_SCOPE_KEY] = self.transport.abort

    return AbortableProtocol


def _uvicorn_config(app: Any, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        http=_protocol(),
    )


def _assemble(
    *,
    users: int,
    seed: int,
    receiver_url: str | None,
    session_private_key_pem: str | None,
    client_id: str,
    client_secret: str,
    faults: SimFaults | None,
    min_records: int,
    max_records: int,
    notification_api_base: str,
) -> tuple[SimWorld, SimConfig, Any]:
    world = build_world(users, seed, min_records=min_records, max_records=max_records)
    config = SimConfig(
        client_id=client_id,
        client_secret=client_secret,
        receiver_url=receiver_url,
        session_private_key_pem=session_private_key_pem,
        notification_api_base=notification_api_base,
        faults=faults or SimFaults(),
        seed=seed,
    )
    return world, config, create_app(world, config)


def run_simulator(
    host: str = "127.0.0.1",
    port: int = 8700,
    *,
    users: int = 5,
    seed: int = 0,
    receiver_url: str | None = None,
    session_private_key_pem: str | None = None,
    client_id: str = DEMO_CLIENT_ID,
    client_secret: str = DEMO_CLIENT_SECRET,
    faults: SimFaults | None = None,
    min_records: int = 10,
    max_records: int = 60,
    notification_api_base: str = DEFAULT_NOTIFICATION_API_BASE,
) -> None:
    """Serve the simulator (auth and data on one port) until interrupted."""
    _, _, app = _assemble(
        users=users,
        seed=seed,
        receiver_url=receiver_url,
        session_private_key_pem=session_private_key_pem,
        client_id=client_id,
        client_secret=client_secret,
        faults=faults,
        min_records=min_records,
        max_records=max_records,
        notification_api_base=notification_api_base,
    )
    uvicorn.Server(_uvicorn_config(app, host, port)).run()


@dataclass
class SimulatorHandle:
    base_url: str
    world: SimWorld
    app_config: SimConfig  # swap `app_config.faults` to change faults in-process
    app: SimulatorApp

    def _control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = httpx.post(f"{self.base_url}{path}", json=body or {}, timeout=30.0)
        response.raise_for_status()
        return response.json()

    def advance(self, created: int = 0, updated: int = 0) -> dict[str, Any]:
        """Move time: returns the notification items and the receiver's status (if configured)."""
        return cast(
            dict[str, Any], self._control("/_sim/advance", {"created": created, "updated": updated})
        )

    def post_session(
        self,
        client_user_id: str,
        event: str = "close",
        *,
        connect: list[str] | None = None,
        disconnect: list[str] | None = None,
        status: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "client_user_id": client_user_id,
            "event": event,
            "connect": connect or [],
            "disconnect": disconnect or [],
        }
        if status is not None:
            body["status"] = status
        return cast(dict[str, Any], self._control("/_sim/sessions", body))

    def post_initial_sessions(self) -> list[dict[str, Any]]:
        """A `close`/`SUCCESS` session for every user, listing their current connections."""
        return cast(list[dict[str, Any]], self._control("/_sim/sessions/initial"))


@contextmanager
def running_simulator(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    users: int = 5,
    seed: int = 0,
    receiver_url: str | None = None,
    session_private_key_pem: str | None = None,
    client_id: str = DEMO_CLIENT_ID,
    client_secret: str = DEMO_CLIENT_SECRET,
    faults: SimFaults | None = None,
    min_records: int = 10,
    max_records: int = 60,
    notification_api_base: str = DEFAULT_NOTIFICATION_API_BASE,
) -> Iterator[SimulatorHandle]:
    """The simulator in a background thread; port 0 picks a free port. Stops on exit."""
    world, config, app = _assemble(
        users=users,
        seed=seed,
        receiver_url=receiver_url,
        session_private_key_pem=session_private_key_pem,
        client_id=client_id,
        client_secret=client_secret,
        faults=faults,
        min_records=min_records,
        max_records=max_records,
        notification_api_base=notification_api_base,
    )
    # Binding here (not in uvicorn) means the port is known and held before the thread starts.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_host, bound_port = sock.getsockname()[:2]
    server = uvicorn.Server(_uvicorn_config(app, bound_host, bound_port))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="sync-pipeline-simulator", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the simulator did not start")
            time.sleep(0.01)
        yield SimulatorHandle(
            base_url=f"http://{bound_host}:{bound_port}",
            world=world,
            app_config=config,
            app=app.state.simulator,
        )
    finally:
        server.should_exit = True
        thread.join(timeout=_STARTUP_TIMEOUT_S)
        sock.close()
