"""Property, at the request boundary: whatever a signed sender posts, or whatever headers a
stranger sends, the receiver answers 200 or a 4xx (never a 5xx), and what it acknowledges
becomes rows or rejected rows, every item counted."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync_pipeline.intake.app import create_app
from sync_pipeline.intake.landing import iter_landed
from sync_pipeline.intake.rows import notification_rows, session_rows
from sync_pipeline.settings import load_settings
from sync_pipeline_tests.intake.conftest import SECRET, make_keypair, signed_headers
from sync_pipeline_tests.intake.test_rows_properties import bodies, json_values, nasty_text

KEYS = make_keypair()
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


async def post(data_dir: Path, path: str, body: bytes, headers: dict[str, str]) -> int:
    app = create_app(
        dataclasses.replace(
            load_settings({}),
            data_dir=data_dir,
            client_secret=SECRET,
            session_public_key=KEYS.public_pem,
            landing_min_free_bytes=0,
        )
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
        response = await client.post(path, content=body, headers=headers)
    return response.status_code


def landed(data_dir: Path, kind: str) -> list[Any]:
    today = dt.datetime.now(dt.UTC).date()
    return list(iter_landed(data_dir, kind, today))


def utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # lone surrogates as raw (invalid) bytes


@PROPERTY
@given(st.one_of(bodies.map(utf8), st.binary(max_size=64)))
def test_any_signed_notification_body_is_answered_200_or_4xx_and_fully_accounted(
    body: bytes,
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = Path(scratch)
        status = asyncio.run(post(data_dir, "/notifications", body, signed_headers(body)))
        assert status == 200 or 400 <= status < 500
        deliveries = landed(data_dir, "notifications")
        assert len(deliveries) == (1 if status == 200 else 0)
        if deliveries:
            rows, rejected = notification_rows(deliveries, "http://127.0.0.1:8700")
            assert len(rows) + len(rejected) == len(json.loads(body))


session_documents = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {
            "event": st.sampled_from(["close", "connect_source", "disconnect_source"]),
            "response": st.one_of(
                json_values, st.fixed_dictionaries({"status": st.one_of(nasty_text, json_values)})
            ),
        }
    ),
)


@PROPERTY
@given(
    st.one_of(session_documents.map(lambda d: json.dumps(d).encode()), st.binary(max_size=64)),
    st.one_of(st.just("u-1"), nasty_text),
)
def test_any_session_body_under_a_valid_token_is_answered_200_or_4xx_and_accounted(
    body: bytes, client_user_id: str
) -> None:
    now = int(time.time())
    token = jwt.encode(
        {"client_user_id": client_user_id, "human_id": "h-1", "iat": now, "exp": now + 60},
        KEYS.private,
        algorithm="RS256",
    )
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = Path(scratch)
        headers = {"Authorization": f"Bearer {token}"}
        status = asyncio.run(post(data_dir, "/connect/sessions", body, headers))
        assert status == 200 or 400 <= status < 500
        deliveries = landed(data_dir, "sessions")
        assert len(deliveries) == (1 if status == 200 else 0)
        rows, rejected = session_rows(deliveries)
        assert len(rows) + len(rejected) == len(deliveries)


header_values = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
    st.sampled_from(["", "9" * 40, "-1", "1e999", "0", str(10**30)]),
)


@PROPERTY
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "x-humanapi-signature",
                "x-humanapi-timestamp",
                "x-humanapi-nonce",
                "content-length",
                "authorization",
            ]
        ),
        header_values,
    ),
    st.sampled_from(["/notifications", "/connect/sessions"]),
)
def test_any_headers_from_a_stranger_get_a_4xx_and_land_nothing(
    headers: dict[str, str], path: str
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = Path(scratch)
        try:
            status = asyncio.run(post(data_dir, path, b"[]", headers))
        except httpx.HTTPError:
            return  # the client refused to send such headers (e.g. a Content-Length it rejects)
        assert 400 <= status < 500
        assert landed(data_dir, "notifications") == landed(data_dir, "sessions") == []
