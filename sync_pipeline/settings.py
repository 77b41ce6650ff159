"""Environment → typed settings. Every SYNC_* variable lives here, with its default.

Read once: when a command starts, or when the code location's definitions load (which turns
them into Dagster resources, sync_pipeline/resources.py). Nothing reads them back from the
environment at run time and nothing writes them into it, so a test or a command hands any
run the settings it wants as values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal, cast, get_args

from sync_pipeline.warehouse.location import WarehouseLocation, locate
from sync_pipeline.warehouse.location import parse as parse_warehouse

# Named upstream presets (SYNC_UPSTREAM); explicit SYNC_API_URL / SYNC_AUTH_URL win over them.
UPSTREAM_PRESETS: dict[str, tuple[str, str]] = {
    # (auth URL, data API URL)
    "humanapi": ("https://auth.humanapi.co", "https://api.humanapi.co"),
    "simulator": ("http://127.0.0.1:8700", "http://127.0.0.1:8700"),
}

# Credentials the bundled simulator accepts by default; never valid anywhere else.
DEMO_CLIENT_ID = "starfleet-demo-client"
DEMO_CLIENT_SECRET = "starfleet-demo-secret"


MIB = 1024 * 1024
# Intake partitions start this many days back unless SYNC_PARTITIONS_START says otherwise: the
# UI then counts the days that can hold data, not two years of empty partitions.
DEFAULT_PARTITION_DAYS = 30


def _default_partitions_start() -> date:
    return datetime.now(UTC).date() - timedelta(days=DEFAULT_PARTITION_DAYS)


# SYNC_AUTOMATION: the schedules' and sensors' state when the code location first loads
# ("running": they act as soon as a Dagster daemon runs; "stopped": an operator turns them on)
Automation = Literal["running", "stopped"]


class SettingsError(ValueError):
    """A configuration value is missing or malformed."""


@dataclass(frozen=True)
class LakeLocation:
    """Where staged and committed Parquet lives: the local folder, or an object store."""

    local_dir: Path
    # s3://bucket/prefix (SYNC_LAKE_URL); None keeps the lake in `local_dir`
    url: str | None = None
    # the S3 endpoint of a non-AWS store (SYNC_LAKE_ENDPOINT_URL); None: AWS
    endpoint_url: str | None = None
    # staged files of runs that never committed are deleted once older than this
    staged_max_age_s: float = 86_400.0

    @property
    def base(self) -> str:
        """The lake's root: the object-store URL, else the local folder."""
        return (self.url or "").rstrip("/") or str(self.local_dir)

    @property
    def is_remote(self) -> bool:
        return bool(self.url)


@dataclass(frozen=True)
class Settings:
    auth_url: str
    api_url: str
    client_id: str
    # secrets and keys never show in a repr, so never in a traceback, a log or the UI
    client_secret: str = field(repr=False)
    data_dir: Path
    session_public_key: str | None = field(repr=False)
    receiver_host: str
    receiver_port: int
    signature_tolerance_s: int
    max_body_bytes: int
    http_concurrency: int
    http_timeout_s: float
    http_max_attempts: int
    http_deadline_s: float
    page_size: int
    rate_limit_per_s: float | None
    debug_body_lines: int
    # redis://host:port/db of the request-rate budget shared by every worker process
    # (SYNC_RATE_BACKEND); None keeps the budget in each process
    rate_backend: str | None
    # True when neither URL nor a non-simulator preset was set: commands may start the
    # bundled simulator themselves.
    uses_embedded_simulator: bool
    # SYNC_WAREHOUSE_KEY: when set, the DuckDB warehouse is encrypted at rest with it (ASCII:
    # DuckDB's key derivation takes it as text). None keeps the file in plaintext.
    warehouse_key: str | None = field(default=None, repr=False)
    # SYNC_WAREHOUSE (canonical `ducklake:<catalog>`): a DuckLake instead of the single file;
    # None keeps the file <data_dir>/warehouse.duckdb. The catalog may hold a password: no repr.
    warehouse_lake: str | None = field(default=None, repr=False)
    # SYNC_FRESHNESS_HOURS: a record table whose last sync is older fails its freshness check
    freshness_hours: float = 26.0
    # SYNC_PARTITIONS_START: the first day of the daily intake partitions
    partitions_start: date = field(default_factory=lambda: _default_partitions_start())
    # SYNC_AUTOMATION: whether schedules and sensors start running ("running") or stopped
    automation: Automation = "running"
    # receiver bounds (see the README's configuration table)
    receiver_max_inflight: int = 64
    receiver_max_connections: int = 1000
    receiver_header_timeout_s: float = 10.0
    receiver_body_timeout_s: float = 10.0
    session_max_token_lifetime_s: int = 86400
    landing_min_free_bytes: int = 64 * 1024 * 1024
    landing_min_free_inodes: int = 1000
    # Containment bounds of the sync path (issue 13): what one record, response, clock or wait
    # may cost at most. Defaults here so code building Settings by hand keeps working.
    # SYNC_MAX_RESPONSE_BYTES: decompressed bytes read from one response; beyond it the
    # (user, endpoint) item fails. Bounds the memory one page can take.
    max_response_bytes: int = 32 * 2**20
    # SYNC_MAX_RECORD_BYTES: one record's JSON size; a larger record is rejected (id, size)
    # and its raw is not stored whole.
    max_record_bytes: int = 4 * 2**20
    # SYNC_MAX_PAGES: pages one (user, endpoint) list may take, however its Link chain runs.
    max_pages: int = 10_000
    # SYNC_CURSOR_LAG_S: a catch-up cursor stays this far behind the upstream's clock and the
    # newest record seen, so each catch-up re-reads that trailing window.
    cursor_lag_s: float = 300.0
    # SYNC_FUTURE_TOLERANCE_S: an updatedAt this far past the upstream's clock is flagged.
    future_tolerance_s: float = 300.0
    # SYNC_HTTP_MAX_PAUSE_S: longest pause one response (429 Retry-After, X-RateLimit-Reset)
    # may impose on every request of the run.
    http_max_pause_s: float = 60.0
    # SYNC_STAGED_MAX_AGE_S: staged Parquet of a run that never committed is deleted by a later
    # run once older than this (a run's own staged files go when it fails).
    staged_max_age_s: float = 86_400.0
    # DuckLake maintenance (assets/maintenance.py; no effect on the single file):
    # SYNC_LAKE_SNAPSHOT_RETENTION_DAYS: snapshots older than this are expired (time travel
    # reaches back this far); SYNC_LAKE_FILE_GRACE_HOURS: unreferenced data files are deleted
    # once unreferenced this long (readers of an expired snapshot may still be scanning them).
    lake_snapshot_retention_days: float = 7.0
    lake_file_grace_hours: float = 1.0
    # SYNC_LAKE_URL / SYNC_LAKE_ENDPOINT_URL: the lake on S3-compatible storage (None: local)
    lake_url: str | None = None
    lake_endpoint_url: str | None = None

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    @property
    def warehouse(self) -> WarehouseLocation:
        """What db.connect opens: the DuckLake named by SYNC_WAREHOUSE (data under the lake),
        else the file; with SYNC_WAREHOUSE_KEY either is encrypted."""
        return locate(
            self.warehouse_lake,
            file=self.warehouse_path,
            lake_base=self.lake.base,
            key=self.warehouse_key,
            endpoint_url=self.lake_endpoint_url,
        )

    @property
    def lake_dir(self) -> Path:
        return self.data_dir / "lake"

    @property
    def lake(self) -> LakeLocation:
        return LakeLocation(
            local_dir=self.lake_dir,
            url=self.lake_url,
            endpoint_url=self.lake_endpoint_url,
            staged_max_age_s=self.staged_max_age_s,
        )

    @property
    def landing_dir(self) -> Path:
        return self.data_dir / "landing"

    @property
    def dagster_home(self) -> Path:
        return self.data_dir / "dagster"

    def with_upstream(self, base_url: str) -> Settings:
        """The same settings pointed at one base URL serving both auth and data (the simulator)."""
        from dataclasses import replace

        return replace(self, auth_url=base_url, api_url=base_url, uses_embedded_simulator=False)


def _number(
    env: Mapping[str, str],
    name: str,
    default: float | None,
    *,
    low: float,
    high: float,
    integer: bool = False,
) -> float | None:
    """One numeric variable, range-checked here at the edge so a bad value stops the command
    with its name (exit 2) instead of turning into surprising behaviour later."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    kind = "an integer" if integer else "a number"
    try:
        value = int(raw) if integer else float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be {kind}, got {raw!r}") from exc
    if not low <= value <= high or value != value:  # value != value: NaN
        shown = f"{low:g} and {high:g}"
        raise SettingsError(f"{name} must be between {shown}, got {raw!r}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    return int(_number(env, name, default, low=low, high=high, integer=True))  # type: ignore[arg-type]


def _float(env: Mapping[str, str], name: str, default: float, *, low: float, high: float) -> float:
    return float(_number(env, name, default, low=low, high=high))  # type: ignore[arg-type]


def _optional_float(env: Mapping[str, str], name: str, *, low: float, high: float) -> float | None:
    return _number(env, name, None, low=low, high=high)


def _partitions_start(env: Mapping[str, str], today: date) -> date:
    raw = (env.get("SYNC_PARTITIONS_START") or "").strip()
    if not raw:
        return today - timedelta(days=DEFAULT_PARTITION_DAYS)
    try:
        start = date.fromisoformat(raw)
    except ValueError as exc:
        raise SettingsError(
            f"SYNC_PARTITIONS_START must be a date (YYYY-MM-DD), got {raw!r}"
        ) from exc
    if start > today:
        raise SettingsError(f"SYNC_PARTITIONS_START must not be in the future, got {raw!r}")
    return start


def _warehouse_key(env: Mapping[str, str]) -> str | None:
    raw = env.get("SYNC_WAREHOUSE_KEY") or None
    if raw is not None and not raw.isascii():
        raise SettingsError("SYNC_WAREHOUSE_KEY must be ASCII (DuckDB takes the key as text)")
    return raw


def _warehouse_lake(env: Mapping[str, str]) -> str | None:
    try:
        return parse_warehouse(env.get("SYNC_WAREHOUSE", ""))
    except ValueError as exc:  # its message masks any password
        raise SettingsError(str(exc)) from None


def _rate_backend(env: Mapping[str, str]) -> str | None:
    raw = (env.get("SYNC_RATE_BACKEND") or "").strip()
    if not raw:
        return None
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError(f"SYNC_RATE_BACKEND must be a redis:// URL, got {raw!r}")
    return raw


def _automation(env: Mapping[str, str]) -> Automation:
    raw = (env.get("SYNC_AUTOMATION") or "running").strip()
    choices = get_args(Automation)
    if raw not in choices:
        raise SettingsError(f"SYNC_AUTOMATION must be one of {list(choices)}, got {raw!r}")
    return cast(Automation, raw)


def _lake_url(env: Mapping[str, str]) -> str | None:
    raw = (env.get("SYNC_LAKE_URL") or "").strip().rstrip("/")
    if not raw:
        return None
    if not raw.startswith("s3://"):
        raise SettingsError(f"SYNC_LAKE_URL must be an s3:// URL, got {raw!r}")
    return raw


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from the environment (and an optional .env in the working directory)."""
    if env is None:
        from dotenv import load_dotenv

        load_dotenv(override=False)
        env = os.environ
    preset_name = env.get("SYNC_UPSTREAM", "simulator")
    if preset_name not in UPSTREAM_PRESETS:
        raise SettingsError(
            f"SYNC_UPSTREAM must be one of {sorted(UPSTREAM_PRESETS)}, got {preset_name!r}"
        )
    preset_auth, preset_api = UPSTREAM_PRESETS[preset_name]
    auth_url = (env.get("SYNC_AUTH_URL") or preset_auth).rstrip("/")
    api_url = (env.get("SYNC_API_URL") or preset_api).rstrip("/")
    embedded = (
        preset_name == "simulator" and not env.get("SYNC_AUTH_URL") and not env.get("SYNC_API_URL")
    )
    # 500 is the upstream's largest page
    page_size = _int(env, "SYNC_PAGE_SIZE", 500, low=1, high=500)
    data_dir = Path(env.get("SYNC_DATA_DIR", "data")).resolve()
    return Settings(
        auth_url=auth_url,
        api_url=api_url,
        client_id=env.get("SYNC_CLIENT_ID", DEMO_CLIENT_ID),
        client_secret=env.get("SYNC_CLIENT_SECRET", DEMO_CLIENT_SECRET),
        data_dir=data_dir,
        session_public_key=env.get("SYNC_SESSION_PUBLIC_KEY") or None,
        receiver_host=env.get("SYNC_RECEIVER_HOST", "127.0.0.1"),
        receiver_port=_int(env, "SYNC_RECEIVER_PORT", 8701, low=1, high=65535),
        signature_tolerance_s=_int(env, "SYNC_SIGNATURE_TOLERANCE_S", 300, low=1, high=86_400),
        max_body_bytes=_int(env, "SYNC_MAX_BODY_BYTES", 1024 * 1024, low=1, high=256 * MIB),
        http_concurrency=_int(env, "SYNC_HTTP_CONCURRENCY", 16, low=1, high=256),
        http_timeout_s=_float(env, "SYNC_HTTP_TIMEOUT_S", 30.0, low=0.1, high=3600),
        http_max_attempts=_int(env, "SYNC_HTTP_MAX_ATTEMPTS", 6, low=1, high=20),
        http_deadline_s=_float(env, "SYNC_HTTP_DEADLINE_S", 120.0, low=0.1, high=86_400),
        page_size=page_size,
        rate_limit_per_s=_optional_float(env, "SYNC_RATE_LIMIT_PER_S", low=0.01, high=100_000),
        debug_body_lines=_int(env, "SYNC_DEBUG_BODY_LINES", 0, low=0, high=10_000),
        rate_backend=_rate_backend(env),
        uses_embedded_simulator=embedded,
        warehouse_key=_warehouse_key(env),
        warehouse_lake=_warehouse_lake(env),
        freshness_hours=_float(env, "SYNC_FRESHNESS_HOURS", 26.0, low=0.1, high=24 * 365),
        partitions_start=_partitions_start(env, datetime.now(UTC).date()),
        automation=_automation(env),
        receiver_max_inflight=_int(env, "SYNC_RECEIVER_MAX_INFLIGHT", 64, low=1, high=10_000),
        receiver_max_connections=_int(
            env, "SYNC_RECEIVER_MAX_CONNECTIONS", 1000, low=2, high=100_000
        ),
        receiver_header_timeout_s=_float(
            env, "SYNC_RECEIVER_HEADER_TIMEOUT_S", 10.0, low=0.1, high=3600
        ),
        receiver_body_timeout_s=_float(
            env, "SYNC_RECEIVER_BODY_TIMEOUT_S", 10.0, low=0.1, high=3600
        ),
        session_max_token_lifetime_s=_int(
            env, "SYNC_SESSION_MAX_TOKEN_LIFETIME_S", 86400, low=1, high=366 * 86400
        ),
        landing_min_free_bytes=_int(
            env, "SYNC_LANDING_MIN_FREE_BYTES", 64 * MIB, low=0, high=2**50
        ),
        landing_min_free_inodes=_int(env, "SYNC_LANDING_MIN_FREE_INODES", 1000, low=0, high=2**40),
        max_response_bytes=_int(env, "SYNC_MAX_RESPONSE_BYTES", 32 * MIB, low=1024, high=2**34),
        max_record_bytes=_int(env, "SYNC_MAX_RECORD_BYTES", 4 * MIB, low=1024, high=2**34),
        max_pages=_int(env, "SYNC_MAX_PAGES", 10_000, low=1, high=10_000_000),
        cursor_lag_s=_float(env, "SYNC_CURSOR_LAG_S", 300.0, low=0, high=7 * 86_400),
        future_tolerance_s=_float(env, "SYNC_FUTURE_TOLERANCE_S", 300.0, low=0, high=365 * 86_400),
        http_max_pause_s=_float(env, "SYNC_HTTP_MAX_PAUSE_S", 60.0, low=0, high=86_400),
        staged_max_age_s=_float(env, "SYNC_STAGED_MAX_AGE_S", 86_400.0, low=0, high=365 * 86_400),
        lake_snapshot_retention_days=_float(
            env, "SYNC_LAKE_SNAPSHOT_RETENTION_DAYS", 7.0, low=0, high=36_500
        ),
        lake_file_grace_hours=_float(env, "SYNC_LAKE_FILE_GRACE_HOURS", 1.0, low=0, high=8_760),
        lake_url=_lake_url(env),
        lake_endpoint_url=(env.get("SYNC_LAKE_ENDPOINT_URL") or "").strip() or None,
    )
