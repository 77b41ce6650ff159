"""The code location's Dagster resources: the upstream, the warehouse and the lake (plus the
freshness limit the checks apply), typed, built from `Settings` once.

Configuration enters once (the README's Configuration section): `definitions.py` reads the
environment when the code location loads and binds these resources; the CLI builds them from
its own `Settings` and hands them to the runs it executes (`launch.run_job`). Nothing reads
settings back from the environment at run time and nothing writes them into it, so a test can
give any asset any upstream (`UpstreamResource.transport`) or data directory.

Secrets (the client secret, the warehouse key, SYNC_WAREHOUSE: a DuckLake catalog may hold a
password) never show in a repr. They stay out of the Dagster instance: the definitions bind
each one the environment holds as `dg.EnvVar` (Dagster stores the variable's name and resolves
it in the process that runs the step; only a secret no variable holds, i.e. the simulator's
published demo secret, is bound as its value), and runs executed in this process get the
resources as built objects (`run_resources`), which have no config to store.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import httpx
from pydantic import Field

from sync_pipeline.settings import LakeLocation, Settings
from sync_pipeline.upstream.client import UpstreamClient
from sync_pipeline.upstream.models import RequestAudit
from sync_pipeline.warehouse import db
from sync_pipeline.warehouse.location import WarehouseLocation, locate

UPSTREAM, WAREHOUSE, LAKE, FRESHNESS = "upstream", "warehouse", "lake", "freshness"
# the variables the definitions bind as dg.EnvVar when the environment holds them
CLIENT_SECRET_ENV = "SYNC_CLIENT_SECRET"
WAREHOUSE_KEY_ENV = "SYNC_WAREHOUSE_KEY"
WAREHOUSE_ENV = "SYNC_WAREHOUSE"  # a DuckLake catalog may hold a password


class UpstreamResource(dg.ConfigurableResource):
    """The aggregator's API: where it is, who we are, and the limits every request and record
    keeps (the meaning of each field is the README's SYNC_* variable of the same name).
    Satisfies `upstream.options.SyncLimits`, so the sync engine takes it as it is."""

    auth_url: str
    api_url: str
    client_id: str
    client_secret: str = Field(repr=False, description="SYNC_CLIENT_SECRET (a dg.EnvVar)")
    http_concurrency: int
    http_timeout_s: float
    http_max_attempts: int
    http_deadline_s: float
    http_max_pause_s: float
    page_size: int
    rate_limit_per_s: float | None
    rate_backend: str | None
    max_response_bytes: int
    max_pages: int
    debug_body_lines: int
    max_record_bytes: int
    future_tolerance_s: float
    cursor_lag_s: float

    def transport(self) -> httpx.AsyncBaseTransport | None:
        """The HTTP transport requests go through; None is the network. A test subclass returns
        an httpx.MockTransport, and every asset using this resource talks to it instead."""
        return None

    def client(self, *, on_request: Callable[[RequestAudit], None] | None = None) -> UpstreamClient:
        """A client for one run (use it as `async with`)."""
        return UpstreamClient(self, transport=self.transport(), on_request=on_request)

    @classmethod
    def from_settings(cls, settings: Settings, *, client_secret: str) -> UpstreamResource:
        fields = {name: getattr(settings, name) for name in cls.model_fields}
        return cls(**{**fields, "client_secret": client_secret})


class WarehouseResource(dg.ConfigurableResource):
    """The data directory (the receiver's landing log lives under it) and the warehouse: the
    DuckDB file in it, or the DuckLake SYNC_WAREHOUSE names (a dg.EnvVar: its catalog may hold
    a password) with its data under `lake_base`; SYNC_WAREHOUSE_KEY (a dg.EnvVar; None:
    plaintext) encrypts either. `location` is the one `WarehouseLocation` both describe."""

    data_dir: str
    path: str
    key: str | None = Field(default=None, repr=False, description="SYNC_WAREHOUSE_KEY")
    lake: str | None = Field(
        default=None, repr=False, description="SYNC_WAREHOUSE (ducklake:<catalog>); None: the file"
    )
    lake_base: str  # the lake's root (LakeLocation.base): a DuckLake's data is under it
    endpoint_url: str | None = None
    # the DuckLake's daily maintenance (SYNC_LAKE_SNAPSHOT_RETENTION_DAYS, _FILE_GRACE_HOURS)
    lake_snapshot_retention_days: float = 7.0
    lake_file_grace_hours: float = 1.0

    @property
    def location(self) -> WarehouseLocation:
        return locate(
            self.lake or None,
            file=Path(self.path),
            lake_base=self.lake_base,
            key=self.key or None,
            endpoint_url=self.endpoint_url,
        )

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @contextmanager
    def connect(
        self, *, read_only: bool = False, writes: Collection[str] | None = None
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """The warehouse, file or DuckLake (`db.connect`). `writes`: the tables the calling
        step owns (tables.registry.written_by); the connection refuses a write to any other."""
        with db.connect(self.location, read_only=read_only, writes=writes) as con:
            yield con

    @classmethod
    def from_settings(
        cls, settings: Settings, *, key: str | None, lake: str | None = None
    ) -> WarehouseResource:
        return cls(
            data_dir=str(settings.data_dir),
            path=str(settings.warehouse_path),
            key=key,
            lake=settings.warehouse_lake if lake is None else lake,
            lake_base=settings.lake.base,
            endpoint_url=settings.lake_endpoint_url,
            lake_snapshot_retention_days=settings.lake_snapshot_retention_days,
            lake_file_grace_hours=settings.lake_file_grace_hours,
        )


class LakeResource(dg.ConfigurableResource):
    """Where the record sync stages Parquet: a local folder, or S3-compatible storage
    (SYNC_LAKE_URL, SYNC_LAKE_ENDPOINT_URL; credentials from the AWS_* environment)."""

    local_dir: str
    url: str | None = None
    endpoint_url: str | None = None
    staged_max_age_s: float

    @property
    def location(self) -> LakeLocation:
        return LakeLocation(
            local_dir=Path(self.local_dir),
            url=self.url,
            endpoint_url=self.endpoint_url,
            staged_max_age_s=self.staged_max_age_s,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> LakeResource:
        lake = settings.lake
        return cls(
            local_dir=str(lake.local_dir),
            url=lake.url,
            endpoint_url=lake.endpoint_url,
            staged_max_age_s=lake.staged_max_age_s,
        )


class FreshnessResource(dg.ConfigurableResource):
    """SYNC_FRESHNESS_HOURS: a record table whose last sync is older fails its freshness check."""

    max_age_hours: float


def build_resources(
    settings: Settings, env: Mapping[str, str] | None = None
) -> dict[str, dg.ConfigurableResource]:
    """The resources of `settings`. With `env`, the environment the settings were read from,
    each secret that environment holds is bound as a dg.EnvVar (its name is what Dagster
    stores; the value is read in the process running the step); a secret it does not hold
    (the simulator's published demo secret, a test's) is bound as it is."""

    def secret(name: str, value: str) -> str:
        return dg.EnvVar(name) if env is not None and env.get(name) == value else value

    key, lake = settings.warehouse_key, settings.warehouse_lake
    return {
        UPSTREAM: UpstreamResource.from_settings(
            settings, client_secret=secret(CLIENT_SECRET_ENV, settings.client_secret)
        ),
        WAREHOUSE: WarehouseResource.from_settings(
            settings,
            key=None if key is None else secret(WAREHOUSE_KEY_ENV, key),
            lake=None if lake is None else secret(WAREHOUSE_ENV, lake),
        ),
        LAKE: LakeResource.from_settings(settings),
        FRESHNESS: FreshnessResource(max_age_hours=settings.freshness_hours),
    }


def run_resources(
    settings: Settings, **replace: dg.ConfigurableResource
) -> dict[str, dg.ResourceDefinition]:
    """Resources for a run executed in this process (`execute_in_process`), from `settings`
    (any of them replaced by keyword, e.g. `upstream=` a fake). Handed over as built objects:
    a hardcoded resource has no config schema, so no value of it (the client secret least of
    all) is written into the run's snapshot in the Dagster instance."""
    built: dict[str, Any] = {**build_resources(settings), **replace}
    return {key: dg.ResourceDefinition.hardcoded_resource(value) for key, value in built.items()}
