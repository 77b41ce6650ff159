"""POST /notifications against a real receiver on 127.0.0.1 (uvicorn in a thread)."""

import asyncio
import dataclasses
import datetime as dt
import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sync_pipeline.intake.landing import iter_landed, landed_days
from sync_pipeline.intake.server import RunningReceiver, running_receiver
from sync_pipeline.settings import Settings
from sync_pipeline_tests.intake.conftest import landed_lines, now_ms, signed_headers

KNOWN_BODY = b'{"contents":"supersecretstuff"}'
BATCH = json.dumps(
    [
        {
            "humanId": "2f8b6c3a9d4e5f60718293a4b5c6d7e8",
            "updatedAt": "2024-05-01T11:59:58.250Z",
            "endpoint": "https://api.humanapi.co/v1/human/medical/test_results",
            "type": "medical",
            "model": "testResult",
            "action": "created",
            "objectId": "5a1b2c3d4e5f60718293a4b5",
        }
    ],
    separators=(",", ":"),
).encode()

SIG, TS, NONCE = "X-HumanAPI-Signature", "X-HumanAPI-Timestamp", "X-HumanAPI-Nonce"


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def test_healthz(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_a_signed_batch_is_landed_with_what_matters(
    client: httpx.Client, settings: Settings
) -> None:
    headers = signed_headers(BATCH)
    response = client.post("/notifications", content=BATCH, headers=headers)
    assert response.status_code == 200, response.text
    [landed] = iter_landed(settings.data_dir, "notifications", today())
    assert landed.body == BATCH.decode()
    assert landed.headers == {k.lower(): v for k, v in headers.items()}
    assert landed.claims is None
    assert abs((dt.datetime.now(dt.UTC) - landed.received_at).total_seconds()) < 5
    assert landed_days(settings.data_dir, "notifications") == [today()]


def test_the_known_answer_body_passes_the_signature_check_live(client: httpx.Client) -> None:
    # The contract's vector body is an object, not a batch: it must get past the signature
    # (a 401 otherwise) and then be refused for its shape, not land.
    response = client.post("/notifications", content=KNOWN_BODY, headers=signed_headers(KNOWN_BODY))
    assert (response.status_code, response.json()) == (
        400,
        {"error": "body must be a JSON array of objects"},
    )


def test_a_reserialised_body_fails_the_signature(client: httpx.Client, settings: Settings) -> None:
    headers = signed_headers(BATCH)
    same_json = json.dumps(json.loads(BATCH)).encode()
    assert same_json != BATCH
    response = client.post("/notifications", content=same_json, headers=headers)
    assert (response.status_code, response.json()) == (401, {"error": "signature does not match"})
    assert landed_lines(settings.data_dir, "notifications") == []


@pytest.mark.parametrize("unit", ["s", "ms"])
@pytest.mark.parametrize(("offset_s", "status"), [(-295, 200), (295, 200), (-305, 401), (305, 401)])
def test_timestamp_window(client: httpx.Client, unit: str, offset_s: int, status: int) -> None:
    when = time.time() + offset_s
    timestamp = str(int(when)) if unit == "s" else str(int(when * 1000))
    response = client.post(
        "/notifications", content=BATCH, headers=signed_headers(BATCH, timestamp)
    )
    assert response.status_code == status, response.text


@pytest.mark.parametrize(
    ("tolerance_s", "replay_status"),
    [
        # a moved digit scales the timestamp tenfold, so the window alone already refuses it
        (300, 401),
        # with a window wide enough to admit both readings, deduplication on the signed bytes
        # (not the nonce) is what keeps it from landing twice
        (10**11, 200),
    ],
)
def test_a_digit_moved_from_timestamp_to_nonce_is_the_same_delivery(
    settings: Settings, tolerance_s: int, replay_status: int
) -> None:
    settings = dataclasses.replace(settings, signature_tolerance_s=tolerance_s)
    timestamp, nonce = now_ms(), "105850310064852240"
    with running_receiver(settings) as receiver, httpx.Client(base_url=receiver.base_url) as http:
        headers = signed_headers(BATCH, timestamp, nonce)
        first = http.post("/notifications", content=BATCH, headers=headers)
        shifted = {
            SIG: headers[SIG],
            TS: timestamp[:-1],
            NONCE: timestamp[-1] + nonce,
        }
        replay = http.post("/notifications", content=BATCH, headers=shifted)
    assert first.json() == {"status": "accepted", "duplicate": False}
    assert replay.status_code == replay_status
    if replay_status == 200:
        assert replay.json() == {"status": "accepted", "duplicate": True}
    assert len(landed_lines(settings.data_dir, "notifications")) == 1


def test_a_sequential_repeat_is_acknowledged_and_landed_once(
    client: httpx.Client, settings: Settings
) -> None:
    headers = signed_headers(BATCH)
    answers = [
        client.post("/notifications", content=BATCH, headers=headers).status_code for _ in range(3)
    ]
    assert answers == [200, 200, 200]
    assert len(landed_lines(settings.data_dir, "notifications")) == 1


def test_fifty_concurrent_duplicates_land_once(
    receiver: RunningReceiver, settings: Settings
) -> None:
    headers = signed_headers(BATCH)

    async def send_all() -> list[int]:
        async with httpx.AsyncClient(base_url=receiver.base_url, timeout=5) as http:
            responses = await asyncio.gather(
                *(http.post("/notifications", content=BATCH, headers=headers) for _ in range(50))
            )
        return [r.status_code for r in responses]

    assert asyncio.run(send_all()) == [200] * 50
    assert len(landed_lines(settings.data_dir, "notifications")) == 1
    assert len(list(iter_landed(settings.data_dir, "notifications", today()))) == 1


def _replace(
    headers: dict[str, str], name: str, value: str | bytes | None
) -> dict[str, str | bytes]:
    changed: dict[str, str | bytes] = dict(headers)
    if value is None:
        del changed[name]
    else:
        changed[name] = value
    return changed


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (SIG, None),
        (SIG, ""),
        (SIG, b"fQkvPoMVwsZWM4/r4VrKlMaCOA\xe9="),
        (SIG, "not base64!"),
        (SIG, "A" * 400),
        (TS, None),
        (TS, ""),
        (TS, "12a4"),
        (TS, "-1403591492"),
        (TS, "1" * 40),
        (TS, b"\xd9\xa1\xd9\xa2"),
        (NONCE, None),
        (NONCE, ""),
        (NONCE, "abc"),
        (NONCE, "1.5"),
    ],
)
def test_malformed_signature_headers_are_refused(
    client: httpx.Client, settings: Settings, name: str, value: str | bytes | None
) -> None:
    response = client.post(
        "/notifications", content=BATCH, headers=_replace(signed_headers(BATCH), name, value)
    )
    assert 400 <= response.status_code < 500
    assert landed_lines(settings.data_dir, "notifications") == []


def test_a_wrong_signature_is_refused(client: httpx.Client) -> None:
    headers = signed_headers(BATCH)
    headers[SIG] = "fQkvPoMVwsZWM4/r4VrKlMaCOAw="
    assert client.post("/notifications", content=BATCH, headers=headers).status_code == 401


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'[{"a":"\xff"}]', "body is not valid UTF-8"),
        (b"[{", "body is not valid JSON"),
        (b'{"a":1}', "body must be a JSON array of objects"),
        (b"[1, 2]", "body must be a JSON array of objects"),
        (b"[" * 30_000 + b"]" * 30_000, "body is nested too deeply"),
    ],
)
def test_signed_but_unusable_bodies_are_refused(
    client: httpx.Client, settings: Settings, body: bytes, reason: str
) -> None:
    response = client.post("/notifications", content=body, headers=signed_headers(body))
    assert (response.status_code, response.json()) == (400, {"error": reason})
    assert landed_lines(settings.data_dir, "notifications") == []


def _chunks(body: bytes) -> Iterator[bytes]:
    for start in range(0, len(body), 4096):
        yield body[start : start + 4096]


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_an_oversized_body_is_refused(
    client: httpx.Client, settings: Settings, declared: bool
) -> None:
    body = b"[" + b'{"a":1},' * (settings.max_body_bytes // 8) + b"{}]"
    headers = signed_headers(body)
    response = client.post(
        "/notifications", content=body if declared else _chunks(body), headers=headers
    )
    assert (response.status_code, response.json()) == (413, {"error": "body too large"})
    assert landed_lines(settings.data_dir, "notifications") == []


def test_landing_files_and_folders_are_owner_only(client: httpx.Client, settings: Settings) -> None:
    client.post("/notifications", content=BATCH, headers=signed_headers(BATCH))
    root: Path = settings.data_dir / "landing"
    paths = [root, *root.rglob("*")]
    assert any(p.suffix == ".jsonl" for p in paths)
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path


def test_answers_arrive_well_within_three_seconds(client: httpx.Client) -> None:
    started = time.perf_counter()
    for nonce in range(20):
        headers = signed_headers(BATCH, nonce=str(nonce))
        assert client.post("/notifications", content=BATCH, headers=headers).status_code == 200
    assert (time.perf_counter() - started) / 20 < 0.5


def test_a_landing_failure_is_a_logged_503_without_the_body(
    client: httpx.Client, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # the day folder is a file: appending fails with an OSError inside the handler
    blocker = settings.data_dir / "landing" / "notifications" / today().isoformat()
    blocker.write_text("")
    response = client.post("/notifications", content=BATCH, headers=signed_headers(BATCH))
    assert response.status_code == 503
    assert "error" in response.json()
    assert "NotADirectoryError" in caplog.text
    assert "testResult" not in caplog.text
    # /healthz says so until a write succeeds again
    health = client.get("/healthz")
    assert health.status_code == 503 and "NotADirectoryError" in health.json()["error"]
    blocker.unlink()
    assert client.post("/notifications", content=BATCH, headers=signed_headers(BATCH)).is_success
    assert client.get("/healthz").status_code == 200
