"""Table specs for the wellness endpoints (2014 shapes in fixtures/humanapi/wellness).

Required beyond the common fields: the instant or day that places a record in time
(readings and meals `timestamp`, activities/sleeps/locations `startTime`, summaries `date`).
A wellness row without it cannot be put on any timeline, so it is rejected with a reason.
Durations from the upstream are seconds for activities and minutes for sleeps; the column
names carry the unit.
"""

from __future__ import annotations

from ..upstream.endpoints import READING_TYPES
from .common import Field, TableSpec, boolean, date, instant, integer, number, text

_ACTIVITY_TOTALS = (
    number("duration", "duration_s"),
    number("distance", "distance_m"),
    integer("steps"),
    number("calories"),
)

_SLEEP_MINUTES = (
    number("timeAsleep", "time_asleep_min"),
    number("timeAwake", "time_awake_min"),
)

_NUTRIENTS = tuple(
    number(name)
    for name in (
        "calories",
        "carbohydrate",
        "fat",
        "protein",
        "fiber",
        "sugar",
        "sodium",
        "cholesterol",
        "saturatedFat",
        "monounsaturatedFat",
        "polyunsaturatedFat",
        "calcium",
        "iron",
        "potassium",
        "vitaminA",
        "vitaminC",
    )
)

_MEASURED_AT = instant("timestamp", "measured_at")

# Reading types with more than measured_at/value/unit; the rest share the plain reading shape.
_READING_EXTRAS: dict[str, tuple[Field, ...]] = {
    "blood_pressure": (
        integer("systolic"),
        integer("diastolic"),
        integer("heartRate"),
        text("unit"),
    ),
    "blood_glucose": (
        number("value"),
        text("unit"),
        text("notes"),
        text("mealTag"),
        text("medicationTag"),
    ),
}
_PLAIN_READING = (number("value"), text("unit"))


def _reading(kind: str) -> TableSpec:
    return TableSpec(
        f"wellness.{kind}",
        (_MEASURED_AT, *_READING_EXTRAS.get(kind, _PLAIN_READING)),
        required=("measured_at",),
    )


WELLNESS_SPECS: tuple[TableSpec, ...] = (
    TableSpec(
        "wellness.activities",
        (
            instant("startTime", "start_at"),
            instant("endTime", "end_at"),
            text("type"),
            *_ACTIVITY_TOTALS,
            boolean("sourceData.manual", "manual"),
        ),
        required=("start_at",),
    ),
    TableSpec(
        "wellness.activity_summaries",
        (
            date("date"),
            *_ACTIVITY_TOTALS,
            number("sedentary", "sedentary_s"),
            number("light", "light_s"),
            number("moderate", "moderate_s"),
            number("vigorous", "vigorous_s"),
            number("total", "total_s"),
        ),
        required=("date",),
    ),
    TableSpec(
        "wellness.sleeps",
        (
            date("day"),
            instant("startTime", "start_at"),
            instant("endTime", "end_at"),
            boolean("mainSleep"),
            *_SLEEP_MINUTES,
            number("timeInBed", "time_in_bed_min"),
            number("timeToFallAsleep", "time_to_fall_asleep_min"),
            number("timeAfterWakeup", "time_after_wakeup_min"),
            number("efficiency"),
        ),
        required=("start_at",),
    ),
    TableSpec("wellness.sleep_summaries", (date("date"), *_SLEEP_MINUTES), required=("date",)),
    TableSpec(
        "wellness.locations",
        (
            instant("startTime", "start_at"),
            instant("endTime", "end_at"),
            text("name"),
            number("location.lat", "lat"),
            number("location.lon", "lon"),
        ),
        required=("start_at",),
    ),
    TableSpec(
        "wellness.meals",
        (_MEASURED_AT, text("type"), text("name"), *_NUTRIENTS),
        required=("measured_at",),
    ),
    *(_reading(kind) for kind in READING_TYPES),
)
