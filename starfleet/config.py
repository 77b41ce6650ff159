"""The simulator's runtime configuration: credentials, delivery targets and fault knobs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from starfleet.world import DEFAULT_NOTIFICATION_API_BASE
from sync_pipeline.settings import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET

RetryAfterFormat = Literal["seconds", "http-date"]


@dataclass(frozen=True)
class SimFaults:
    """Misbehaviour to inject. Every knob is off by default: the simulator then behaves well.

    Rates are probabilities per request (per record for `corrupt_rate`), drawn from an RNG
    seeded with `seed`, so a faulty run is reproducible request for request.
    """

    latency_ms: float = 0.0
    rate_limit_per_s: float | None = None
    retry_after_format: RetryAfterFormat = "seconds"
    error_rate_5xx: float = 0.0
    fail_first_n: int = 0  # the first N requests to each URL path answer 503
    throttle_first_n: int = 0  # the first N requests (any path) answer 429 with Retry-After 1
    fail_paths: tuple[str, ...] = ()  # paths below /v1/human/ (or templates) that answer 500
    drop_rate: float = 0.0  # connection closed with no response at all
    truncate_rate: float = 0.0  # 200 with a body cut off mid-JSON
    corrupt_rate: float = 0.0  # records with unknown fields, wrong types or missing fields
    token_ttl_s: int = 3600
    refused_users: tuple[str, ...] = ()  # client_user_ids whose token request answers 403
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("error_rate_5xx", "drop_rate", "truncate_rate", "corrupt_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        if self.retry_after_format not in ("seconds", "http-date"):
            raise ValueError("retry_after_format must be 'seconds' or 'http-date'")
        if self.rate_limit_per_s is not None and self.rate_limit_per_s <= 0:
            raise ValueError("rate_limit_per_s must be positive")
        if min(self.fail_first_n, self.throttle_first_n, self.latency_ms) < 0:
            raise ValueError("fail_first_n, throttle_first_n and latency_ms must be >= 0")
        if self.token_ttl_s <= 0:
            raise ValueError("token_ttl_s must be positive")

    def updated(self, changes: dict[str, Any]) -> SimFaults:
        """A copy with JSON-ish changes applied (lists become tuples); unknown knobs raise."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown fault knobs: {sorted(unknown)}")
        normalised: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()
        }
        return dataclasses.replace(self, **normalised)

    def as_json(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }


@dataclass
class SimConfig:
    """Mutable on purpose: tests swap `faults` on a running simulator in-process."""

    client_id: str = DEMO_CLIENT_ID
    client_secret: str = DEMO_CLIENT_SECRET
    receiver_url: str | None = None  # where notifications and Connect sessions are posted
    session_private_key_pem: str | None = None  # RS256 key signing Connect session JWTs
    notification_api_base: str = DEFAULT_NOTIFICATION_API_BASE
    faults: SimFaults = field(default_factory=SimFaults)
    seed: int = 0  # seeds advance() when driven over HTTP
