"""The operator's view: the Dagster webserver on this code location, in headless Chromium.

Chromium is Debian's package (.ci/ui-deps installs it); playwright only drives it, its own
browser download does not work offline. Without Chromium this test fails: CI must install it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from playwright.sync_api import Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from sync_pipeline_tests.ui.conftest import SyncedData

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
# without the background-networking flags Chromium tries to reach the internet and stalls
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STARTUP_TIMEOUT_S = 120  # the webserver loads the code location in a subprocess
UI_TIMEOUT_MS = 60_000
# a few assets of every group the code location defines
ASSETS_BY_GROUP = {
    "analytics": ("observations", "coverage"),
    "connect": ("users", "connection_history"),
    "intake": ("notifications", "session_responses"),
    "medical": ("test_results", "test_result_components"),
    "ops": ("notification_status", "sync_state"),
    "wellness": ("activities", "blood_pressure"),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Debian's chromium is not installed: run .ci/ui-deps")
    return path


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the webserver and the code server it started (its own process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def webserver(synced_data: SyncedData, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`dagster-webserver -w workspace.yaml` from the repo root on the synced instance."""
    config = yaml.safe_load((synced_data.dagster_home / "dagster.yaml").read_text())
    assert config["telemetry"] == {"enabled": False}  # no network here: no telemetry
    port = _free_port()
    log = tmp_path_factory.mktemp("webserver") / "webserver.log"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(synced_data.dagster_home),
        "SYNC_DATA_DIR": str(synced_data.data_dir),
    }
    command = [sys.executable, "-m", "dagster_webserver", "-w", "workspace.yaml"]
    command += ["-h", "127.0.0.1", "-p", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one group: the code server dies with it
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"webserver exited {process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{base_url}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"webserver not up in {STARTUP_TIMEOUT_S}s:\n{log.read_text()}")
            time.sleep(0.5)
        yield base_url
    finally:
        _stop(process)


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    executable = _chromium()
    with sync_playwright() as p:
        # a fresh profile directory per test (playwright passes it as --user-data-dir)
        context = p.chromium.launch_persistent_context(
            tmp_path / "profile",
            executable_path=executable,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1600, "height": 1000},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            yield page
        finally:
            context.close()


def _skip_community_dialog(page: Page) -> None:
    """A new instance first asks to join the Dagster community; answer it if it is shown."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=5_000)
    except PlaywrightTimeoutError:  # the dialog is optional: absent is fine
        return
    skip.click()


def test_asset_graph_lists_our_assets(webserver: str, page: Page, tmp_path: Path) -> None:
    page.goto(f"{webserver}/asset-groups")
    _skip_community_dialog(page)
    # the graph shows one node per group (collapsed: there are ~40 assets) ...
    for group in ASSETS_BY_GROUP:
        expect(page.get_by_text(group, exact=True).first).to_be_visible()
    # ... and its sidebar lists each group's assets once the group is unfolded. One group at a
    # time: the sidebar renders only the rows near its viewport, and all groups unfolded are
    # more rows than that. The sidebar's carets come before any other, in group order.
    carets = page.locator('[aria-label="arrow_drop_down"]')
    for index, assets in enumerate(ASSETS_BY_GROUP.values()):
        carets.nth(index).click()
        for asset in assets:
            expect(page.get_by_text(asset, exact=True).first).to_be_visible()
        page.screenshot(path=str(tmp_path / f"asset-graph-{index}.png"))
        carets.nth(index).click()


def test_finished_run_is_visible(
    webserver: str, page: Page, synced_data: SyncedData, tmp_path: Path
) -> None:
    page.goto(f"{webserver}/runs")
    _skip_community_dialog(page)
    # the runs list names a run by the first 8 characters of its id; its rows are plain divs,
    # so the row is the innermost element holding both the id and the job's name
    run_link = page.get_by_text(synced_data.catchup_run_id[:8], exact=True)
    expect(run_link).to_be_visible()
    row = page.locator("div").filter(has=run_link).filter(has_text="catchup_sync_job").last
    expect(row).to_contain_text("Success")
    page.screenshot(path=str(tmp_path / "runs.png"))
