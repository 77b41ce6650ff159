"""The analysts' data dictionary, rendered from a real warehouse file (not kept by hand).

Columns and their DuckDB types come from the file's information_schema, so the dictionary
says what DuckDB really made of the Arrow schemas. What a row is comes from the code: the
Dagster asset descriptions (the same text the UI shows), falling back to the notes below for
the bookkeeping tables that no asset materialises; keys come from the normalisers and the
warehouse schemas; for record tables, each typed column names the upstream field it is read
from (the normalisers' table specs).

    python -m sync_pipeline.dictionary [warehouse.duckdb] > docs/data-dictionary.md

A test regenerates docs/data-dictionary.md from a freshly created warehouse and compares, so
a schema change without a regenerated dictionary fails CI.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from sync_pipeline.analytics.schemas import ANALYTICS_KEYS, COLUMN_NOTES, DESCRIPTIONS, STATE
from sync_pipeline.normalize.schemas import PARENT_OF, SPECS, TABLE_KEYS
from sync_pipeline.warehouse import db
from sync_pipeline.warehouse.schemas import OWNED_KEYS, VIEWS
from sync_pipeline.warehouse.target import WarehouseTarget

SCHEMA_ORDER = ("analytics", "medical", "wellness", "connect", "ops")
SCHEMA_NOTES = {
    "analytics": "The analyst layer: one coded, unit-normalised observations table (LOINC, UCUM) "
    "with lineage, the latest value per code, and daily coverage that explains gaps.",
    "medical": "Medical records (EHR data), one table per upstream endpoint, plus child tables.",
    "wellness": "Wellness data (activities, sleep, readings), one table per upstream endpoint.",
    "connect": "Who is connected to which source, rebuilt from Connect session responses.",
    "ops": "The pipeline's own bookkeeping: notifications, rejects, cursors, requests, loads.",
}

# Tables with no Dagster asset (written as a by-product of a sync), so no asset description.
# An asset with the same key, if one is added, wins over these notes.
TABLE_NOTES = {
    "ops.rejected_records": "One row per upstream record or intake item that could not be "
    "loaded, with the reason and the raw text; received = loaded + rejected.",
    "ops.flagged_records": "One row per loaded record and flag: `text_repaired` (lone "
    "surrogates replaced by U+FFFD), `future_updated_at` (updatedAt past the upstream's clock "
    "by more than SYNC_FUTURE_TOLERANCE_S; updated_at stored as that clock, raw as sent).",
    "ops.sync_state": "One row per (user, endpoint): the cursor the next catch-up starts from.",
    "ops.http_requests": "One row per HTTP attempt toward the upstream (request audit; never "
    "a token or query string).",
    "ops.load_log": "One row per (run, table) committed: received, loaded, rejected, inserted, "
    "updated and deleted counts.",
    "ops.sync_failures": "One row per (run, user, endpoint) that could not be synced, and why.",
    "connect.token_refusals": "One row per token request the upstream refused (403/404) "
    "during a sync: that user must reconnect.",
    "connect.current_connections": "View: one row per open connection (the rows of "
    "connect.connection_history with valid_to NULL).",
    STATE: DESCRIPTIONS[STATE],
}

# Columns every record table starts with (contract part C).
COMMON_COLUMN_NOTES = {
    "human_id": "the upstream's user id (32 hex)",
    "record_id": "the upstream record's `id`",
    "source_id": "the record's `source`",
    "created_at": "`createdAt`",
    "updated_at": "`updatedAt` (`createdAt` when unusable); the last one wins on reload",
    "deleted_at": "set when the upstream answered 404 for the record",
    "raw": "the record exactly as received (JSON text)",
}


def _asset_descriptions() -> dict[str, str]:
    from sync_pipeline.definitions import defs

    return {
        ".".join(spec.key.path): " ".join(spec.description.split())
        for spec in defs.resolve_all_asset_specs()
        if spec.description
    }


def _column_sources() -> dict[str, dict[str, str]]:
    """Record table → typed column → the upstream field path it is read from."""
    return {
        table: {
            field.column: ".".join("[]" if s == "*" else str(s) for s in field.path)
            for field in spec.fields
        }
        for table, spec in SPECS.items()
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table_section(
    table: str,
    kind: str,
    columns: Sequence[tuple[str, str]],
    description: str,
    sources: Mapping[str, str],
) -> list[str]:
    keys = TABLE_KEYS.get(table) or OWNED_KEYS.get(table) or ANALYTICS_KEYS.get(table)
    lines = [f"### `{table}`", "", _cell(description) or "(no description in the code)", ""]
    facts = []
    if kind == "VIEW":
        facts.append(f"View: `{VIEWS.get(table, '')}`")
    if kind != "VIEW":
        facts.append(
            "Key: " + (", ".join(f"`{k}`" for k in keys) if keys else "none declared (a log)")
        )
    if table in PARENT_OF:
        facts.append(f"Child of `{PARENT_OF[table]}` (joined on `human_id`, `record_id`)")
    lines += [f"- {fact}" for fact in facts] + [
        "",
        "| column | DuckDB type | notes |",
        "|---|---|---|",
    ]
    is_record_table = table in SPECS
    for name, data_type in columns:
        if name in COLUMN_NOTES.get(table, {}):
            note = COLUMN_NOTES[table][name]
        elif is_record_table and name in COMMON_COLUMN_NOTES:
            note = COMMON_COLUMN_NOTES[name]
        elif name == "position" and keys and "position" in keys:
            note = "0-based index of the element in the parent record's list as sent"
        elif name in sources:
            note = f"from `{sources[name]}`"
        else:
            note = ""
        lines.append(f"| `{name}` | {data_type} | {_cell(note)} |")
    return [*lines, ""]


def render_dictionary(warehouse: Path | WarehouseTarget) -> str:
    """The Markdown data dictionary of the warehouse (a file, or settings.warehouse: a DuckLake
    too), opened read-only."""
    with db.connect(warehouse, read_only=True) as con:
        tables = con.execute(
            "SELECT table_schema, table_name, table_type FROM information_schema.tables "
            "WHERE table_catalog = current_database() "
            "AND table_schema IN (SELECT unnest(?::VARCHAR[]))",
            [list(SCHEMA_ORDER)],
        ).fetchall()
        columns = con.execute(
            "SELECT table_schema, table_name, column_name, data_type "
            "FROM information_schema.columns WHERE table_catalog = current_database() "
            "AND table_schema IN (SELECT unnest(?::VARCHAR[])) "
            "ORDER BY table_schema, table_name, ordinal_position",
            [list(SCHEMA_ORDER)],
        ).fetchall()
    by_table: dict[str, list[tuple[str, str]]] = {}
    for schema, name, column, data_type in columns:
        by_table.setdefault(f"{schema}.{name}", []).append((column, data_type))
    descriptions = {**TABLE_NOTES, **_asset_descriptions()}
    sources = _column_sources()

    lines = [
        "# Data dictionary",
        "",
        "<!-- Generated by `python -m sync_pipeline.dictionary` from a warehouse's own schema;",
        "     do not edit by hand (a test compares it with a freshly created warehouse). -->",
        "",
        "The warehouse is the DuckDB file `$SYNC_DATA_DIR/warehouse.duckdb` (by default",
        "`data/warehouse.duckdb`). Instants are `TIMESTAMP WITH TIME ZONE` in UTC. In record",
        "tables, `notes` names the upstream field a typed column is read from; `raw` keeps the",
        "whole record as received.",
        "Example queries: [queries.md](queries.md).",
        "",
    ]
    kinds = {f"{s}.{n}": t for s, n, t in tables}
    for schema in SCHEMA_ORDER:
        names = sorted(t for t in kinds if t.split(".", 1)[0] == schema)
        if not names:
            continue
        lines += [f"## Schema `{schema}`", "", SCHEMA_NOTES[schema], ""]
        lines += [f"- [`{t}`](#{t.replace('.', '')})" for t in names] + [""]
        for table in names:
            lines += _table_section(
                table,
                kinds[table],
                by_table.get(table, []),
                descriptions.get(table, ""),
                sources.get(table, {}),
            )
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: Sequence[str]) -> int:
    if len(argv) > 1:
        print("usage: python -m sync_pipeline.dictionary [warehouse.duckdb]", file=sys.stderr)
        return 2
    path: Path | WarehouseTarget
    if argv:
        path = Path(argv[0])
    else:
        from sync_pipeline.settings import load_settings

        path = load_settings().warehouse
    if not path.exists():
        print(f"no warehouse at {path}", file=sys.stderr)
        return 1
    sys.stdout.write(render_dictionary(path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
