"""The endpoint catalogue: upstream path ↔ warehouse table ↔ asset group.

Everything else (client, simulator, normalisers, assets) reads this list, so adding an
endpoint is one entry here plus its normaliser.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Group = Literal["medical", "wellness"]


@dataclass(frozen=True)
class Endpoint:
    path: str  # below /v1/human/, e.g. "medical/test_results"
    table: str  # schema-qualified warehouse table, e.g. "medical.test_results"
    group: Group
    single_object: bool = False  # medical/profile answers one object (404 when none), not a list

    @property
    def schema(self) -> str:
        return self.table.split(".", 1)[0]

    @property
    def table_name(self) -> str:
        return self.table.split(".", 1)[1]


MEDICAL_LISTS = (
    "allergies",
    "ccds",
    "demographics",
    "encounters",
    "immunizations",
    "issues",
    "medications",
    "narratives",
    "plans_of_care",
    "procedures",
    "social_history",
    "test_results",
    "vitals",
)

READING_TYPES = (
    "heart_rate",
    "blood_glucose",
    "blood_oxygen",
    "blood_pressure",
    "bmi",
    "body_fat",
    "height",
    "weight",
)

ENDPOINTS: tuple[Endpoint, ...] = (
    *(Endpoint(f"medical/{name}", f"medical.{name}", "medical") for name in MEDICAL_LISTS),
    Endpoint("medical/profile", "medical.profile", "medical", single_object=True),
    Endpoint("activities", "wellness.activities", "wellness"),
    Endpoint("activities/summaries", "wellness.activity_summaries", "wellness"),
    Endpoint("sleeps", "wellness.sleeps", "wellness"),
    Endpoint("sleeps/summaries", "wellness.sleep_summaries", "wellness"),
    Endpoint("locations", "wellness.locations", "wellness"),
    Endpoint("food/meals", "wellness.meals", "wellness"),
    *(Endpoint(f"{m}/readings", f"wellness.{m}", "wellness") for m in READING_TYPES),
)

# Not a record endpoint: feeds connection reconciliation (connect.source_status).
SOURCES_PATH = "sources"

BY_PATH: dict[str, Endpoint] = {e.path: e for e in ENDPOINTS}
BY_TABLE: dict[str, Endpoint] = {e.table: e for e in ENDPOINTS}


def endpoint_for_path(path: str) -> Endpoint | None:
    """Map a path below /v1/human/ (no leading slash, no query) to its endpoint, if we know it."""
    return BY_PATH.get(path.strip("/"))
