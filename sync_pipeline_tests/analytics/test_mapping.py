"""The packaged mapping: consistent, every unit valid UCUM and every factor exact, checked by a
maintained UCUM implementation (ucumvert's grammar and pint registry)."""

from __future__ import annotations

import math
from functools import cache

import pytest
from ucumvert import PintUcumRegistry

from sync_pipeline.analytics.mapping import (
    FILES,
    is_loinc_code,
    load_mapping,
    mapping_problems,
    parse_mapping,
)
from sync_pipeline.upstream.endpoints import READING_TYPES

MAPPING = load_mapping()


@cache
def _ureg() -> PintUcumRegistry:
    return PintUcumRegistry()


def _texts() -> dict[str, str]:
    from importlib import resources

    folder = resources.files("sync_pipeline.analytics").joinpath("mapping")
    return {n: folder.joinpath(f"{n}.csv").read_text(encoding="utf-8") for n in FILES}


def test_the_packaged_mapping_is_consistent() -> None:
    assert mapping_problems(MAPPING) == []


@pytest.mark.parametrize(
    ("file", "bad_line", "problem"),
    [
        ("names", "vital,heart rate,8867-4", "duplicate key"),
        ("names", "lab,made up,1234-5", "not in loinc.csv"),
        ("loinc", "12345,No dash,cm,,", "is not a LOINC code"),
        ("conversions", "[ft_i],cm,30.48", "is not in units.csv"),
        ("endpoints", "wellness.weight,value,kg,29463-7,", "mixes an any-unit rule"),
        ("sentinels", "wellness.weight,note,0,x", "is not read"),
    ],
)
def test_mapping_problems_are_found(file: str, bad_line: str, problem: str) -> None:
    texts = _texts()
    texts[file] = texts[file].rstrip("\n") + "\n" + bad_line + "\n"
    problems = mapping_problems(parse_mapping(texts))
    assert any(problem in p for p in problems), problems


def test_a_changed_file_changes_the_version() -> None:
    texts = _texts()
    texts["units"] += "mmhg,mm[Hg]\n"
    assert parse_mapping(texts).version != MAPPING.version
    assert parse_mapping(_texts()).version == MAPPING.version


@pytest.mark.parametrize("unit", sorted(MAPPING.ucum_units()))
def test_every_unit_the_mapping_produces_is_valid_ucum(unit: str) -> None:
    _ureg().from_ucum(unit)  # raises InvalidUcumError for anything UCUM does not define


@pytest.mark.parametrize("spelling", ["SpO2", "percent", "bpm", "mmHg", "THO/uL", "lb"])
def test_the_library_rejects_the_source_spellings_the_mapping_translates(spelling: str) -> None:
    # the test above can fail: these spellings from the fixtures are not UCUM
    with pytest.raises(Exception, match="not a valid UCUM unit"):
        _ureg().from_ucum(spelling)


@pytest.mark.parametrize(
    "row", MAPPING.conversions.to_pylist(), ids=lambda r: f"{r['from_unit']}->{r['to_unit']}"
)
def test_every_conversion_factor_is_the_one_ucum_defines(row: dict[str, object]) -> None:
    ureg = _ureg()
    ratio = (ureg.from_ucum(str(row["from_unit"])) / ureg.from_ucum(str(row["to_unit"]))).to(
        "dimensionless"
    )
    assert math.isclose(float(ratio.magnitude), float(str(row["factor"])), rel_tol=1e-12)


def _loinc_check_digit(base: str) -> int:
    # LOINC's mod-10 check digit (the Luhn scheme): double every other digit from the right
    total = 0
    for i, char in enumerate(reversed(base)):
        digit = int(char) * (2 if i % 2 == 0 else 1)
        total += digit // 10 + digit % 10
    return (10 - total % 10) % 10


@pytest.mark.parametrize("code", MAPPING.loinc.column("code").to_pylist())
def test_every_loinc_code_has_a_valid_check_digit(code: str) -> None:
    assert is_loinc_code(code)
    base, _, check = code.partition("-")
    assert _loinc_check_digit(base) == int(check)


def test_the_check_digit_test_can_fail() -> None:
    assert _loinc_check_digit("8480") == 6
    assert _loinc_check_digit("8480") != 5


def test_every_wellness_reading_type_has_a_rule() -> None:
    rules = {(r["record_table"], r["field"]) for r in MAPPING.endpoints.to_pylist()}
    for kind in READING_TYPES:
        fields = ("systolic", "diastolic", "heart_rate") if kind == "blood_pressure" else ("value",)
        for field in fields:
            assert (f"wellness.{kind}", field) in rules


def test_glucose_keeps_its_measured_unit_with_the_matching_code() -> None:
    rules = {
        r["unit"]: r["code"]
        for r in MAPPING.endpoints.to_pylist()
        if r["record_table"] == "wellness.blood_glucose"
    }
    assert rules == {"mg/dL": "2339-0", "mmol/L": "15074-8"}
    assert not any(
        {r["from_unit"], r["to_unit"]} == {"mg/dL", "mmol/L"}
        for r in MAPPING.conversions.to_pylist()
    )
