import pytest

from sync_pipeline.intake import signature

# The contract's known-answer vector (B1).
BODY = b'{"contents":"supersecretstuff"}'
TIMESTAMP = "1403591492088"
NONCE = "105850310064852240"
SECRET = "itsfullofsecrets"
EXPECTED = "fQkvPoMVwsZWM4/r4VrKlMaCOAw="


def test_known_answer_vector() -> None:
    assert signature.sign(BODY, TIMESTAMP, NONCE, SECRET) == EXPECTED
    assert signature.verify(BODY, TIMESTAMP, NONCE, EXPECTED, SECRET)


@pytest.mark.parametrize(
    ("body", "timestamp", "nonce", "secret"),
    [
        (b'{"contents": "supersecretstuff"}', TIMESTAMP, NONCE, SECRET),  # re-serialised body
        (BODY, "1403591492089", NONCE, SECRET),
        (BODY, TIMESTAMP, "105850310064852241", SECRET),
        (BODY, TIMESTAMP, NONCE, "itsfullofsecret"),
    ],
)
def test_any_change_breaks_the_signature(
    body: bytes, timestamp: str, nonce: str, secret: str
) -> None:
    assert not signature.verify(body, timestamp, nonce, EXPECTED, secret)


def test_digit_shift_between_timestamp_and_nonce_is_the_same_delivery() -> None:
    shifted_ts, shifted_nonce = TIMESTAMP[:-1], TIMESTAMP[-1] + NONCE
    assert signature.verify(BODY, shifted_ts, shifted_nonce, EXPECTED, SECRET)
    assert signature.delivery_digest(BODY, shifted_ts, shifted_nonce) == signature.delivery_digest(
        BODY, TIMESTAMP, NONCE
    )


@pytest.mark.parametrize(
    ("timestamp", "seconds"),
    [("1403591492088", 1403591492.088), ("1403591492", 1403591492.0), ("0", 0.0)],
)
def test_timestamp_in_seconds_or_milliseconds(timestamp: str, seconds: float) -> None:
    assert signature.timestamp_seconds(timestamp) == pytest.approx(seconds)
