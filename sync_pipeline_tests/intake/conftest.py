import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sync_pipeline.intake.server import RunningReceiver, running_receiver
from sync_pipeline.intake.signature import sign
from sync_pipeline.settings import Settings, load_settings

SECRET = "itsfullofsecrets"


@dataclasses.dataclass(frozen=True)
class KeyPair:
    private: rsa.RSAPrivateKey
    public_pem: str


def make_keypair() -> KeyPair:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(private, pem.decode("ascii"))


@pytest.fixture(scope="session")
def keys() -> KeyPair:
    return make_keypair()


@pytest.fixture(scope="session")
def other_keys() -> KeyPair:
    return make_keypair()


@pytest.fixture
def settings(tmp_path: Path, keys: KeyPair) -> Settings:
    return dataclasses.replace(
        load_settings({}),
        data_dir=tmp_path / "data",
        client_secret=SECRET,
        session_public_key=keys.public_pem,
        max_body_bytes=64 * 1024,
    )


@pytest.fixture
def receiver(settings: Settings) -> Iterator[RunningReceiver]:
    with running_receiver(settings) as running:
        yield running


@pytest.fixture
def client(receiver: RunningReceiver) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=receiver.base_url, timeout=5) as http:
        yield http


def now_ms() -> str:
    return str(int(time.time() * 1000))


def signed_headers(
    body: bytes, timestamp: str | None = None, nonce: str = "105850310064852240"
) -> dict[str, str]:
    timestamp = timestamp or now_ms()
    return {
        "X-HumanAPI-Signature": sign(body, timestamp, nonce, SECRET),
        "X-HumanAPI-Timestamp": timestamp,
        "X-HumanAPI-Nonce": nonce,
    }


def landed_lines(data_dir: Path, kind: str) -> list[str]:
    """Every line in every landing file of `kind`, duplicates included."""
    root = data_dir / "landing" / kind
    return [
        line
        for path in sorted(root.glob("*/*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
