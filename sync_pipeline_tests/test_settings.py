"""Upstream presets and explicit URLs in `load_settings` (pure: an explicit env mapping)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync_pipeline.settings import UPSTREAM_PRESETS, SettingsError, load_settings


@pytest.mark.parametrize(
    ("env", "auth_url", "api_url", "embedded"),
    [
        ({}, "http://127.0.0.1:8700", "http://127.0.0.1:8700", True),
        ({"SYNC_UPSTREAM": "simulator"}, "http://127.0.0.1:8700", "http://127.0.0.1:8700", True),
        (
            {"SYNC_UPSTREAM": "humanapi"},
            "https://auth.humanapi.co",
            "https://api.humanapi.co",
            False,
        ),
        # an explicit URL wins over its preset; the other one still comes from the preset
        (
            {"SYNC_UPSTREAM": "humanapi", "SYNC_API_URL": "https://proxy.example/humanapi/"},
            "https://auth.humanapi.co",
            "https://proxy.example/humanapi",
            False,
        ),
        (
            {"SYNC_AUTH_URL": "http://127.0.0.1:9000", "SYNC_API_URL": "http://127.0.0.1:9001"},
            "http://127.0.0.1:9000",
            "http://127.0.0.1:9001",
            False,  # explicit URLs are someone else's upstream, even on the simulator preset
        ),
        # empty means unset, as for every other variable
        (
            {"SYNC_UPSTREAM": "humanapi", "SYNC_AUTH_URL": ""},
            "https://auth.humanapi.co",
            "https://api.humanapi.co",
            False,
        ),
    ],
    ids=[
        "default",
        "simulator",
        "humanapi",
        "explicit-api-wins",
        "explicit-both",
        "empty-is-unset",
    ],
)
def test_upstream_presets_and_explicit_urls(
    env: dict[str, str], auth_url: str, api_url: str, embedded: bool
) -> None:
    settings = load_settings(env)
    assert (settings.auth_url, settings.api_url) == (auth_url, api_url)
    assert settings.uses_embedded_simulator is embedded


def test_humanapi_preset_is_the_production_hosts() -> None:
    assert UPSTREAM_PRESETS["humanapi"] == ("https://auth.humanapi.co", "https://api.humanapi.co")


@pytest.mark.parametrize("name", ["staging", "HumanAPI", " humanapi"])
def test_unknown_preset_is_a_settings_error(name: str) -> None:
    with pytest.raises(SettingsError, match=r"SYNC_UPSTREAM must be one of \['humanapi', "):
        load_settings({"SYNC_UPSTREAM": name})


def test_with_upstream_points_both_urls_at_one_server() -> None:
    settings = load_settings({"SYNC_UPSTREAM": "humanapi"}).with_upstream("http://127.0.0.1:1234")
    assert (settings.auth_url, settings.api_url) == ("http://127.0.0.1:1234",) * 2
    assert settings.uses_embedded_simulator is False


def test_isolation_bounds_have_documented_defaults_and_refuse_nonsense() -> None:
    settings = load_settings({})
    assert (settings.max_response_bytes, settings.max_record_bytes) == (32 * 2**20, 4 * 2**20)
    assert (settings.max_pages, settings.cursor_lag_s, settings.future_tolerance_s) == (
        10_000,
        300.0,
        300.0,
    )
    assert (settings.http_max_pause_s, settings.staged_max_age_s) == (60.0, 86_400.0)
    assert load_settings({"SYNC_MAX_RECORD_BYTES": "65536"}).max_record_bytes == 65536
    for name, value in [
        ("SYNC_MAX_RESPONSE_BYTES", "0"),
        ("SYNC_MAX_PAGES", "-1"),
        ("SYNC_CURSOR_LAG_S", "-5"),
        ("SYNC_HTTP_MAX_PAUSE_S", "inf"),
        ("SYNC_FUTURE_TOLERANCE_S", "nan"),
    ]:
        with pytest.raises(SettingsError, match=name):
            load_settings({name: value})


def test_automation_runs_by_default_and_is_one_of_two_states() -> None:
    assert load_settings({}).automation == "running"
    assert load_settings({"SYNC_AUTOMATION": "stopped"}).automation == "stopped"
    for bad in ("off", "STOPPED", "1"):
        message = f"SYNC_AUTOMATION must be one of ['running', 'stopped'], got '{bad}'"
        with pytest.raises(SettingsError) as refused:
            load_settings({"SYNC_AUTOMATION": bad})
        assert str(refused.value) == message


def test_the_lake_is_local_unless_an_s3_url_names_it(tmp_path: Path) -> None:
    local = load_settings({"SYNC_DATA_DIR": str(tmp_path)}).lake
    assert (local.base, local.is_remote) == (str(tmp_path.resolve() / "lake"), False)
    remote = load_settings(
        {"SYNC_LAKE_URL": "s3://bucket/prefix/", "SYNC_LAKE_ENDPOINT_URL": "http://127.0.0.1:9"}
    ).lake
    assert (remote.base, remote.endpoint_url, remote.is_remote) == (
        "s3://bucket/prefix",
        "http://127.0.0.1:9",
        True,
    )
    with pytest.raises(SettingsError, match="SYNC_LAKE_URL"):
        load_settings({"SYNC_LAKE_URL": "/somewhere/local"})


def test_the_warehouse_location_carries_its_key_and_hides_it(tmp_path: Path) -> None:
    settings = load_settings({"SYNC_DATA_DIR": str(tmp_path), "SYNC_WAREHOUSE_KEY": "k-e-y-123"})
    assert settings.warehouse.path == settings.warehouse_path
    assert settings.warehouse.key == "k-e-y-123"
    assert "k-e-y-123" not in repr(settings.warehouse) and "k-e-y-123" not in repr(settings)
