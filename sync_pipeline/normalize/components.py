"""Numbers inside lab text: a result value ("5.1 THO/uL"), a reference range ("> 14; < 54").

Everything here works on a whole Series at once with anchored regular expressions run by
Arrow (RE2, in C++), so a page of components is parsed in a few vectorised passes. Anything
that is not clearly one number (narrative text, "Negative", ".", a date like "1/20/18", a
censored value like ">60", a two-population range like "4.2 - 5.9 / 3.9 - 5.3 cm") gives
NULL rather than a guess.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
# A unit is one token that starts like a unit: a letter, %, °, µ, a bracket ("[in_i]",
# "second(s)") or "/letter" ("/min"). It is what keeps "1/20/18" from reading as 1.
_UNIT_TOKEN = r"(?:[A-Za-z%°µμ\[(]|/[A-Za-z])\S*"
# In a range, the unit may run on with spaces ("mL/min/1.73 m2"); the comparator or the
# dash already says which numbers are bounds.
_UNIT_TAIL = r"(?:[A-Za-z%°µμ\[(]|/[A-Za-z]).*?"

_VALUE = rf"^\s*(?P<number>{_NUMBER})(?:\s*{_UNIT_TOKEN})?\s*$"
_BETWEEN = (
    rf"^\s*(?P<low>{_NUMBER})\s*(?:{_UNIT_TOKEN}\s*)?-\s*"
    rf"(?P<high>{_NUMBER})(?:\s*{_UNIT_TAIL})?\s*$"
)
_BOTH_SIDES = (
    rf"^\s*>=?\s*(?P<low>{_NUMBER})(?:\s*{_UNIT_TAIL})?\s*;\s*"
    rf"<=?\s*(?P<high>{_NUMBER})(?:\s*{_UNIT_TAIL})?\s*$"
)
_AT_LEAST = rf"^\s*>=?\s*(?P<low>{_NUMBER})(?:\s*{_UNIT_TAIL})?\s*$"
_AT_MOST = rf"^\s*<=?\s*(?P<high>{_NUMBER})(?:\s*{_UNIT_TAIL})?\s*$"


def _extract_numbers(texts: pa.Array, pattern: str, group: str) -> pd.Series:
    matches = pc.extract_regex(texts, pattern)
    # the pattern only lets through text that Arrow's float parser accepts
    numbers = pc.cast(pc.struct_field(matches, group), pa.float64())
    return pd.Series(numbers, dtype="Float64")


def _arrow_text(values: pd.Series) -> pa.Array:
    return pa.array(values.astype(pd.StringDtype()), type=pa.string())


def parse_value_numeric(values: pd.Series) -> pd.Series:
    """The number a result value states, with an optional unit: "246 x10E3/uL" → 246.0."""
    return _extract_numbers(_arrow_text(values), _VALUE, "number").set_axis(values.index)


def parse_ref_range(ranges: pd.Series) -> pd.DataFrame:
    """Reference range text → columns ref_low, ref_high (Float64, NULL when not stated)."""
    texts = _arrow_text(ranges)
    # the forms are anchored and exclusive, so at most one pattern matches a text
    low = _extract_numbers(texts, _BETWEEN, "low")
    high = _extract_numbers(texts, _BETWEEN, "high")
    low = low.fillna(_extract_numbers(texts, _BOTH_SIDES, "low"))
    high = high.fillna(_extract_numbers(texts, _BOTH_SIDES, "high"))
    low = low.fillna(_extract_numbers(texts, _AT_LEAST, "low"))
    high = high.fillna(_extract_numbers(texts, _AT_MOST, "high"))
    return pd.DataFrame({"ref_low": low, "ref_high": high}).set_axis(ranges.index)
