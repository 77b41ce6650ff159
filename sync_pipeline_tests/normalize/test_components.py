"""The lab value and reference-range parsers, one form per case."""

from __future__ import annotations

import pandas as pd
import pytest

from sync_pipeline.normalize.components import parse_ref_range, parse_value_numeric

VALUES = [
    ("4.3", 4.3),
    ("26.3 second(s)", 26.3),
    ("5.1 THO/uL", 5.1),
    ("246 x10E3/uL", 246.0),
    ("0.0 x10E3/uL", 0.0),
    ("9 mm/hr", 9.0),
    ("12 /min", 12.0),
    (" 1.023 ", 1.023),
    ("-1.5", -1.5),
    (".5", 0.5),
    ("Negative", None),
    ("Normal", None),
    (".", None),
    ("", None),
    (">60", None),  # censored: not an exact value
    ("1/20/18", None),  # a date, not 1
    ("21 April 2014 15:32", None),
    ("No growth at 24 hours.", None),
    ("Total left hip prosthesis periprosthetic fracture.", None),
    (None, None),
]


@pytest.mark.parametrize(("text", "expected"), VALUES)
def test_value_numeric(text: str | None, expected: float | None) -> None:
    parsed = parse_value_numeric(pd.Series([text], dtype=object)).iloc[0]
    if expected is None:
        assert pd.isna(parsed)
    else:
        assert parsed == expected


def test_value_numeric_keeps_the_index_and_dtype() -> None:
    values = pd.Series([t for t, _ in VALUES], index=range(100, 100 + len(VALUES)), dtype=object)
    parsed = parse_value_numeric(values)
    assert list(parsed.index) == list(values.index)
    assert str(parsed.dtype) == "Float64"


RANGES = [
    ("20.8 - 34.4", 20.8, 34.4),
    ("0.2 - 1.0 mg/dL", 0.2, 1.0),
    ("1.010 - 1.030", 1.01, 1.03),
    ("> 14 U/L; < 54 U/L", 14.0, 54.0),
    ("> 0.44 mg/dL; < 1.03 mg/dL", 0.44, 1.03),
    (">59", 59.0, None),
    (">=60 mL/min/1.73 m2", 60.0, None),
    ("<5", None, 5.0),
    ("<= Clear", None, None),
    ("<=Dk Yel", None, None),
    ("Negative mg/dL", None, None),
    ("Negative", None, None),
    ("4.2 - 5.9 / 3.9 - 5.3 cm", None, None),  # two populations: no single range
    ("", None, None),
    (None, None, None),
]


@pytest.mark.parametrize(("text", "low", "high"), RANGES)
def test_ref_range(text: str | None, low: float | None, high: float | None) -> None:
    parsed = parse_ref_range(pd.Series([text], dtype=object)).iloc[0]
    for column, expected in (("ref_low", low), ("ref_high", high)):
        if expected is None:
            assert pd.isna(parsed[column]), column
        else:
            assert parsed[column] == expected, column
