"""Cloning template records into fresh, varied ones, cheaply.

Each template is analysed once into a `Blueprint` (which top-level fields are instants, dates,
numbers); a clone is then a shallow copy with those few fields rewritten. Nested objects are
shared with the template unless they are rewritten, so nothing here may mutate a record in place.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starfleet.sources import Source
from starfleet.templates import Record, templates_for

_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NUMERIC_TEXT = re.compile(r"^-?\d+(\.\d+)?$")

# Stamped by us on every clone, so never treated as template content to vary.
_STAMPED = frozenset({"id", "source", "createdAt", "updatedAt", "humanId", "userId"})
# Bounded quantities the jitter must not push out of range: by field name, and any value whose
# unit is a percentage (an SpO2 of 107% is no reading a device sends).
_CAPS = {"efficiency": 100}
_PERCENT_UNITS = frozenset({"%", "percent", "SpO2"})


def _cap(key: str, value: int | float, unit: object) -> int | float:
    cap = _CAPS.get(key) or (100 if key == "value" and unit in _PERCENT_UNITS else None)
    return min(value, cap) if cap is not None else value


# 2014-era wellness endpoints keep their `userId`; everything else carries `humanId`, so the
# simulator serves both generations of record identity the real upstream has.
LEGACY_USER_ID_PATHS = frozenset(
    {"activities", "sleeps", "sleeps/summaries", "locations", "food/meals"}
)


def iso_instant(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and `Z`, the upstream's format (naive datetimes are UTC)."""
    return moment.isoformat(timespec="milliseconds") + "Z"


def parse_instant(text: str) -> datetime:
    return datetime.fromisoformat(text.removesuffix("Z"))


def _decimals(number: float) -> int:
    text = repr(number)
    return min(len(text.split(".", 1)[1]), 3) if "." in text else 0


def jitter(value: int | float, rng: random.Random, spread: float = 0.2) -> int | float:
    """The value moved by up to ±spread, keeping its type and (up to 3) decimals."""
    factor = 1.0 + spread * (2.0 * rng.random() - 1.0)
    if isinstance(value, int):
        return max(0, round(value * factor))
    return round(value * factor, max(_decimals(value), 1))


def _jitter_text(text: str, factor: float) -> str:
    decimals = len(text.split(".", 1)[1]) if "." in text else 0
    return f"{float(text) * factor:.{decimals}f}"


@dataclass(frozen=True)
class Blueprint:
    template: Record
    event_time: datetime | None  # the record's main moment; every other time keeps its distance
    instants: tuple[tuple[str, datetime], ...]
    dates: tuple[tuple[str, datetime], ...]
    instant_lists: tuple[tuple[str, tuple[datetime, ...]], ...]
    numbers: tuple[tuple[str, int | float], ...]
    numeric_components: tuple[int, ...]  # test_results components whose `value` is a number
    numeric_results: tuple[int, ...]  # vitals results with a numeric `value`


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def analyse(template: Record) -> Blueprint:
    instants: list[tuple[str, datetime]] = []
    dates: list[tuple[str, datetime]] = []
    lists: list[tuple[str, tuple[datetime, ...]]] = []
    numbers: list[tuple[str, int | float]] = []
    for key, value in template.items():
        if key in _STAMPED:
            continue
        if isinstance(value, str) and _INSTANT.match(value):
            instants.append((key, parse_instant(value)))
        elif isinstance(value, str) and _DATE.match(value):
            dates.append((key, datetime.fromisoformat(value)))
        elif (
            isinstance(value, list)
            and value
            and all(isinstance(v, str) and _INSTANT.match(v) for v in value)
        ):
            lists.append((key, tuple(parse_instant(v) for v in value)))
        elif _is_number(value):
            numbers.append((key, value))
    moments = [m for _, m in instants] + [m for _, m in dates] + [m for _, ms in lists for m in ms]
    components = template.get("components")
    results = template.get("results")
    return Blueprint(
        template=template,
        event_time=moments[0] if moments else None,
        instants=tuple(instants),
        dates=tuple(dates),
        instant_lists=tuple(lists),
        numbers=tuple(numbers),
        numeric_components=tuple(
            i
            for i, c in enumerate(components if isinstance(components, list) else [])
            if isinstance(c, dict) and _NUMERIC_TEXT.match(str(c.get("value", "")))
        ),
        numeric_results=tuple(
            i
            for i, r in enumerate(results if isinstance(results, list) else [])
            if isinstance(r, dict) and _is_number(r.get("value"))
        ),
    )


@dataclass(frozen=True)
class Identity:
    """Who a record belongs to, as the record itself says it."""

    human_id: str
    legacy_user_id: str  # the 24-hex `userId` of 2014-era wellness records


class EndpointFactory:
    """Makes fresh records for one endpoint path from its templates."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.blueprints = tuple(analyse(t) for t in templates_for(path))
        self.uses_user_id = path in LEGACY_USER_ID_PATHS
        self._organizations: dict[str, dict[str, str]] = {}

    def _organization(self, source: Source) -> dict[str, str]:
        org = self._organizations.get(source.id)
        if org is None:
            org = {
                "id": source.id,
                "name": source.name,
                "href": f"/medical/organizations/{source.id}",
            }
            self._organizations[source.id] = org
        return org

    def make(
        self,
        rng: random.Random,
        *,
        record_id: str,
        who: Identity,
        source: Source,
        event_time: datetime,
        created_at: datetime,
        updated_at: datetime,
    ) -> Record:
        blueprint = self.blueprints[rng.randrange(len(self.blueprints))]
        record = dict(blueprint.template)
        record["id"] = record_id
        record["source"] = source.id
        if self.uses_user_id:
            record["userId"] = who.legacy_user_id
        else:
            record.pop("userId", None)
            record["humanId"] = who.human_id
        record["createdAt"] = iso_instant(created_at)
        record["updatedAt"] = iso_instant(updated_at)
        if blueprint.event_time is not None:
            shift = event_time - blueprint.event_time
            for key, moment in blueprint.instants:
                record[key] = iso_instant(moment + shift)
            for key, day in blueprint.dates:
                record[key] = (day + shift).date().isoformat()
            for key, moments in blueprint.instant_lists:
                record[key] = [iso_instant(m + shift) for m in moments]
        for key, number in blueprint.numbers:
            record[key] = _cap(key, jitter(number, rng), record.get("unit"))
        if isinstance(record.get("organization"), dict):
            record["organization"] = self._organization(source)
        if isinstance(record.get("location"), dict):
            location = record["location"]
            record["location"] = {
                "lon": round(location["lon"] + rng.uniform(-0.05, 0.05), 10),
                "lat": round(location["lat"] + rng.uniform(-0.05, 0.05), 10),
            }
        if blueprint.numeric_components:
            record["components"] = _vary_components(
                record["components"], blueprint.numeric_components, rng
            )
        if blueprint.numeric_results:
            record["results"] = _vary_results(record["results"], blueprint.numeric_results, rng)
        return record


def _vary_components(
    components: list[dict[str, Any]], numeric: tuple[int, ...], rng: random.Random
) -> list[dict[str, Any]]:
    varied = list(components)
    for index in numeric:
        component = varied[index]
        factor = 1.0 + 0.15 * (2.0 * rng.random() - 1.0)
        varied[index] = {**component, "value": _jitter_text(str(component["value"]), factor)}
    return varied


def _vary_results(
    results: list[dict[str, Any]], numeric: tuple[int, ...], rng: random.Random
) -> list[dict[str, Any]]:
    varied = list(results)
    for index in numeric:
        result = varied[index]
        factor = 1.0 + 0.1 * (2.0 * rng.random() - 1.0)
        original = result["value"]
        value = _cap(
            "value",
            round(original * factor)
            if isinstance(original, int)
            else round(original * factor, max(_decimals(original), 1)),
            result.get("unit"),
        )
        new_result = {**result, "value": value}
        if isinstance(result.get("raw"), dict):
            new_result["raw"] = {**result["raw"], "value": str(value)}
        if isinstance(result.get("values"), list):
            new_result["values"] = [
                {**v, "value": round(v["value"] * factor, 3)} if _is_number(v.get("value")) else v
                for v in result["values"]
            ]
        varied[index] = new_result
    return varied


def mutate(record: Record, rng: random.Random) -> Record:
    """A changed copy of a record, the way an upstream re-sync changes one: a value moves."""
    changed = dict(record)
    numbers = [k for k, v in record.items() if k not in _STAMPED and _is_number(v)]
    components = record.get("components")
    numeric_components = tuple(
        i
        for i, c in enumerate(components if isinstance(components, list) else [])
        if isinstance(c, dict) and _NUMERIC_TEXT.match(str(c.get("value", "")))
    )
    if numbers:
        key = rng.choice(numbers)
        changed[key] = _cap(key, jitter(record[key], rng), record.get("unit"))
    elif numeric_components and isinstance(components, list):
        changed["components"] = _vary_components(components, numeric_components[:1], rng)
    elif isinstance(record.get("status"), str):
        choices = [s for s in ("active", "inactive", "resolved", "final") if s != record["status"]]
        changed["status"] = rng.choice(choices)
    return changed
