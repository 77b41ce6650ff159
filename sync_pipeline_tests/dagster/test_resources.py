"""Configuration enters once: resources built from settings given as values, a fake upstream
handed to the record sync, secrets kept out of reprs and out of the Dagster instance."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import httpx
import pyarrow as pa
import pytest

from sync_pipeline.assets.connect import connection_state
from sync_pipeline.assets.records import record_sync
from sync_pipeline.launch import run_job, sync_config, today_partition
from sync_pipeline.resources import (
    FreshnessResource,
    LakeResource,
    UpstreamResource,
    WarehouseResource,
    build_resources,
    run_resources,
)
from sync_pipeline.settings import Settings
from sync_pipeline.upstream.client import UserRef
from sync_pipeline.upstream.endpoints import BY_PATH
from sync_pipeline.warehouse import db
from sync_pipeline.warehouse.location import WarehouseLocation
from sync_pipeline_tests.connect.builders import FITBIT, HUMAN, delivery, sessions_frame
from sync_pipeline_tests.normalize.fixtures import load_records
from sync_pipeline_tests.resources import settings_for
from sync_pipeline_tests.upstream.conftest import API_URL, AUTH_URL, CLIENT_ID, CLIENT_SECRET
from sync_pipeline_tests.upstream.test_client import FakeUpstream, paged

WAREHOUSE_KEY = "warehouse-key-never-shown"
# what the fake upstream serves: these two lists; every other list is empty, no profile
SERVED = {
    "medical/allergies": load_records("medical/allergies.json"),
    "weight/readings": load_records("wellness/weight.json"),
}


def _settings(data_dir: Path) -> Settings:
    return settings_for(
        data_dir,
        SYNC_API_URL=API_URL,
        SYNC_AUTH_URL=AUTH_URL,
        SYNC_CLIENT_ID=CLIENT_ID,
        SYNC_CLIENT_SECRET=CLIENT_SECRET,
        SYNC_HTTP_MAX_ATTEMPTS="1",
    )


def _serve(request: httpx.Request) -> httpx.Response:
    path = request.url.path.removeprefix("/v1/human/")
    if path == "medical/profile":
        return httpx.Response(404, json={"status": 404})
    if "limit" not in request.url.params:  # /sources: no source listed
        return httpx.Response(200, json=[])
    return paged(SERVED.get(path, []))(request)


def fake_upstream(settings: Settings, fake: FakeUpstream) -> UpstreamResource:
    """The upstream resource of `settings`, talking to `fake` instead of the network."""

    class FakeUpstreamResource(UpstreamResource):
        def transport(self) -> httpx.AsyncBaseTransport:
            return fake.transport()

    return FakeUpstreamResource.from_settings(settings, client_secret=settings.client_secret)


@pytest.fixture
def connected(tmp_path: Path) -> Iterator[Path]:
    """A data dir whose warehouse holds one Connect session: USER connected Fitbit."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    session = delivery("d1", "10:00", "connect_source", connected=[FITBIT], current=[FITBIT])
    with db.connect(data_dir / "warehouse.duckdb") as con:
        frame = sessions_frame([session])
        table = pa.Table.from_pandas(frame, preserve_index=False)
        db.insert_absent(con, "connect.session_responses", table, ("delivery_digest",))
    yield data_dir


def test_record_sync_materialises_from_a_fake_upstream(connected: Path) -> None:
    settings = _settings(connected)
    fake = FakeUpstream(_serve)
    environment = dict(os.environ)
    resources = {**build_resources(settings), "upstream": fake_upstream(settings, fake)}
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [connection_state, record_sync],
            resources=resources,
            run_config=sync_config("catchup"),
            instance=instance,
        )
    assert result.success
    assert dict(os.environ) == environment  # nothing was configured through the environment
    assert fake.tokens_issued >= 1
    served = {request.url.path.removeprefix("/v1/human/") for request in fake.data_requests()}
    assert set(SERVED) <= served
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        counts = {
            table: con.execute(f"SELECT count(*), min(human_id) FROM {table}").fetchone()
            for table in ("medical.allergies", "wellness.weight", "medical.medications")
        }
    assert counts["medical.allergies"] == (len(SERVED["medical/allergies"]), HUMAN)
    assert counts["wellness.weight"] == (len(SERVED["weight/readings"]), HUMAN)
    assert counts["medical.medications"] == (0, None)
    metadata = {
        event.asset_key.to_user_string(): event.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
    assert {"medical/allergies", "wellness/weight", "connect/app_users"} <= set(metadata)
    allergies = metadata["medical/allergies"]
    assert allergies["failed_items"].value == 0
    assert allergies["loaded"].value == len(SERVED["medical/allergies"])


def test_resources_follow_settings_given_as_values(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "elsewhere")
    resources = build_resources(settings)
    upstream = resources["upstream"]
    warehouse = resources["warehouse"]
    lake = resources["lake"]
    freshness = resources["freshness"]
    assert isinstance(upstream, UpstreamResource) and isinstance(warehouse, WarehouseResource)
    assert isinstance(lake, LakeResource) and isinstance(freshness, FreshnessResource)
    assert (upstream.api_url, upstream.auth_url, upstream.client_secret) == (
        API_URL,
        AUTH_URL,
        CLIENT_SECRET,
    )
    assert upstream.http_max_attempts == 1
    assert warehouse.location == WarehouseLocation(settings.warehouse_path, None)
    assert warehouse.data_path == settings.data_dir
    assert lake.location == settings.lake
    assert freshness.max_age_hours == settings.freshness_hours


def test_secrets_the_environment_holds_are_bound_as_env_vars(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path, SYNC_CLIENT_SECRET=CLIENT_SECRET, SYNC_WAREHOUSE_KEY=WAREHOUSE_KEY
    )
    env = {"SYNC_CLIENT_SECRET": CLIENT_SECRET, "SYNC_WAREHOUSE_KEY": WAREHOUSE_KEY}
    bound = build_resources(settings, env)
    assert isinstance(bound["upstream"], UpstreamResource)
    assert isinstance(bound["warehouse"], WarehouseResource)
    assert bound["upstream"].client_secret == dg.EnvVar("SYNC_CLIENT_SECRET")
    assert bound["warehouse"].key == dg.EnvVar("SYNC_WAREHOUSE_KEY")
    # a secret the environment does not hold (the demo's published default) is bound as it is
    default = build_resources(settings_for(tmp_path), {})["upstream"]
    assert isinstance(default, UpstreamResource)
    assert default.client_secret == settings_for(tmp_path).client_secret


def test_no_repr_shows_a_secret(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path, SYNC_CLIENT_SECRET=CLIENT_SECRET, SYNC_WAREHOUSE_KEY=WAREHOUSE_KEY
    )
    shown: list[Any] = [
        settings,
        settings.warehouse,
        *build_resources(settings).values(),
        *build_resources(settings, dict(os.environ)).values(),
    ]
    for value in shown:
        for text in (repr(value), str(value)):
            assert CLIENT_SECRET not in text and WAREHOUSE_KEY not in text, text
    assert "http_max_attempts" in repr(build_resources(settings)["upstream"])  # not empty


def _instance_text(home: Path) -> str:
    """Everything the instance's SQLite files hold, snapshots decompressed."""
    texts = []
    for path in home.rglob("*.db"):
        with sqlite3.connect(path) as con:
            for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
                for row in con.execute(f'SELECT * FROM "{table}"'):
                    for value in row:
                        if isinstance(value, bytes):
                            with contextlib.suppress(zlib.error):  # not every blob is zlib
                                value = zlib.decompress(value)
                            value = value.decode("utf-8", "replace")
                        texts.append(str(value))
    return "\n".join(texts)


def test_a_run_the_cli_executes_stores_no_secret_in_the_instance(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "data")
    home = tmp_path / "dagster"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        result = run_job(
            "intake_job", settings=settings, instance=instance, partition_key=today_partition()
        )
        assert result.success
    stored = _instance_text(home)
    assert result.run_id in stored  # the search does see the run
    assert CLIENT_SECRET not in stored


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_upstream_resource_builds_a_client_on_its_transport(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    fake = FakeUpstream(_serve)
    user = UserRef(client_user_id="user@app", human_id=HUMAN)
    async with fake_upstream(settings, fake).client() as client:
        records = [
            record
            async for page in client.iter_pages(user, BY_PATH["medical/allergies"])
            for record in page.records
        ]
    assert len(records) == len(SERVED["medical/allergies"])
    assert fake.tokens_issued == 1


def test_run_resources_replace_one_resource_by_key(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    fake = fake_upstream(settings, FakeUpstream())
    built = run_resources(settings, upstream=fake)
    assert set(built) == {"upstream", "warehouse", "lake", "freshness"}
    assert all(isinstance(r, dg.ResourceDefinition) for r in built.values())
