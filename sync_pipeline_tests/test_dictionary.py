"""The data dictionary: rendered from a real warehouse file, and the committed copy never drifts."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from sync_pipeline import dictionary
from sync_pipeline.dictionary import render_dictionary
from sync_pipeline.tables.registry import TABLES, VIEWS
from sync_pipeline.warehouse import db

COMMITTED = Path(__file__).resolve().parents[1] / "docs" / "data-dictionary.md"


def _create_warehouse(path: Path) -> Path:
    with db.connect(path):  # a writer connection creates every schema, table and view
        pass
    return path


@pytest.fixture(scope="module")
def fresh_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # read-only for the tests that share it (creating ~45 tables takes half a second)
    return _create_warehouse(tmp_path_factory.mktemp("dictionary") / "warehouse.duckdb")


@pytest.fixture(scope="module")
def rendered(fresh_warehouse: Path) -> str:
    return render_dictionary(fresh_warehouse)


def _section(text: str, table: str) -> str:
    start = text.index(f"### `{table}`\n")
    end = text.find("\n### ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_committed_dictionary_matches_a_fresh_warehouse(rendered: str) -> None:
    # on failure: python -m sync_pipeline.dictionary <fresh warehouse> > docs/data-dictionary.md
    assert rendered == COMMITTED.read_text(encoding="utf-8")


def test_every_table_and_view_has_a_described_section(rendered: str) -> None:
    for table in [*TABLES, *VIEWS]:
        section = _section(rendered, table)
        assert "(no description in the code)" not in section, table
        assert section.count("\n| `") >= 2, table  # at least two column rows


@pytest.mark.parametrize(
    ("table", "row"),
    [
        ("medical.test_results", "| `result_at` | TIMESTAMP WITH TIME ZONE | from `"),
        ("medical.allergies", "| `reactions` | VARCHAR[] | from `reactionsFull.[].name` |"),
        ("wellness.blood_pressure", "| `systolic` | BIGINT | from `systolic` |"),
        ("connect.users", "| `needs_reconnect` | BOOLEAN |  |"),
        ("medical.test_result_components", "| `value_numeric` | DOUBLE |  |"),
    ],
)
def test_columns_carry_duckdb_types_and_upstream_fields(
    rendered: str, table: str, row: str
) -> None:
    assert row in _section(rendered, table)


def test_types_are_read_from_the_file_not_from_the_code(tmp_path: Path) -> None:
    # a column a later schema version (or an analyst) added shows up, with DuckDB's own type
    path = _create_warehouse(tmp_path / "warehouse.duckdb")
    with duckdb.connect(str(path)) as con:
        con.execute("ALTER TABLE wellness.weight ADD COLUMN note_len HUGEINT")
    section = _section(render_dictionary(path), "wellness.weight")
    assert "| `note_len` | HUGEINT |  |" in section


def test_keys_and_parents_come_from_the_code(rendered: str) -> None:
    components = _section(rendered, "medical.test_result_components")
    assert "- Key: `human_id`, `record_id`, `position`" in components
    assert "- Child of `medical.test_results`" in components
    assert "- Key: `human_id`, `source_id`, `valid_from`" in _section(
        rendered, "connect.connection_history"
    )


def test_entry_point_writes_the_dictionary(
    fresh_warehouse: Path, rendered: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert dictionary.main([str(fresh_warehouse)]) == 0
    assert capsys.readouterr().out == rendered


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [(["a", "b"], 2, "usage:"), (["/nonexistent/warehouse.duckdb"], 1, "no warehouse at")],
)
def test_entry_point_refuses_bad_arguments(
    argv: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert dictionary.main(argv) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err
