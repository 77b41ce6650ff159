from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
import stamina

from sync_pipeline.settings import Settings, load_settings

API_URL = "https://api.upstream.test"
AUTH_URL = "https://auth.upstream.test"
CLIENT_ID = "client-id-for-tests"
CLIENT_SECRET = "s3cr3t-never-logged"

MakeSettings = Callable[..., Settings]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def make_settings() -> MakeSettings:
    """Settings for tests: an unreachable upstream by default, any field overridable."""

    def make(**overrides: Any) -> Settings:
        base = load_settings(
            {
                "SYNC_API_URL": API_URL,
                "SYNC_AUTH_URL": AUTH_URL,
                "SYNC_CLIENT_ID": CLIENT_ID,
                "SYNC_CLIENT_SECRET": CLIENT_SECRET,
                "SYNC_HTTP_MAX_ATTEMPTS": "4",
                "SYNC_HTTP_DEADLINE_S": "10",
                "SYNC_HTTP_TIMEOUT_S": "5",
                "SYNC_PAGE_SIZE": "50",
                # bodies in DEBUG logs are off by default (PHI); on here, so the tests prove
                # that an operator who turns them on still never sees a credential
                "SYNC_DEBUG_BODY_LINES": "20",
            }
        )
        return replace(base, **overrides)

    return make


@pytest.fixture
def no_backoff() -> Iterator[None]:
    """stamina without sleeping between attempts; the client's own attempt limit still applies.

    Restored afterwards so no other test runs with retries switched to testing mode.
    """
    with stamina.set_testing(True, attempts=1000, cap=True):
        yield
