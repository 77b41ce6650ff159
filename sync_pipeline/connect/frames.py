"""Typed empty-safe DataFrame construction shared by the connect functions.

Every output is built through `typed_frame` so an empty input still yields the full set of
columns with their final dtypes: the warehouse writer creates tables from these frames, and a
column that is `object` on one run and `datetime64` on the next would not merge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

import pandas as pd

# DuckDB's TIMESTAMPTZ has microsecond resolution, so that is what every instant is stored as
UTC_INSTANT: Final[Literal["datetime64[us, UTC]"]] = "datetime64[us, UTC]"
TEXT = "str"
FLAG = "bool"


def typed_frame(rows: Sequence[Mapping[str, Any]], schema: Mapping[str, str]) -> pd.DataFrame:
    """One DataFrame with exactly `schema`'s columns, in order, cast to its dtypes."""
    frame = pd.DataFrame(list(rows), columns=list(schema))
    return frame.astype(dict(schema)).reset_index(drop=True)


def utc_instants(values: pd.Series) -> pd.Series:
    """A column of instants as UTC microseconds (naive values are taken to be UTC already)."""
    instants: pd.Series = pd.to_datetime(values, utc=True).astype(UTC_INSTANT)
    return instants
