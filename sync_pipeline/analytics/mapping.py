"""The reviewed observation mapping, shipped as CSV files in `mapping/` (data, not code).

- `loinc.csv`: one LOINC concept per row: display, canonical UCUM unit, plausible low/high in
  that unit (display, the unit values are converted to, the bounds check).
- `names.csv`: a vital or lab name (matched trimmed, case-insensitively) → LOINC code, for rows
  whose source sent no LOINC code (`mapping = 'by_name'`).
- `endpoints.csv`: a wellness table and field (optionally only for one UCUM unit, as glucose
  needs) → LOINC code, and the unit to assume when a record states none (`by_endpoint`).
- `units.csv`: a unit spelling as sources send it (exact, trimmed) → UCUM.
- `conversions.csv`: from UCUM unit, to UCUM unit, exact factor (to a concept's unit).
- `sentinels.csv`: a table, field and value that means "not measured" (becomes NULL).

Everything here is pure: reading the packaged files, checking them, and handing them over as
Arrow tables for the SQL that joins them to the record tables.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from functools import cache
from importlib import resources

import pyarrow as pa

FILES = ("loinc", "names", "endpoints", "units", "conversions", "sentinels")

# LOINC code shape: digits, a dash and the check digit (e.g. 8480-6)
_LOINC_DIGITS = frozenset("0123456789")


@dataclass(frozen=True)
class ObservationMapping:
    """The mapping files as Arrow tables (all columns text except the numbers), plus a version
    that changes whenever any file's content changes."""

    loinc: pa.Table  # code, display, unit, low, high
    names: pa.Table  # category, name, code  (name lower-cased and trimmed)
    endpoints: pa.Table  # record_table, field, unit, code, assumed_unit
    units: pa.Table  # source_unit, ucum
    conversions: pa.Table  # from_unit, to_unit, factor
    sentinels: pa.Table  # record_table, field, value, meaning
    version: str

    def tables(self) -> dict[str, pa.Table]:
        return {name: getattr(self, name) for name in FILES}

    def ucum_units(self) -> set[str]:
        """Every UCUM unit the mapping can put in `analytics.observations.unit`."""
        units = set(self.units.column("ucum").to_pylist())
        units |= set(self.loinc.column("unit").to_pylist())
        units |= {u for u in self.endpoints.column("assumed_unit").to_pylist() if u}
        units |= set(self.conversions.column("to_unit").to_pylist())
        return {u for u in units if u}


_NUMERIC = {("loinc", "low"), ("loinc", "high"), ("conversions", "factor"), ("sentinels", "value")}


def _rows(text: str) -> list[dict[str, str]]:
    return [
        {k.strip(): (v or "").strip() for k, v in row.items()}
        for row in csv.DictReader(io.StringIO(text))
    ]


def _table(name: str, rows: list[dict[str, str]], columns: list[str]) -> pa.Table:
    arrays = []
    for column in columns:
        values = [row.get(column, "") for row in rows]
        if (name, column) in _NUMERIC:
            arrays.append(pa.array([float(v) if v else None for v in values], pa.float64()))
        else:
            if name == "names" and column == "name":
                values = [v.lower() for v in values]
            arrays.append(pa.array([v or None for v in values], pa.string()))
    return pa.table(dict(zip(columns, arrays, strict=True)))


def parse_mapping(texts: dict[str, str]) -> ObservationMapping:
    """Build the mapping from the CSV texts of FILES (keyed by file stem)."""
    digest = hashlib.sha256()
    tables: dict[str, pa.Table] = {}
    for name in FILES:
        text = texts[name]
        digest.update(name.encode() + b"\x00" + text.encode() + b"\x00")
        reader = csv.reader(io.StringIO(text))
        header = [h.strip() for h in next(reader)]
        tables[name] = _table(name, _rows(text), header)
    return ObservationMapping(**tables, version=digest.hexdigest()[:16])


@cache
def load_mapping() -> ObservationMapping:
    """The mapping packaged with sync_pipeline (sync_pipeline/analytics/mapping/*.csv)."""
    folder = resources.files("sync_pipeline.analytics").joinpath("mapping")
    texts = {name: folder.joinpath(f"{name}.csv").read_text(encoding="utf-8") for name in FILES}
    return parse_mapping(texts)


def is_loinc_code(code: str) -> bool:
    """A LOINC code's shape (digits, dash, one check digit), not whether LOINC defines it."""
    base, dash, check = code.partition("-")
    return bool(dash) and 1 <= len(base) <= 7 and set(base) <= _LOINC_DIGITS and len(check) == 1


def mapping_problems(mapping: ObservationMapping) -> list[str]:
    """What is wrong with a mapping (empty when it is consistent): duplicate keys, codes used by
    a rule but not defined in loinc.csv, units that have no UCUM spelling, conversions to a
    unit no concept uses, sentinels for fields no endpoint rule reads."""
    problems: list[str] = []

    def duplicates(table: pa.Table, name: str, keys: list[str]) -> None:
        seen: set[tuple[object, ...]] = set()
        for row in table.select(keys).to_pylist():
            key = tuple(row[k] for k in keys)
            if key in seen:
                problems.append(f"{name}: duplicate key {key}")
            seen.add(key)

    duplicates(mapping.loinc, "loinc.csv", ["code"])
    duplicates(mapping.names, "names.csv", ["category", "name"])
    duplicates(mapping.endpoints, "endpoints.csv", ["record_table", "field", "unit"])
    duplicates(mapping.units, "units.csv", ["source_unit"])
    duplicates(mapping.conversions, "conversions.csv", ["from_unit", "to_unit"])
    duplicates(mapping.sentinels, "sentinels.csv", ["record_table", "field", "value"])

    concepts = mapping.loinc.to_pylist()
    codes = {c["code"] for c in concepts}
    for concept in concepts:
        if not is_loinc_code(concept["code"] or ""):
            problems.append(f"loinc.csv: {concept['code']!r} is not a LOINC code")
        if not concept["display"] or not concept["unit"]:
            problems.append(f"loinc.csv: {concept['code']} needs a display and a UCUM unit")
        low, high = concept["low"], concept["high"]
        if low is not None and high is not None and low > high:
            problems.append(f"loinc.csv: {concept['code']} has low > high")
    for table, name in ((mapping.names, "names.csv"), (mapping.endpoints, "endpoints.csv")):
        for code in table.column("code").to_pylist():
            if code not in codes:
                problems.append(f"{name}: code {code!r} is not in loinc.csv")
    for category in set(mapping.names.column("category").to_pylist()):
        if category not in ("vital", "lab"):
            problems.append(f"names.csv: category {category!r} is not vital or lab")
    rules: dict[tuple[str, str], list[str | None]] = {}
    for row in mapping.endpoints.to_pylist():
        rules.setdefault((row["record_table"], row["field"]), []).append(row["unit"])
    for (table, field), units in rules.items():
        # a rule for any unit beside unit-specific ones would let one value match twice
        if None in units and len(units) > 1:
            problems.append(f"endpoints.csv: {table}.{field} mixes an any-unit rule with others")
    ucum = set(mapping.units.column("ucum").to_pylist())
    for unit in mapping.endpoints.column("unit").to_pylist():
        if unit and unit not in ucum:
            problems.append(f"endpoints.csv: unit {unit!r} is not a UCUM unit of units.csv")
    canonical = set(mapping.loinc.column("unit").to_pylist())
    for row in mapping.conversions.to_pylist():
        if row["from_unit"] not in ucum:
            problems.append(f"conversions.csv: {row['from_unit']!r} is not in units.csv")
        if row["to_unit"] not in canonical:
            problems.append(f"conversions.csv: {row['to_unit']!r} is no concept's unit")
        if not row["factor"] or row["factor"] <= 0:
            problems.append(f"conversions.csv: {row['from_unit']} → {row['to_unit']} factor")
    fields = {(r["record_table"], r["field"]) for r in mapping.endpoints.to_pylist()}
    for row in mapping.sentinels.to_pylist():
        if (row["record_table"], row["field"]) not in fields:
            problems.append(f"sentinels.csv: {row['record_table']}.{row['field']} is not read")
    return problems
