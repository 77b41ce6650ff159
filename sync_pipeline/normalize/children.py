"""Child tables: one row per element of a list inside a record (components, vital results, codes).

Each builder walks a page's kept records once to explode the list into flat Python lists,
then types the columns with the same page-wide converters as the record tables. `position`
is the element's 0-based index in the list as sent, so a reload replaces rows one for one;
elements that are not JSON objects are skipped (their record's `raw` still has them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from sync_pipeline.tables.columns import BOOL, FLOAT, INT, TEXT, Column

from .common import ChildSpec, extract, text_series, to_bool, to_float, to_text
from .components import parse_ref_range, parse_value_numeric

_KEY_COLUMNS = (
    Column("human_id", TEXT, "the parent record's user"),
    Column("record_id", TEXT, "the parent record's `id`"),
    Column("position", INT, "0-based index of the element in the parent record's list as sent"),
)
_LOINC_SYSTEM_OID = "2.16.840.1.113883.6.1"


@dataclass
class _Exploded:
    """One list inside each record, flattened: the parent's keys and position per element."""

    human_ids: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)

    def keys(self) -> dict[str, pd.Series]:
        return {
            "human_id": text_series(self.human_ids),
            "record_id": text_series(self.ids),
            "position": pd.Series(self.positions, dtype="Int64"),
        }


def _explode(
    human_ids: Sequence[str],
    record_ids: Sequence[str],
    records: Sequence[Mapping[str, Any]],
    key: str,
) -> _Exploded:
    out = _Exploded()
    for human_id, record_id, record in zip(human_ids, record_ids, records, strict=True):
        elements = record.get(key)
        if not isinstance(elements, list):
            continue
        for position, element in enumerate(elements):
            if isinstance(element, dict):
                out.human_ids.append(human_id)
                out.ids.append(record_id)
                out.positions.append(position)
                out.items.append(element)
    return out


def _loinc_code(codes: Any) -> str | None:
    """The code a list of codes gives in LOINC (by system name, or by LOINC's OID)."""
    if not isinstance(codes, list):
        return None
    for code in codes:
        if not isinstance(code, dict) or not isinstance(code.get("code"), str):
            continue
        system_name = code.get("codeSystemName")
        if (isinstance(system_name, str) and system_name.strip().upper() == "LOINC") or code.get(
            "codeSystem"
        ) == _LOINC_SYSTEM_OID:
            return str(code["code"])
    return None


def _value_text(values: list[Any]) -> list[Any]:
    # a value or code sent as a JSON number is kept as its JSON text, not dropped
    return [str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for v in values]


TEST_RESULT_COMPONENTS_COLUMNS: tuple[Column, ...] = (
    *_KEY_COLUMNS,
    Column("name", TEXT, "from `components[].name`"),
    Column("value", TEXT, "from `components[].value` (a number kept as its JSON text)"),
    Column("value_numeric", FLOAT),
    Column("unit", TEXT, "from `components[].unit`"),
    Column("ref_low", FLOAT, "from `components[].low`, else read from `ref_range`"),
    Column("ref_high", FLOAT, "from `components[].high`, else read from `ref_range`"),
    Column("ref_range", TEXT, "from `components[].refRange`"),
    Column("loinc_code", TEXT, "the component's LOINC code among its `codes`"),
    Column("comments", TEXT, "from `components[].componentComments`"),
)


def build_test_result_components(
    parent_table: str,
    human_ids: Sequence[str],
    record_ids: Sequence[str],
    records: Sequence[Mapping[str, Any]],
) -> pd.DataFrame:
    exploded = _explode(human_ids, record_ids, records, "components")
    items = exploded.items
    raw_values = extract(items, ("value",))
    value = to_text(_value_text(raw_values))
    # a number sent as a number is taken as is; text goes through the value parser
    value_numeric = to_float(
        [v if isinstance(v, int | float) else None for v in raw_values]
    ).fillna(parse_value_numeric(value))
    ref_range = to_text(extract(items, ("refRange",)))
    parsed_range = parse_ref_range(ref_range)
    # explicit bounds, where an upstream sends them, beat bounds read from the text
    ref_low = to_float(extract(items, ("low",))).fillna(parsed_range["ref_low"])
    ref_high = to_float(extract(items, ("high",))).fillna(parsed_range["ref_high"])
    return pd.DataFrame(
        {
            **exploded.keys(),
            "name": to_text(extract(items, ("name",))),
            "value": value,
            "value_numeric": value_numeric,
            "unit": to_text(extract(items, ("unit",))),
            "ref_low": ref_low,
            "ref_high": ref_high,
            "ref_range": ref_range,
            "loinc_code": to_text([_loinc_code(i.get("codes")) for i in items]),
            "comments": to_text(extract(items, ("componentComments",))),
        }
    )


VITAL_RESULTS_COLUMNS: tuple[Column, ...] = (
    *_KEY_COLUMNS,
    Column("name", TEXT, "from `results[].name`"),
    Column("normalized_name", TEXT, "from `results[].normalizedName`"),
    Column("value", FLOAT, "from `results[].value` (a trailing unit tolerated)"),
    Column("unit", TEXT, "from `results[].unit`"),
    Column("loinc_code", TEXT, "the result's LOINC code among its `codes`"),
)


def build_vital_results(
    parent_table: str,
    human_ids: Sequence[str],
    record_ids: Sequence[str],
    records: Sequence[Mapping[str, Any]],
) -> pd.DataFrame:
    exploded = _explode(human_ids, record_ids, records, "results")
    items = exploded.items
    raw_values = extract(items, ("value",))
    # pre-2020 records send "136"; a trailing unit ("136 mmHg") is tolerated like in labs
    value = to_float([v if isinstance(v, int | float) else None for v in raw_values]).fillna(
        parse_value_numeric(to_text(raw_values))
    )
    return pd.DataFrame(
        {
            **exploded.keys(),
            "name": to_text(extract(items, ("name",))),
            "normalized_name": to_text(extract(items, ("normalizedName",))),
            "value": value,
            "unit": to_text(extract(items, ("unit",))),
            "loinc_code": to_text([_loinc_code(i.get("codes")) for i in items]),
        }
    )


RECORD_CODES_COLUMNS: tuple[Column, ...] = (
    Column("table_name", TEXT, "the parent record's table"),
    *_KEY_COLUMNS,
    Column("code", TEXT, "from `codes[].code`"),
    Column("code_system", TEXT, "from `codes[].codeSystem`"),
    Column("code_system_name", TEXT, "from `codes[].codeSystemName`"),
    Column("name", TEXT, "from `codes[].name`"),
    Column("inferred", BOOL, "from `codes[].inferred`"),
)


def build_record_codes(
    parent_table: str,
    human_ids: Sequence[str],
    record_ids: Sequence[str],
    records: Sequence[Mapping[str, Any]],
) -> pd.DataFrame:
    exploded = _explode(human_ids, record_ids, records, "codes")
    items = exploded.items
    return pd.DataFrame(
        {
            "table_name": text_series([parent_table] * len(items)),
            **exploded.keys(),
            "code": to_text(_value_text(extract(items, ("code",)))),
            "code_system": to_text(extract(items, ("codeSystem",))),
            "code_system_name": to_text(extract(items, ("codeSystemName",))),
            "name": to_text(extract(items, ("name",))),
            "inferred": to_bool(extract(items, ("inferred",))),
        }
    )


TEST_RESULT_COMPONENTS = ChildSpec(
    "medical.test_result_components",
    TEST_RESULT_COMPONENTS_COLUMNS,
    build_test_result_components,
    "One row per element of a medical.test_results record (key human_id, record_id, position).",
)
VITAL_RESULTS = ChildSpec(
    "medical.vital_results",
    VITAL_RESULTS_COLUMNS,
    build_vital_results,
    "One row per element of a medical.vitals record (key human_id, record_id, position).",
)
RECORD_CODES = ChildSpec(
    "medical.record_codes",
    RECORD_CODES_COLUMNS,
    build_record_codes,
    "One row per code on any medical record (key table_name, human_id, record_id, position).",
)
