"""Serving the intake app: in the foreground (`sync-pipeline receiver`) or in a thread."""

from __future__ import annotations

import functools
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypedDict

import uvicorn
from starlette.applications import Starlette
from uvicorn.supervisors import Multiprocess

from sync_pipeline.intake.app import ReceiverSettings, create_app
from sync_pipeline.intake.protocol import GuardedH11Protocol, with_head_timeout
from sync_pipeline.settings import Settings

_STARTUP_TIMEOUT_S = 10.0
# a request head larger than this is refused by h11 (uvicorn's default, stated here on purpose)
_MAX_HEAD_BYTES = 16 * 1024


def worker_app(settings: Settings) -> Starlette:
    """App factory run in each worker process, on the settings the parent pickled into it
    (`run_receiver`: the worker is spawned with them as an argument, not through the
    environment).

    Also sets the head deadline of the protocol class the workers import by name (uvicorn
    builds each connection's protocol from that class, after loading this app).
    """
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
    # uvicorn.run takes only an import string for workers, whose factory could then read
    # settings from nowhere but the environment. Its supervisor takes the config as it is and
    # pickles it into each spawned worker: the factory with these settings bound travels along,
    # and this process's environment is left as it was.
    config = uvicorn.Config(
        functools.partial(worker_app, settings),
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # by name: worker processes are spawned and import it (worker_app sets it up)
        http="sync_pipeline.intake.protocol:GuardedH11Protocol",
        **_server_options(settings),
    )
    Multiprocess(config, sockets=[config.bind_socket()]).run()


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
