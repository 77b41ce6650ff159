"""Serving the intake app: in the foreground (`sync-pipeline receiver`) or in a thread."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypedDict

import uvicorn
from starlette.applications import Starlette

from sync_pipeline.intake.app import ReceiverSettings, create_app
from sync_pipeline.intake.protocol import GuardedH11Protocol, with_head_timeout
from sync_pipeline.settings import Settings, load_settings

_STARTUP_TIMEOUT_S = 10.0
# a request head larger than this is refused by h11 (uvicorn's default, stated here on purpose)
_MAX_HEAD_BYTES = 16 * 1024


def create_app_from_env() -> Starlette:
    """App factory for worker processes, which can only rebuild settings from the environment.

    Also sets the head deadline of the protocol class the workers import by name (uvicorn
    builds each connection's protocol from that class, after loading this app).
    """
    settings = load_settings()
    GuardedH11Protocol.head_timeout_s = settings.receiver_header_timeout_s
    return create_app(settings)


class _ServerOptions(TypedDict):
    limit_concurrency: int
    h11_max_incomplete_event_size: int
    access_log: bool


def _server_options(settings: ReceiverSettings) -> _ServerOptions:
    """What bounds the server itself: connections (uvicorn answers 503 above the limit) and
    the size of a request head; the head deadline is the protocol's (intake/protocol.py)."""
    return {
        "limit_concurrency": settings.receiver_max_connections,
        "h11_max_incomplete_event_size": _MAX_HEAD_BYTES,
        "access_log": False,
    }


def _export_settings(settings: Settings) -> None:
    # Worker processes are spawned and read settings from the environment: make it say what
    # the caller's settings say (a no-op when those came from this environment).
    os.environ["SYNC_DATA_DIR"] = str(settings.data_dir)
    os.environ["SYNC_CLIENT_SECRET"] = settings.client_secret
    os.environ["SYNC_SIGNATURE_TOLERANCE_S"] = str(settings.signature_tolerance_s)
    os.environ["SYNC_MAX_BODY_BYTES"] = str(settings.max_body_bytes)
    for name, value in {
        "SYNC_RECEIVER_MAX_INFLIGHT": settings.receiver_max_inflight,
        "SYNC_RECEIVER_MAX_CONNECTIONS": settings.receiver_max_connections,
        "SYNC_RECEIVER_HEADER_TIMEOUT_S": settings.receiver_header_timeout_s,
        "SYNC_RECEIVER_BODY_TIMEOUT_S": settings.receiver_body_timeout_s,
        "SYNC_SESSION_MAX_TOKEN_LIFETIME_S": settings.session_max_token_lifetime_s,
        "SYNC_LANDING_MIN_FREE_BYTES": settings.landing_min_free_bytes,
        "SYNC_LANDING_MIN_FREE_INODES": settings.landing_min_free_inodes,
    }.items():
        os.environ[name] = str(value)
    if settings.session_public_key:
        os.environ["SYNC_SESSION_PUBLIC_KEY"] = settings.session_public_key
    else:
        os.environ.pop("SYNC_SESSION_PUBLIC_KEY", None)


def run_receiver(settings: Settings, host: str, port: int, workers: int = 1) -> None:
    """Serve the receiver until interrupted (blocking)."""
    if workers <= 1:
        uvicorn.run(
            create_app(settings),
            host=host,
            port=port,
            http=with_head_timeout(settings.receiver_header_timeout_s),
            **_server_options(settings),
        )
        return
    _export_settings(settings)
    uvicorn.run(
        "sync_pipeline.intake.server:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # by name: worker processes are spawned and import it (create_app_from_env sets it up)
        http="sync_pipeline.intake.protocol:GuardedH11Protocol",
        **_server_options(settings),
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
    config = uvicorn.Config(
        create_app(settings),
        log_level="warning",
        http=with_head_timeout(settings.receiver_header_timeout_s),
        **_server_options(settings),
    )
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
