"""Several users' pages typed in one call equal the pages typed one by one."""

from __future__ import annotations

import pandas as pd
import pytest

from sync_pipeline.normalize import normalize_records
from sync_pipeline.upstream.endpoints import BY_PATH

from .fixtures import load_records

ALICE, BOB = "a" * 32, "b" * 32


@pytest.mark.parametrize(
    ("path", "fixture"),
    [
        ("medical/test_results", "medical/test_results.json"),
        ("activities", "wellness/activities.json"),
    ],
)
def test_one_call_for_many_users_equals_one_call_per_user(path: str, fixture: str) -> None:
    endpoint = BY_PATH[path]
    records = load_records(fixture)
    # the same record ids under two users are two rows: the key is (human_id, record_id)
    together = normalize_records(
        endpoint, [ALICE] * len(records) + [BOB] * len(records), records * 2
    )
    apart = [normalize_records(endpoint, h, records) for h in (ALICE, BOB)]
    for table, frame in together.tables.items():
        expected = pd.concat([a.tables[table] for a in apart], ignore_index=True)
        pd.testing.assert_frame_equal(frame, expected)
    assert together.received == 2 * len(records)
    assert together.rejected.empty


def test_owners_must_match_the_records() -> None:
    with pytest.raises(ValueError, match="one human_id per record"):
        normalize_records(BY_PATH["activities"], [ALICE], [{}, {}])
    with pytest.raises(ValueError, match="non-empty"):
        normalize_records(BY_PATH["activities"], [ALICE, ""], [{}, {}])
