"""Serving the intake app: in the foreground (`sync-pipeline receiver`) or in a thread."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette

from sync_pipeline.intake.app import ReceiverSettings, create_app
from sync_pipeline.settings import Settings, load_settings

_STARTUP_TIMEOUT_S = 10.0


def create_app_from_env() -> Starlette:
    """App factory for worker processes, which can only rebuild settings from the environment."""
    return create_app(load_settings())


def _export_settings(settings: Settings) -> None:
    # Worker processes are spawned and read settings from the environment: make it say what
    # the caller's settings say (a no-op when those came from this environment).
    os.environ["SYNC_DATA_DIR"] = str(settings.data_dir)
    os.environ["SYNC_CLIENT_SECRET"] = settings.client_secret
    os.environ["SYNC_SIGNATURE_TOLERANCE_S"] = str(settings.signature_tolerance_s)
    os.environ["SYNC_MAX_BODY_BYTES"] = str(settings.max_body_bytes)
    if settings.session_public_key:
        os.environ["SYNC_SESSION_PUBLIC_KEY"] = settings.session_public_key
    else:
        os.environ.pop("SYNC_SESSION_PUBLIC_KEY", None)


def run_receiver(settings: Settings, host: str, port: int, workers: int = 1) -> None:
    """Serve the receiver until interrupted (blocking)."""
    if workers <= 1:
        uvicorn.run(create_app(settings), host=host, port=port, access_log=False)
        return
    _export_settings(settings)
    uvicorn.run(
        "sync_pipeline.intake.server:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
    )


@dataclass(frozen=True)
class RunningReceiver:
    base_url: str


@contextmanager
def running_receiver(settings: ReceiverSettings) -> Iterator[RunningReceiver]:
    """Serve the receiver on a free 127.0.0.1 port in a background thread (tests, the demo)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings), log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="receiver", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not server.started:
            raise RuntimeError("the receiver did not start (see its log)")
        yield RunningReceiver(base_url=f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(_STARTUP_TIMEOUT_S)
        sock.close()
