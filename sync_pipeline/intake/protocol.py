"""uvicorn's h11 protocol with a deadline on every request head.

Why a small guard rather than another server (checked against uvicorn 0.54's source): uvicorn
arms its only timer, `timeout_keep_alive`, after a response is complete and cancels it on the
next byte, so a client that connects and sends half a header line is never timed out (no
`timeout_*` setting covers it); `h11_max_incomplete_event_size` bounds the head's *size* and
`limit_concurrency` the number of connections, both of which we use. Hypercorn's
`read_timeout` is per read (a byte now and then keeps a head open forever) and it has no
concurrency limit; Granian's hyper-based `http1_header_read_timeout` is the right rule but
would replace the whole server (its own process model, no in-thread server for the tests and
the demo). Body read timeouts are the app's job (`app.read_capped_body`), where ASGI sees
them.

The deadline: a connection must deliver a complete request head within `head_timeout_s` of
connecting, and the next one within `head_timeout_s` of the previous response; otherwise it is
closed. A request whose head arrived is never cut by this timer.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.protocols.http.h11_impl import H11Protocol

DEFAULT_HEAD_TIMEOUT_S = 10.0


class GuardedH11Protocol(H11Protocol):
    """H11Protocol + the head deadline (see the module docstring)."""

    # a class attribute because uvicorn builds the protocol from its class (by import string
    # in worker processes); `with_head_timeout` makes a subclass for one server
    head_timeout_s: ClassVar[float] = DEFAULT_HEAD_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def _arm_head_deadline(self) -> None:
        self._cancel_head_deadline()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_deadline_passed)

    def _cancel_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _waiting_for_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _head_deadline_passed(self) -> None:
        self._head_timer = None
        if self._waiting_for_head() and not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._waiting_for_head():
            self._cancel_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)


def with_head_timeout(seconds: float) -> type[GuardedH11Protocol]:
    """The guarded protocol with its own deadline (for one in-process server)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"head_timeout_s": seconds})
