"""The recorded upstream bodies (the simulator's packaged copy), mapped to their endpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from starfleet.templates import fixture_root
from sync_pipeline.upstream.endpoints import BY_PATH, Endpoint

FIXTURES = Path(str(fixture_root()))

# wellness/human.json (the user summary) and wellness/sources.json are not record endpoints
NOT_RECORDS = {"human.json", "sources.json"}
# fixture files whose name is not the endpoint's path
WELLNESS_PATHS = {
    "activities.json": "activities",
    "locations.json": "locations",
    "sleep.json": "sleeps",
    "sleepsummary.json": "sleeps/summaries",
    "meals.json": "food/meals",
}

HUMAN_ID = "0123456789abcdef0123456789abcdef"


def fixture_endpoint(path: Path) -> Endpoint:
    if path.parent.name == "medical":
        return BY_PATH[f"medical/{path.stem}"]
    return BY_PATH[WELLNESS_PATHS.get(path.name, f"{path.stem}/readings")]


def record_fixture_files() -> list[Path]:
    files = sorted(p for p in FIXTURES.glob("*/*.json") if p.name not in NOT_RECORDS)
    assert files, f"no fixtures under {FIXTURES}"
    return files


def load_records(relative: str) -> list[dict[str, Any]]:
    """The records of one fixture file; a single-object body is one record."""
    body = json.loads((FIXTURES / relative).read_text(encoding="utf-8"))
    return body if isinstance(body, list) else [body]
