"""The simulator's catalogue of data sources a user can connect (Connect's `{"name", "id"}`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SourceKind = Literal["medical", "wellness"]


@dataclass(frozen=True)
class Source:
    id: str  # 24 hex, the value records carry in `source`
    name: str  # what Connect shows, e.g. "Starfleet Medical"
    slug: str  # the 2014-era short name the `/sources` shape carries in `source`
    kind: SourceKind
    supported_data_types: tuple[str, ...]

    def as_connection(self) -> dict[str, str]:
        """The `{"name", "id"}` object Connect session payloads list."""
        return {"name": self.name, "id": self.id}


# Source ids are global per provider upstream (the Starfleet ids are the real demo ones from
# the fixtures), so every user connected to one provider sees the same id.
SOURCE_CATALOGUE: tuple[Source, ...] = (
    Source(
        "55a83bdc8d1eb1420aa1a71b",
        "Starfleet Medical",
        "starfleet_medical",
        "medical",
        ("medical",),
    ),
    Source(
        "5b1daf3f079c652eaf41fd23",
        "Starfleet Pharmacy",
        "starfleet_pharmacy",
        "medical",
        ("medical",),
    ),
    Source("5c2f0e7a9b3d4c1e8f6a2b10", "Starfleet Labs", "starfleet_labs", "medical", ("medical",)),
    Source(
        "5d41b6c8e2f04a7b9c3d1e21",
        "Fitbit",
        "fitbit",
        "wellness",
        ("activities", "sleeps", "weight", "heart_rate"),
    ),
    Source(
        "5d41b6c8e2f04a7b9c3d1e32",
        "Withings",
        "withings",
        "wellness",
        ("weight", "blood_pressure", "body_fat", "height", "blood_oxygen"),
    ),
    Source(
        "5d41b6c8e2f04a7b9c3d1e43",
        "Jawbone UP",
        "jawbone",
        "wellness",
        ("activities", "sleeps", "meals"),
    ),
    Source("5d41b6c8e2f04a7b9c3d1e54", "Moves", "moves", "wellness", ("activities", "locations")),
    Source(
        "5d41b6c8e2f04a7b9c3d1e65",
        "iHealth",
        "ihealth",
        "wellness",
        ("blood_glucose", "blood_pressure"),
    ),
)

SOURCES_BY_ID: dict[str, Source] = {s.id: s for s in SOURCE_CATALOGUE}
