"""`sync-pipeline` as an operator runs it: real subprocesses on free loopback ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

_STARTUP_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """This environment without any SYNC_* variable, plus a private data dir and `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    return {**env, "SYNC_DATA_DIR": str(data_dir), **extra}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "sync_pipeline.cli", *args]


@contextmanager
def serving(args: list[str], env: Mapping[str, str], ready_url: str) -> Iterator[str]:
    """Start a serving command, wait until `ready_url` answers 200; always stop it afterwards."""
    process = subprocess.Popen(
        args, env=dict(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                stderr = process.stderr.read().decode() if process.stderr else ""
                pytest.fail(f"{args[3:]} exited with {process.returncode}:\n{stderr}")
            try:
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{args[3:]} did not answer {ready_url} within {_STARTUP_TIMEOUT_S} s")
            time.sleep(0.1)
        yield ready_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
        if process.stderr is not None:
            process.stderr.close()


def public_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_help_lists_every_command(tmp_path: Path) -> None:
    done = subprocess.run(
        cli("--help"), env=cli_env(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    commands = done.stdout.split("{", 1)[1].split("}", 1)[0].split(",")
    assert sorted(commands) == ["bench", "demo", "receiver", "simulator", "sync"]
    for command in commands:
        assert f"    {command} " in done.stdout  # each has a help line


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SYNC_PAGE_SIZE", "9999", "SYNC_PAGE_SIZE must be between 1 and 500, got '9999'"),
        ("SYNC_HTTP_CONCURRENCY", "many", "SYNC_HTTP_CONCURRENCY must be an integer, got 'many'"),
        ("SYNC_HTTP_CONCURRENCY", "0", "SYNC_HTTP_CONCURRENCY must be between 1 and 256, got '0'"),
        (
            "SYNC_HTTP_CONCURRENCY",
            "-3",
            "SYNC_HTTP_CONCURRENCY must be between 1 and 256, got '-3'",
        ),
        (
            "SYNC_RECEIVER_PORT",
            "99999",
            "SYNC_RECEIVER_PORT must be between 1 and 65535, got '99999'",
        ),
        (
            "SYNC_HTTP_DEADLINE_S",
            "0",
            "SYNC_HTTP_DEADLINE_S must be between 0.1 and 86400, got '0'",
        ),
        (
            "SYNC_HTTP_TIMEOUT_S",
            "nan",
            "SYNC_HTTP_TIMEOUT_S must be between 0.1 and 3600, got 'nan'",
        ),
        (
            "SYNC_PARTITIONS_START",
            "2999-01-01",
            "SYNC_PARTITIONS_START must not be in the future, got '2999-01-01'",
        ),
        (
            "SYNC_UPSTREAM",
            "staging",
            "SYNC_UPSTREAM must be one of ['humanapi', 'simulator'], got 'staging'",
        ),
        (
            "SYNC_AUTOMATION",
            "off",
            "SYNC_AUTOMATION must be one of ['running', 'stopped'], got 'off'",
        ),
    ],
    ids=[
        "page-size-too-big",
        "concurrency-not-a-number",
        "concurrency-zero",
        "concurrency-negative",
        "port-out-of-range",
        "deadline-zero",
        "timeout-nan",
        "partitions-in-the-future",
        "unknown-preset",
        "unknown-automation-state",
    ],
)
def test_a_bad_setting_exits_2_with_a_clear_message(
    variable: str, value: str, message: str, tmp_path: Path
) -> None:
    # `receiver` would serve forever if the setting were accepted: the timeout catches that
    env = cli_env(tmp_path, **{variable: value})
    port = str(free_port())
    done = subprocess.run(
        cli("receiver", "--port", port), env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"configuration error: {message}"
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["receiver", "--port", "99999"],
            "argument --port: must be between 1 and 65535, got 99999",
        ),
        (["receiver", "--workers", "0"], "argument --workers: must be between 1 and 64, got 0"),
        (["demo", "--users", "0"], "argument --users: must be between 1 and 1000, got 0"),
        (["demo", "--users", "many"], "argument --users: 'many' is not an integer"),
        (["simulator", "--port", "-1"], "argument --port: must be between 1 and 65535, got -1"),
    ],
    ids=["receiver-port", "receiver-workers", "demo-users-zero", "demo-users-text", "sim-port"],
)
def test_bad_arguments_exit_2_before_anything_changes(
    args: list[str], message: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    warehouse = data / "warehouse.duckdb"
    warehouse.write_bytes(b"somebody's warehouse")
    done = subprocess.run(
        cli(*args), env=cli_env(data), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert warehouse.read_bytes() == b"somebody's warehouse"
    assert sorted(p.name for p in data.iterdir()) == ["warehouse.duckdb"]


def test_the_console_entry_ends_with_mains_code_its_output_flushed_and_atexit_run(
    tmp_path: Path,
) -> None:
    """cli.entry (the console script) skips the interpreter's teardown: what main printed
    without a newline, and what atexit holds, must not be lost with it."""
    marker = tmp_path / "atexit-ran"
    script = f"""
import atexit, sys
from pathlib import Path
from sync_pipeline import cli
atexit.register(Path({str(marker)!r}).write_text, "ran")
def main():
    print("printed, no newline", end="")
    sys.stderr.write("warned")
    return 3
cli.main = main
cli.entry()
raise AssertionError("entry returned")
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout, done.stderr) == (3, "printed, no newline", "warned")
    assert marker.read_text() == "ran"


def test_the_console_script_is_the_entry() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"] == {"sync-pipeline": "sync_pipeline.cli:entry"}


def test_demo_never_replaces_a_warehouse_it_did_not_create(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "lake").mkdir(parents=True)
    warehouse = data / "warehouse.duckdb"
    warehouse.write_bytes(b"somebody's warehouse")
    done = subprocess.run(
        cli("demo"), env=cli_env(data), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "holds data the demo did not create (warehouse.duckdb, lake)" in done.stdout
    assert warehouse.read_bytes() == b"somebody's warehouse"
    assert sorted(p.name for p in data.iterdir()) == ["lake", "warehouse.duckdb"]


@pytest.mark.slow
def test_receiver_command_answers_healthz(tmp_path: Path) -> None:
    port = free_port()
    env = cli_env(tmp_path / "data", SYNC_SESSION_PUBLIC_KEY=public_key_pem())
    args = cli("receiver", "--host", "127.0.0.1", "--port", str(port))
    with serving(args, env, f"http://127.0.0.1:{port}/healthz") as url:
        assert httpx.get(url, timeout=5).status_code == 200
        # it is the intake app: an unsigned delivery is refused, not landed
        refused = httpx.post(f"http://127.0.0.1:{port}/notifications", content=b"[]", timeout=5)
        assert refused.status_code in (400, 401)
