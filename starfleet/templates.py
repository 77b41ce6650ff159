"""The simulator's record templates: real upstream bodies shipped as package data.

Each endpoint of the catalogue maps to the fixture records it is cloned from. Endpoints with no
recorded list of their own (heart-rate readings, activity summaries) borrow the matching entry
of the 2014 `human.json` summary, which is the closest real shape we have.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from sync_pipeline.upstream.endpoints import ENDPOINTS, MEDICAL_LISTS, SOURCES_PATH

Record = dict[str, Any]

# endpoint path -> (template file below templates/, key inside human.json or None)
_WELLNESS_FILES: dict[str, tuple[str, str | None]] = {
    "activities": ("wellness/activities.json", None),
    "activities/summaries": ("wellness/human.json", "activitySummary"),
    "sleeps": ("wellness/sleep.json", None),
    "sleeps/summaries": ("wellness/sleepsummary.json", None),
    "locations": ("wellness/locations.json", None),
    "food/meals": ("wellness/meals.json", None),
    "heart_rate/readings": ("wellness/human.json", "heartRate"),
    "blood_glucose/readings": ("wellness/blood_glucose.json", None),
    "blood_oxygen/readings": ("wellness/blood_oxygen.json", None),
    "blood_pressure/readings": ("wellness/blood_pressure.json", None),
    "bmi/readings": ("wellness/bmi.json", None),
    "body_fat/readings": ("wellness/body_fat.json", None),
    "height/readings": ("wellness/height.json", None),
    "weight/readings": ("wellness/weight.json", None),
    SOURCES_PATH: ("wellness/sources.json", None),
}


def template_file(path: str) -> tuple[str, str | None]:
    """Which packaged file (and key inside it) the records of an endpoint path are cloned from."""
    if path.startswith("medical/"):
        name = path.removeprefix("medical/")
        if name in MEDICAL_LISTS or name == "profile":
            return f"medical/{name}.json", None
    if path in _WELLNESS_FILES:
        return _WELLNESS_FILES[path]
    raise KeyError(f"no template for endpoint path {path!r}")


def fixture_root() -> Traversable:
    """The real upstream response bodies (`medical/*.json`, `wellness/*.json`): the one copy in
    the repository, read by the simulator and by the normaliser tests alike."""
    return resources.files("starfleet").joinpath("templates")


def _read_json(relative: str) -> Any:
    return json.loads(fixture_root().joinpath(relative).read_text(encoding="utf-8"))


@cache
def _load(path: str) -> tuple[Record, ...]:
    relative, key = template_file(path)
    data = _read_json(relative)
    if key is not None:
        data = data[key]
    records = data if isinstance(data, list) else [data]
    return tuple(records)


def templates_for(path: str) -> tuple[Record, ...]:
    """The template records of one endpoint path (or `sources`). Shared: never mutate them."""
    return _load(path)


def all_template_paths() -> tuple[str, ...]:
    return (*(e.path for e in ENDPOINTS), SOURCES_PATH)
