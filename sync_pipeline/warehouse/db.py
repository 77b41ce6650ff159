"""All SQL against the DuckDB warehouse. Nothing outside warehouse/ writes SQL (the analyst
layer's is in warehouse/analytics.py).

Identifiers (schemas, tables, columns) only ever come from the table registry
(sync_pipeline.tables.registry, an allow-list); every value is a bound parameter or an Arrow
relation registered on the connection. The DDL and the catalog comments are generated from the
same registry, so any SQL client shows each table's and column's description.

Keys are enforced by construction (batches are deduplicated, rows replaced by key inside one
transaction) rather than by PRIMARY KEY constraints: DuckDB rejects a delete-then-insert of the
same key in one transaction when an index exists, and asset checks verify uniqueness.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeAlias

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sync_pipeline.private import owner_only_files
from sync_pipeline.tables import frames
from sync_pipeline.tables.connect import APP_USERS, SESSION_RESPONSES, USERS
from sync_pipeline.tables.ops import (
    NOTIFICATION_ITEMS,
    NOTIFICATION_STATUS,
    NOTIFICATIONS,
    REJECT_TABLES,
    REJECTED_RECORDS,
)
from sync_pipeline.tables.registry import TABLES, VIEW_DESCRIPTIONS, VIEWS
from sync_pipeline.upstream.errors import NEEDS_RECONNECT, failure_kind
from sync_pipeline.warehouse import lake
from sync_pipeline.warehouse.conflicts import retrying
from sync_pipeline.warehouse.location import WarehouseLocation, mask_secrets


def quoted(table: str) -> str:
    """Quote a schema-qualified table name after checking it against the allow-list."""
    if table not in TABLES and table not in VIEWS:
        raise ValueError(f"unknown table {table!r}")
    schema, name = table.split(".", 1)
    return f'"{schema}"."{name}"'


def _col(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class WarehouseEncryptionUnavailable(RuntimeError):
    """SYNC_WAREHOUSE_KEY is set but this DuckDB cannot write encrypted files."""


class UndeclaredWrite(RuntimeError):
    """A step wrote a table it does not own: every table has one writing asset, its `owner` in
    the table registry (docs: README, "One declaration per table, one writer per table")."""


# connection (by id, while open) → the tables it may write; connections opened without
# `writes` (tests, tools) are not restricted
_WRITES: dict[int, frozenset[str]] = {}


def written(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """The quoted name of a table about to be written (INSERT, UPDATE, DELETE), after checking
    that the connection's step owns it. Every data write in the package names its target
    through this function (a test reads the SQL to make sure)."""
    allowed = _WRITES.get(id(con))
    if allowed is not None and table not in allowed:
        raise UndeclaredWrite(
            f"{table} is not among the tables this step owns ({', '.join(sorted(allowed))})"
        )
    return quoted(table)


def extension_directory() -> str | None:
    """Where the PyPI packages duckdb-ext-httpfs / -ducklake / -postgres put their extensions
    (`<site-packages>/duckdb_ext/extensions`, one DuckDB version's builds): DuckDB loads them
    from there, nothing is downloaded (no extension repository is reachable here)."""
    import importlib.util

    spec = importlib.util.find_spec("duckdb_ext")
    if spec is None or not spec.submodule_search_locations:
        return None
    return str(Path(next(iter(spec.submodule_search_locations))) / "extensions")


def _config() -> dict[str, str | bool | int | float | list[str]]:
    """The configuration of every in-memory host connection that loads an extension (an
    encrypted file, a DuckLake): the one place the extension directory is set."""
    config: dict[str, str | bool | int | float | list[str]] = {}
    directory = extension_directory()
    if directory is not None:
        config["extension_directory"] = directory
    return config


def _literal(text: str) -> str:
    """An SQL string literal: ATTACH options and CREATE SECRET values cannot be bound
    parameters."""
    return "'" + text.replace("'", "''") + "'"


@contextmanager
def connect(
    target: Path | WarehouseLocation,
    *,
    read_only: bool = False,
    key: str | None = None,
    writes: Collection[str] | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse `target`: a WarehouseLocation (settings.warehouse,
    WarehouseResource.location; it carries its key), the DuckDB file or the DuckLake
    SYNC_WAREHOUSE names, or a bare DuckDB file Path (with `key` if encrypted). Either way the
    warehouse is the default catalog, so every other function here works unchanged on both.

    A file has one writing process at a time (one Dagster pool slot), so this never retries on
    a lock: a lock error means that rule was broken and should surface. A DuckLake on
    PostgreSQL takes many writers; their commit conflicts are retried by the caller's unit of
    work (warehouse/conflicts.py).

    With `key` (settings.warehouse_key, SYNC_WAREHOUSE_KEY) a file is attached encrypted, and
    a DuckLake writes encrypted Parquet (its per-file keys live in the catalog). DuckDB writes
    encrypted files only through the httpfs extension (OpenSSL); where that cannot be loaded
    a writer fails here rather than write plaintext.

    `writes`: the tables the calling step owns (`tables.registry.written_by(<its node name>)`);
    a write to any other table through this connection raises UndeclaredWrite."""
    if isinstance(target, Path):
        target = WarehouseLocation(path=target, key=key)
    elif key is not None:
        raise TypeError("a WarehouseLocation carries its own key")
    key = target.key
    owner_only_files()
    if target.is_lake:
        con = _open_lake(target, read_only=read_only, key=key)
    else:
        assert target.path is not None
        target.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if key is None:
            # no extension is loaded here, and DuckDB refuses a second connection to a file
            # already open in this process with a different configuration: the plain file is
            # opened with none, as any other DuckDB (tests, an analyst's session) opens it
            con = duckdb.connect(str(target.path), read_only=read_only)
        else:
            con = _open_encrypted_file(target.path, read_only=read_only, key=key)
    if writes is not None:
        _WRITES[id(con)] = frozenset(writes)
    try:
        if not read_only:
            retrying(lambda: ensure_tables(con), what="creating the warehouse tables")
        yield con
    finally:
        _WRITES.pop(id(con), None)
        con.close()


def _load_httpfs(con: duckdb.DuckDBPyConnection, *, read_only: bool) -> None:
    try:
        con.execute("LOAD httpfs")
    except duckdb.Error as exc:
        if not read_only:
            raise WarehouseEncryptionUnavailable(
                f"SYNC_WAREHOUSE_KEY is set, but duckdb {duckdb.__version__} cannot write "
                "encrypted databases here: it needs the httpfs extension (OpenSSL), "
                f"which did not load ({exc}). Install the DuckDB this project pins with its "
                "extension packages (duckdb==1.4.4 with duckdb-ext-httpfs==1.4.4.20260205), or "
                "unset SYNC_WAREHOUSE_KEY to keep the warehouse unencrypted."
            ) from exc


def _open_encrypted_file(path: Path, *, read_only: bool, key: str) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:", config=_config())
    try:
        _load_httpfs(con, read_only=read_only)
        mode = ", READ_ONLY" if read_only else ""
        try:
            # the key is ASCII (Settings checks) and quoted as an SQL string literal
            con.execute(
                f"ATTACH {_literal(str(path))} AS warehouse (ENCRYPTION_KEY {_literal(key)}{mode})"
            )
        except duckdb.Error as exc:
            # a parser error would quote the statement: never let the key into a message
            message = str(exc).replace(key, "<SYNC_WAREHOUSE_KEY>")
            raise type(exc)(message) from None
        con.execute("USE warehouse")
    except BaseException:
        con.close()
        raise
    return con


def _open_lake(
    target: WarehouseLocation, *, read_only: bool, key: str | None
) -> duckdb.DuckDBPyConnection:
    """ATTACH the DuckLake as `warehouse` and USE it. Its catalog is PostgreSQL (postgres
    extension) or a local DuckDB file; its data path a folder or s3:// (httpfs, with a secret
    from the usual AWS_* variables and SYNC_LAKE_ENDPOINT_URL)."""
    assert target.catalog is not None and target.data_path is not None
    con = duckdb.connect(":memory:", config=_config())
    try:
        con.execute("LOAD ducklake")
        if target.is_postgres:
            con.execute("LOAD postgres")
        else:
            Path(target.catalog).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if lake.is_remote(target.data_path):
            con.execute("LOAD httpfs")
            _create_s3_secret(con, target.endpoint_url)
        elif not read_only:
            Path(target.data_path).mkdir(parents=True, exist_ok=True, mode=0o700)
        if key is not None:
            _load_httpfs(con, read_only=read_only)
        options = [f"DATA_PATH {_literal(target.data_path)}"]
        if read_only:
            options.append("READ_ONLY")
        if key is not None:
            options.append("ENCRYPTED")
        try:
            con.execute(
                f"ATTACH {_literal('ducklake:' + target.catalog)} AS warehouse "
                f"({', '.join(options)})"
            )
        except duckdb.Error as exc:
            # an error may quote the catalog string, password included
            raise type(exc)(mask_secrets(str(exc)).replace(target.catalog, target.shown)) from None
        con.execute("USE warehouse")
    except BaseException:
        con.close()
        raise
    return con


def _create_s3_secret(con: duckdb.DuckDBPyConnection, endpoint: str | None) -> None:
    """httpfs's S3 credentials, from the AWS_* variables the staged lake (s3fs) reads too, and
    the lake's endpoint (SYNC_LAKE_ENDPOINT_URL, carried by the location)."""
    import os
    from urllib.parse import urlsplit

    parts = {
        "KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID"),
        "SECRET": os.environ.get("AWS_SECRET_ACCESS_KEY"),
        "SESSION_TOKEN": os.environ.get("AWS_SESSION_TOKEN"),
        "REGION": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
    }
    if endpoint:
        url = urlsplit(endpoint)
        parts["ENDPOINT"] = url.netloc
        parts["URL_STYLE"] = "path"  # MinIO, moto: buckets are paths, not host names
        parts["USE_SSL"] = "true" if url.scheme == "https" else "false"
    options = ", ".join(
        f"{name} {value if name == 'USE_SSL' else _literal(value)}"
        for name, value in parts.items()
        if value
    )
    try:
        con.execute(f"CREATE OR REPLACE TEMPORARY SECRET {lake.S3_SECRET} (TYPE s3, {options})")
    except duckdb.Error as exc:
        # an error may quote the statement: never the credentials
        message = str(exc)
        for value in (parts["SECRET"], parts["SESSION_TOKEN"]):
            if value:
                message = message.replace(value, "***")
        raise type(exc)(message) from None


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create every schema, table and view of the registry that does not exist yet; add
    columns a newer declaration gained (never drop: analysts may rely on them); keep the
    catalog's comments equal to the declared descriptions. One transaction, and nothing is
    written when everything is current: in a DuckLake each write is a snapshot, and
    concurrent writers opening the lake must not conflict over a no-op. Call outside a
    transaction."""
    with transaction(con):
        have_schemas = {
            str(r[0])
            for r in con.execute(
                "SELECT schema_name FROM duckdb_schemas() WHERE database_name = current_database()"
            ).fetchall()
        }
        for schema in sorted({t.schema_name for t in TABLES.values()} - have_schemas):
            con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        base_tables = {
            f"{s}.{t}"
            for s, t in con.execute(
                "SELECT schema_name, table_name FROM duckdb_tables() "
                "WHERE database_name = current_database()"
            ).fetchall()
        }
        # an older layout's shared tables become views (in this same transaction)
        _split_shared_tables(con, base_tables)
        columns: dict[str, set[str]] = {}
        for s, t, c in con.execute(
            "SELECT schema_name, table_name, column_name FROM duckdb_columns() "
            "WHERE database_name = current_database()"
        ).fetchall():
            columns.setdefault(f"{s}.{t}", set()).add(str(c))
        for name, declared in TABLES.items():
            if name not in columns:
                empty = declared.schema.empty_table()  # noqa: F841 - read by DuckDB's replacement scan
                con.execute(f"CREATE TABLE {quoted(name)} AS SELECT * FROM empty LIMIT 0")
                continue
            for field in declared.schema:
                if field.name not in columns[name]:
                    con.execute(
                        f"ALTER TABLE {quoted(name)} ADD COLUMN {_col(field.name)} "
                        f"{_duck_type(con, field)}"
                    )
        stored = {
            f"{s}.{v}": _view_body(str(sql))
            for s, v, sql in con.execute(
                "SELECT schema_name, view_name, sql FROM duckdb_views() "
                "WHERE database_name = current_database() AND NOT internal"
            ).fetchall()
        }
        for view, query in VIEWS.items():
            if stored.get(view) != _normalised_view(con, query):
                con.execute(f"CREATE OR REPLACE VIEW {quoted(view)} AS {query}")
        # in the same transaction: a fresh warehouse takes some 500 comments, and each in its
        # own would be a catalog write (a DuckLake snapshot) of its own
        for statement in _comments(con):
            con.execute(statement)


def _comments(con: duckdb.DuckDBPyConnection) -> list[str]:
    """COMMENT ON for every table, view and described column whose catalog comment differs
    from its declaration (one read of the catalog; none when all agree, so opening a writer
    writes nothing)."""
    objects = {
        f"{s}.{n}": c or ""
        for s, n, c in con.execute(
            "SELECT schema_name, table_name, comment FROM duckdb_tables() "
            "WHERE database_name = current_database() UNION ALL "
            "SELECT schema_name, view_name, comment FROM duckdb_views() "
            "WHERE database_name = current_database() AND NOT internal"
        ).fetchall()
    }
    columns = {
        (f"{s}.{t}", n): c or ""
        for s, t, n, c in con.execute(
            "SELECT schema_name, table_name, column_name, comment FROM duckdb_columns() "
            "WHERE database_name = current_database()"
        ).fetchall()
    }
    statements = [
        f"COMMENT ON VIEW {quoted(view)} IS {_literal(description)}"
        for view, description in VIEW_DESCRIPTIONS.items()
        if objects.get(view) != description
    ]
    for name, declared in TABLES.items():
        if objects.get(name) != declared.description:
            statements.append(
                f"COMMENT ON TABLE {quoted(name)} IS {_literal(declared.description)}"
            )
        statements += [
            f"COMMENT ON COLUMN {quoted(name)}.{_col(c.name)} IS {_literal(c.description)}"
            for c in declared.columns
            if c.description and columns.get((name, c.name)) != c.description
        ]
    return statements


def _view_body(sql: str) -> str:
    """The query of a stored view's SQL (`CREATE VIEW name AS <query>;`), as DuckDB keeps it."""
    return sql.split(" AS ", 1)[-1].rstrip(";")


def _normalised_view(con: duckdb.DuckDBPyConnection, query: str) -> str:
    """`query` as DuckDB would store it in a view, via a temporary view (written nowhere)."""
    con.execute(f"CREATE OR REPLACE TEMP VIEW _view_probe AS {query}")
    try:
        row = con.execute(
            "SELECT sql FROM duckdb_views() WHERE database_name = 'temp' AND view_name = ?",
            ["_view_probe"],
        ).fetchone()
    finally:
        con.execute("DROP VIEW IF EXISTS temp.main._view_probe")
    assert row is not None
    return _view_body(str(row[0]))


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """BEGIN … COMMIT, rolled back on any error. A COMMIT that fails (a DuckLake commit
    conflict) has already ended the transaction; the ROLLBACK then has nothing to undo, and
    the commit's own error is the one raised."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        # no transaction is active any more when a failed COMMIT ended it
        with suppress(duckdb.TransactionException):
            con.execute("ROLLBACK")
        raise


def _split_shared_tables(con: duckdb.DuckDBPyConnection, existing: set[str]) -> set[str]:
    """Warehouses made before one writer per table had ops.notifications, connect.users and
    ops.rejected_records as tables two assets wrote; they become views over tables with one
    writer each (tables/ops.py, tables/connect.py). Returns the tables dropped (the views take
    their names)."""
    dropped: set[str] = set()
    if NOTIFICATIONS in existing:
        if NOTIFICATION_ITEMS not in existing:
            con.execute(
                f"CREATE TABLE {quoted(NOTIFICATION_ITEMS)} AS "
                f"SELECT * EXCLUDE (status, synced_at, sync_run_id) FROM {quoted(NOTIFICATIONS)}"
            )
            existing.add(NOTIFICATION_ITEMS)
        if NOTIFICATION_STATUS not in existing:
            con.execute(
                f"CREATE TABLE {quoted(NOTIFICATION_STATUS)} AS "
                "SELECT notification_id, status, synced_at, sync_run_id "
                f"FROM {quoted(NOTIFICATIONS)} WHERE status IS DISTINCT FROM 'received'"
            )
            existing.add(NOTIFICATION_STATUS)
        con.execute(f"DROP TABLE {quoted(NOTIFICATIONS)}")
        dropped.add(NOTIFICATIONS)
    if USERS in existing:
        if APP_USERS not in existing:
            # the next connection_state run rebuilds it from the sessions; until then
            # reconnected_at is a stand-in that keeps each user's needs_reconnect as it was
            # (NULL: refused and not back; otherwise an instant no refusal is after)
            con.execute(
                f"CREATE TABLE {quoted(APP_USERS)} AS "
                "SELECT client_user_id, human_id, first_seen_at, last_seen_at, "
                "last_session_status, CASE WHEN needs_reconnect THEN NULL "
                f"ELSE CAST(now() AS TIMESTAMPTZ) END AS reconnected_at FROM {quoted(USERS)}"
            )
            existing.add(APP_USERS)
        con.execute(f"DROP TABLE {quoted(USERS)}")
        dropped.add(USERS)
    if REJECTED_RECORDS in existing:
        # each reject goes to the table of the asset that made it, told by its table_name
        # (the intake's rejects name contract part C's tables)
        intake = f"'{NOTIFICATIONS}', '{SESSION_RESPONSES}'"
        origin = {
            REJECT_TABLES["notifications"]: f"= '{NOTIFICATIONS}'",
            REJECT_TABLES["sessions"]: f"= '{SESSION_RESPONSES}'",
            REJECT_TABLES["records"]: f"IS NULL OR table_name NOT IN ({intake})",
        }
        for table, which in origin.items():
            if table not in existing:
                columns = ", ".join(_col(c) for c in TABLES[table].column_names)
                con.execute(
                    f"CREATE TABLE {quoted(table)} AS SELECT {columns} "
                    f"FROM {quoted(REJECTED_RECORDS)} WHERE table_name {which}"
                )
                existing.add(table)
        con.execute(f"DROP TABLE {quoted(REJECTED_RECORDS)}")
        dropped.add(REJECTED_RECORDS)
    return dropped


def _duck_type(con: duckdb.DuckDBPyConnection, field: pa.Field) -> str:
    probe = pa.table({field.name: pa.array([], field.type)})  # noqa: F841
    row = con.execute("SELECT column_type FROM (DESCRIBE SELECT * FROM probe)").fetchone()
    assert row is not None
    return str(row[0])


def conform(table: str, data: pa.Table) -> pa.Table:
    """Cast an Arrow table to the table's declared schema: same columns, order and types."""
    return frames.conform(TABLES[table], data)


@dataclass(frozen=True)
class UpsertCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


Rows: TypeAlias = pa.Table | duckdb.DuckDBPyRelation
"""Rows to load: an Arrow table (cast to the table's schema here), or a DuckDB relation over
staged Parquet, which already has the schema and is scanned by DuckDB without first being
materialised in Python memory."""


def _conformed(table: str, rows: Rows) -> Rows:
    return conform(table, rows) if isinstance(rows, pa.Table) else rows


def staged_rows(
    con: duckdb.DuckDBPyConnection, files: Sequence[str], *, table_name: str | None = None
) -> duckdb.DuckDBPyRelation:
    """A lazy scan of staged Parquet files (optionally only one parent table's rows of
    medical.record_codes)."""
    rows = con.read_parquet(list(files))
    if table_name is not None:
        rows = rows.filter(
            duckdb.ColumnExpression("table_name") == duckdb.ConstantExpression(table_name)
        )
    return rows


# DuckDB's default memory limit is 80% of RAM, and it keeps what one big transaction writes
# in its buffer pool up to that limit: a first sync of a million records held GBs. A bound
# makes it spill to its temp directory instead; the commit is a sequence of scans and
# inserts, which need little working memory.
COMMIT_MEMORY_LIMIT = "256MB"


def bound_memory(con: duckdb.DuckDBPyConnection, limit: str = COMMIT_MEMORY_LIMIT) -> None:
    """Cap DuckDB's memory on this database (spilling beyond it) and let inserts drop
    insertion order, which otherwise buffers whole inputs."""
    con.execute("SET memory_limit = ?", [limit])
    con.execute("SET preserve_insertion_order = false")


def _one_row_per_key(
    con: duckdb.DuckDBPyConnection, source: str, target: str, key_list: str, *, order: str = ""
) -> tuple[str, int]:
    """One row of `source` per key (`key_list`), the first by `order` (any of them without
    one): the relation to read them from, and how many keys there are. A source whose keys are
    all distinct (a batch normally is) is that relation itself, read again where it is used
    rather than copied; otherwise temp table `target`. The window sorts only a row number, the
    keys and the order columns, never whole rows: over wide rows (a first sync of a million
    records) DuckDB 1.4's window cannot spill within COMMIT_MEMORY_LIMIT and fails out of
    memory, where the copies and the semi-join here spill."""
    row = con.execute(f"SELECT count(*), count(DISTINCT ({key_list})) FROM {source}").fetchone()
    assert row is not None
    rows, keys = int(row[0]), int(row[1])
    if rows == keys:
        return source, keys
    by = f" ORDER BY {order}" if order else ""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE rows_numbered AS "
        f"SELECT row_number() OVER () AS _row, * FROM {source}"
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {target} AS
        SELECT * EXCLUDE (_row) FROM rows_numbered WHERE _row IN (
            SELECT _row FROM rows_numbered
            QUALIFY row_number() OVER (PARTITION BY {key_list}{by}) = 1
        )"""
    )
    con.execute("DROP TABLE temp.main.rows_numbered")
    return target, keys


def row_count(rows: duckdb.DuckDBPyRelation) -> int:
    return int(rows.aggregate("count(*)").fetchall()[0][0])


def upsert_latest(
    con: duckdb.DuckDBPyConnection,
    table: str,
    batch: Rows,
    keys: Sequence[str],
    children: Mapping[str, Rows] | None = None,
    *,
    rewrite_identical: bool = False,
) -> UpsertCounts:
    """Upsert record rows where the batch's `updated_at` is at least the stored one (last
    updatedAt wins; a tie replaces a stored row it differs from, so re-running a batch is a
    no-op in effect). Child rows of every replaced parent are replaced wholesale. Call inside a
    transaction.

    A row equal to the stored one in every column (a catch-up re-reading its trailing window
    gets mostly these) is left as it is, children included: deleting and re-inserting it would
    change nothing but cost the write (and a DuckLake snapshot). Its children are derived from
    its `raw`, which is equal, so they differ only after a change of the normaliser; a full
    re-pull (`rewrite_identical`, `sync --full`) rewrites every row it reads, and so re-derives
    them. Either way an equal row counts as unchanged, not updated."""
    batch = _conformed(table, batch)
    key_list = ", ".join(_col(k) for k in keys)
    join = " AND ".join(f"s.{_col(k)} = t.{_col(k)}" for k in keys)
    con.register("batch_in", batch)
    try:
        # newest version of each key inside the batch first
        latest, batch_keys = _one_row_per_key(
            con, "batch_in", "batch_latest", key_list, order="updated_at DESC NULLS LAST"
        )
        updated = 0
        if not con.execute(f"SELECT 1 FROM {quoted(table)} LIMIT 1").fetchall():
            # first load of a table (a full sync into a fresh warehouse): every row wins and
            # nothing is replaced, so the rows go in straight from the batch, not through a
            # copy of whole rows in `winners`, which holds just the keys the children need
            inserted = _created(
                con.execute(f"INSERT INTO {written(con, table)} BY NAME SELECT * FROM {latest}")
            )
            if children:
                con.execute(
                    "CREATE OR REPLACE TEMP TABLE winners AS "
                    f"SELECT human_id, record_id FROM {latest}"
                )
        elif _stage_winners(con, table, latest, keys, join, rewrite_identical=rewrite_identical):
            row = con.execute(
                "SELECT count(*) FILTER (WHERE NOT _existed), "
                "count(*) FILTER (WHERE _existed AND NOT _same) FROM winners"
            ).fetchone()
            assert row is not None
            inserted, updated = int(row[0]), int(row[1])
            _write_winners(con, table, key_list)
        else:  # nothing to write: every row equal to its stored one, or older
            return UpsertCounts(unchanged=batch_keys)
        for child_table, child_rows in (children or {}).items():
            _replace_children(con, table, child_table, _conformed(child_table, child_rows))
    finally:
        con.unregister("batch_in")
    return UpsertCounts(
        inserted=inserted, updated=updated, unchanged=batch_keys - inserted - updated
    )


def _stage_winners(
    con: duckdb.DuckDBPyConnection,
    table: str,
    latest: str,
    keys: Sequence[str],
    join: str,
    *,
    rewrite_identical: bool,
) -> int:
    """Temp table `winners`, and how many rows it has: the rows of `latest` to write (new keys,
    and stored keys whose updated_at they reach), each with `_existed` (its key is stored) and
    `_same` (equal to the stored row in every column, NULLs equal); `_same` rows only with
    `rewrite_identical`.

    The join on the keys reads only the stored keys, updated_at and rowid; the stored rows to
    compare are then fetched by rowid, which DuckDB reads as a lookup. Joining on the keys with
    every stored column read instead scans the whole table's columns, `raw` included: 0.4 s
    for five re-reads against a million rows, where this takes 0.05 s."""
    first_key = f"t.{_col(keys[0])}"
    same = " AND ".join(
        f"s.{_col(c)} IS NOT DISTINCT FROM st.{_col(c)}" for c in TABLES[table].column_names
    )
    keep = "" if rewrite_identical else "WHERE NOT _same"
    created = con.execute(
        f"""CREATE OR REPLACE TEMP TABLE winners AS
        WITH candidates AS (
            SELECT s.*, t.rowid AS _rowid
            FROM {latest} s LEFT JOIN {quoted(table)} t ON {join}
            WHERE {first_key} IS NULL OR s.updated_at >= t.updated_at OR t.updated_at IS NULL
        ), stored AS (
            SELECT rowid AS _rowid, * FROM {quoted(table)}
            WHERE rowid IN (SELECT _rowid FROM candidates)
        )
        SELECT * FROM (
            SELECT s.* EXCLUDE (_rowid), s._rowid IS NOT NULL AS _existed,
                   st._rowid IS NOT NULL AND {same} AS _same
            FROM candidates s LEFT JOIN stored st ON s._rowid = st._rowid
        ) {keep}"""
    )
    return _created(created)


def _created(result: duckdb.DuckDBPyConnection) -> int:
    """The rows a CREATE TABLE … AS statement wrote (DuckDB answers it with their count)."""
    row = result.fetchone()
    assert row is not None
    return int(row[0])


def _write_winners(con: duckdb.DuckDBPyConnection, table: str, key_list: str) -> None:
    """The rows in `winners` into `table`, replacing the stored rows of their keys."""
    con.execute(
        f"DELETE FROM {written(con, table)} WHERE ({key_list}) IN "
        f"(SELECT {key_list} FROM winners WHERE _existed)"
    )
    con.execute(
        f"INSERT INTO {written(con, table)} BY NAME SELECT * EXCLUDE (_existed, _same) FROM winners"
    )


def _replace_children(con: duckdb.DuckDBPyConnection, parent: str, child: str, rows: Rows) -> None:
    """Replace the child rows of every parent that won in `winners` (record_codes also scope by
    the parent's table name)."""
    scope = ""
    params: list[object] = []
    columns = rows.column_names if isinstance(rows, pa.Table) else rows.columns
    if "table_name" in columns:
        scope = " AND table_name = ?"
        params = [parent]
    con.execute(
        f"DELETE FROM {written(con, child)} WHERE (human_id, record_id) IN "
        f"(SELECT human_id, record_id FROM winners){scope}",
        params,
    )
    con.register("child_in", rows)
    try:
        con.execute(
            f"INSERT INTO {written(con, child)} BY NAME SELECT c.* FROM child_in c "
            "SEMI JOIN winners w ON c.human_id = w.human_id AND c.record_id = w.record_id"
        )
    finally:
        con.unregister("child_in")


def mark_deleted(
    con: duckdb.DuckDBPyConnection,
    table: str,
    human_id: str,
    record_ids: Sequence[str],
    at: datetime,
) -> int:
    """Set deleted_at on rows the upstream answered 404 for; the rows stay."""
    if not record_ids:
        return 0
    ids = pa.table({"record_id": pa.array(record_ids, pa.string())})
    where = "human_id = ? AND deleted_at IS NULL AND record_id IN (SELECT record_id FROM gone_ids)"
    con.register("gone_ids", ids)
    try:
        # counted first, then updated (same transaction): DuckLake has no UPDATE … RETURNING
        row = con.execute(f"SELECT count(*) FROM {quoted(table)} WHERE {where}", [human_id])
        count = int((row.fetchone() or (0,))[0])
        if count:
            con.execute(
                f"UPDATE {written(con, table)} SET deleted_at = ? WHERE {where}", [at, human_id]
            )
    finally:
        con.unregister("gone_ids")
    return count


def insert_absent(
    con: duckdb.DuckDBPyConnection, table: str, rows: pa.Table, keys: Sequence[str]
) -> int:
    """Insert rows whose key is not stored yet; stored rows are left as they are (first write
    wins: landing-derived rows and rejects never change once recorded)."""
    rows = conform(table, rows)
    if rows.num_rows == 0:
        return 0
    key_list = ", ".join(_col(k) for k in keys)
    join = " AND ".join(f"n.{_col(k)} = t.{_col(k)}" for k in keys)
    con.register("new_rows", rows)
    try:
        # staged, counted, inserted (DuckLake has no INSERT … RETURNING)
        once, _ = _one_row_per_key(con, "new_rows", "new_once", key_list)
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE absent_rows AS
            SELECT * FROM {once} n
            WHERE NOT EXISTS (SELECT 1 FROM {quoted(table)} t WHERE {join})"""
        )
        con.execute("DROP TABLE IF EXISTS temp.main.new_once")
        inserted = int((con.execute("SELECT count(*) FROM absent_rows").fetchone() or (0,))[0])
        if inserted:
            con.execute(f"INSERT INTO {written(con, table)} BY NAME SELECT * FROM absent_rows")
        con.execute("DROP TABLE temp.main.absent_rows")
    finally:
        con.unregister("new_rows")
    return inserted


def replace_all(con: duckdb.DuckDBPyConnection, table: str, rows: pa.Table) -> int:
    """Replace a derived table's whole content (tables rebuilt from a full input set)."""
    rows = conform(table, rows)
    con.execute(f"DELETE FROM {written(con, table)}")
    con.register("all_rows", rows)
    try:
        con.execute(f"INSERT INTO {written(con, table)} BY NAME SELECT * FROM all_rows")
    finally:
        con.unregister("all_rows")
    return int(rows.num_rows)


def append(con: duckdb.DuckDBPyConnection, table: str, rows: pa.Table) -> int:
    rows = conform(table, rows)
    con.register("append_rows", rows)
    try:
        con.execute(f"INSERT INTO {written(con, table)} BY NAME SELECT * FROM append_rows")
    finally:
        con.unregister("append_rows")
    return int(rows.num_rows)


def upsert_by_key(
    con: duckdb.DuckDBPyConnection, table: str, rows: pa.Table, keys: Sequence[str]
) -> None:
    """Replace rows by key (state tables such as ops.sync_state)."""
    rows = conform(table, rows)
    key_list = ", ".join(_col(k) for k in keys)
    con.register("keyed_rows", rows)
    try:
        con.execute(
            f"DELETE FROM {written(con, table)} "
            f"WHERE ({key_list}) IN (SELECT {key_list} FROM keyed_rows)"
        )
        con.execute(f"INSERT INTO {written(con, table)} BY NAME SELECT * FROM keyed_rows")
    finally:
        con.unregister("keyed_rows")


def query_arrow(
    con: duckdb.DuckDBPyConnection, table: str, where: str = "", params: Sequence[object] = ()
) -> pa.Table:
    """Read a whole allow-listed table (optionally filtered by a fixed predicate written in this
    package, with bound values)."""
    sql = f"SELECT * FROM {quoted(table)}"
    if where:
        sql += f" WHERE {where}"
    return con.sql(sql, params=list(params)).to_arrow_table()


def committed_run_ids(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Runs whose commit went through (ops.load_log names each), without reading the manifest
    text every row of that log carries."""
    rows = con.execute(f"SELECT DISTINCT run_id FROM {quoted('ops.load_log')}").fetchall()
    return {str(run_id) for (run_id,) in rows}


def reject_id(
    table_name: str, human_id: str, record_id: str, reason: str, raw: str, occurrence: int = 0
) -> str:
    """The key of one reject: the same reject from a re-run lands once, and identical bodies
    of different users, or sent several times in one batch (`occurrence`), stay apart, so
    received = loaded + rejected holds per record."""
    text = "\x00".join((table_name, human_id, record_id, reason, raw, str(occurrence)))
    return hashlib.sha256(text.encode()).hexdigest()


def store_rejects(
    con: duckdb.DuckDBPyConnection,
    table: str,
    rejected: pd.DataFrame,
    run_id: str,
    at: datetime,
) -> int:
    """Record rejected inputs in `table`, the calling asset's reject table (one of
    REJECT_TABLES; the view ops.rejected_records unites them); the same reject from a re-run
    lands once."""
    if rejected.empty:
        return 0
    frame = rejected.copy()
    parts = ["table_name", "human_id", "record_id", "reason", "raw"]
    texts = frame[parts].astype(object).where(frame[parts].notna(), "").astype(str)
    occurrence = texts.groupby(parts, sort=False).cumcount()
    frame["reject_id"] = [
        reject_id(table, human, record, reason, raw, int(n))
        for (table, human, record, reason, raw), n in zip(
            texts.itertuples(index=False, name=None), occurrence, strict=True
        )
    ]
    frame["rejected_at"] = at
    frame["run_id"] = run_id
    return insert_absent(
        con, table, pa.Table.from_pandas(frame, preserve_index=False), ("reject_id",)
    )


def store_flags(
    con: duckdb.DuckDBPyConnection, flagged: pd.DataFrame, run_id: str, at: datetime
) -> int:
    """Record loaded-but-flagged records in ops.flagged_records (one row per record and flag,
    the latest run's detail)."""
    if flagged.empty:
        return 0
    keys = ["table_name", "human_id", "record_id", "flag"]
    frame = flagged.drop_duplicates(keys, keep="last").copy()
    frame["run_id"] = run_id
    frame["flagged_at"] = at
    upsert_by_key(
        con, "ops.flagged_records", pa.Table.from_pandas(frame, preserve_index=False), keys
    )
    return len(frame)


def store_notification_status(
    con: duckdb.DuckDBPyConnection, updates: pa.Table, run_id: str, at: datetime
) -> None:
    """Record the processing status of notifications a sync run handled (one row per
    notification in ops.notification_status, the latest run's)."""
    rows = updates.append_column(
        "synced_at", pa.array([at] * updates.num_rows, pa.timestamp("us", tz="UTC"))
    ).append_column("sync_run_id", pa.array([run_id] * updates.num_rows, pa.string()))
    upsert_by_key(con, "ops.notification_status", rows, ("notification_id",))


# --- read-only queries for asset checks and materialisation metadata -------------------------


@dataclass(frozen=True)
class KeyHealth:
    rows: int
    null_keys: int  # rows with any key column NULL
    duplicate_keys: int  # distinct keys held by more than one row
    duplicate_rows: int  # rows beyond the first of each duplicated key


def key_health(con: duckdb.DuckDBPyConnection, table: str, keys: Sequence[str]) -> KeyHealth:
    """Key integrity of one table in one scan (keys are enforced by construction, see above)."""
    key_list = ", ".join(_col(k) for k in keys)
    any_null = " OR ".join(f"{_col(k)} IS NULL" for k in keys)
    row = con.execute(
        f"""WITH per_key AS (
            SELECT count(*) AS n, bool_or({any_null}) AS has_null
            FROM {quoted(table)} GROUP BY {key_list}
        )
        SELECT coalesce(sum(n), 0),
               coalesce(sum(n) FILTER (WHERE has_null), 0),
               count(*) FILTER (WHERE n > 1 AND NOT has_null),
               coalesce(sum(n - 1) FILTER (WHERE n > 1 AND NOT has_null), 0)
        FROM per_key"""
    ).fetchall()[0]
    return KeyHealth(*(int(v) for v in row))


@dataclass(frozen=True)
class LatestLoad:
    run_id: str
    received: int
    loaded: int
    rejected: int
    committed_at: datetime
    rejects_on_record: int  # ops.rejected_records rows for the table (rejects land once, any run)


def latest_loads(con: duckdb.DuckDBPyConnection) -> dict[str, LatestLoad]:
    """The newest ops.load_log row per table, with the table's recorded rejects."""
    rows = con.execute(
        """SELECT l.table_name, l.run_id, l.received, l.loaded, l.rejected, l.committed_at,
                  (SELECT count(*) FROM ops.rejected_records r WHERE r.table_name = l.table_name)
        FROM ops.load_log l
        QUALIFY row_number() OVER (PARTITION BY l.table_name ORDER BY l.committed_at DESC) = 1"""
    ).fetchall()
    return {
        str(t): LatestLoad(str(r), int(rc), int(lo), int(rj), c, int(rec))
        for t, r, rc, lo, rj, c, rec in rows
    }


def last_synced(con: duckdb.DuckDBPyConnection) -> dict[str, datetime]:
    """Per endpoint path: the last time a sync finished it without error (ops.sync_state)."""
    rows = con.execute(
        "SELECT endpoint, max(last_synced_at) FROM ops.sync_state GROUP BY endpoint"
    ).fetchall()
    return {str(e): t for e, t in rows if t is not None}


def row_counts(con: duckdb.DuckDBPyConnection, tables: Sequence[str]) -> dict[str, int]:
    """The row count of each of `tables`, in one statement (their counts in a UNION ALL): a
    step reporting some forty tables pays one query, not forty."""
    if not tables:
        return {}
    counts = " UNION ALL ".join(
        f"SELECT ? AS table_name, count(*) AS n FROM {quoted(t)}" for t in tables
    )
    return {str(t): int(n) for t, n in con.execute(counts, list(tables)).fetchall()}


def table_heads(
    con: duckdb.DuckDBPyConnection, tables: Sequence[str], columns: Sequence[str], limit: int = 5
) -> dict[str, pa.Table]:
    """The first `limit` rows of each of `tables`, newest updated_at first where the table has
    one, in one statement (a UNION ALL BY NAME of each table's head): of `columns`, those the
    table has. In the union a column is named with its declared type (`status/int32`), so
    columns of one name and different types in two tables are never cast to one type."""
    if not tables:
        return {}
    typed = {
        t: {
            c: f"{c}/{TABLES[t].schema.field(c).type}"
            for c in columns
            if c in TABLES[t].column_names
        }
        for t in tables
    }
    heads = []
    for table in tables:
        newest = "updated_at" in TABLES[table].column_names
        selected = [
            "? AS _table",
            f"{'updated_at' if newest else 'NULL::TIMESTAMPTZ'} AS _order",
            *(f"{_col(c)} AS {_col(name)}" for c, name in typed[table].items()),
        ]
        order = " ORDER BY updated_at DESC NULLS LAST" if newest else ""
        heads.append(
            f"(SELECT {', '.join(selected)} FROM {quoted(table)}{order} LIMIT {int(limit)})"
        )
    # the heads in a FROM: DuckDB's parser refuses an ORDER BY after a parenthesised one
    union = " UNION ALL BY NAME ".join(heads)
    rows = con.sql(
        f"SELECT * FROM ({union}) ORDER BY _table, _order DESC NULLS LAST", params=list(tables)
    ).to_arrow_table()
    return {
        table: rows.filter(pc.equal(rows.column("_table"), table))
        .select(list(typed[table].values()))
        .rename_columns(list(typed[table]))
        for table in tables
    }


def cursors_by_run(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, tuple[int, datetime]]:
    """Per endpoint path: how many (user, endpoint) cursors `run_id` advanced, and the newest."""
    rows = con.execute(
        "SELECT endpoint, count(*), max(cursor_updated_since) FROM ops.sync_state "
        "WHERE last_run_id = ? GROUP BY endpoint",
        [run_id],
    ).fetchall()
    return {str(e): (int(n), c) for e, n, c in rows}


# notifications still to act on: never fetched, or a previous attempt failed / was unactionable
PENDING = "status NOT IN ('synced', 'gone')"


@dataclass(frozen=True)
class RunOutcome:
    """What one sync run did, from what its commit wrote: the end-of-run summary."""

    received: int
    loaded: int
    rejected: int
    requests: int
    # (reason, users, items) per reason, most items first; a refused token is `skipped`
    failures: list[tuple[str, int, int]]
    skipped: list[tuple[str, int, int]]

    @property
    def failed_items(self) -> int:
        return sum(items for _, _, items in self.failures)


def run_outcome(
    con: duckdb.DuckDBPyConnection, run_id: str, record_tables: Sequence[str]
) -> RunOutcome:
    """`record_tables`: the endpoints' tables (child tables have manifest rows too, and a
    record is counted once, by its own table)."""
    received, loaded, rejected = con.execute(
        "SELECT coalesce(sum(received), 0), coalesce(sum(loaded), 0), coalesce(sum(rejected), 0) "
        f"FROM {quoted('ops.load_log')} WHERE run_id = ? AND list_contains(?, table_name)",
        [run_id, list(record_tables)],
    ).fetchone() or (0, 0, 0)
    (requests,) = con.execute(
        f"SELECT count(*) FROM {quoted('ops.http_requests')} WHERE run_id = ?", [run_id]
    ).fetchone() or (0,)
    failed = con.execute(
        f"SELECT human_id, reason FROM {quoted('ops.sync_failures')} WHERE run_id = ?", [run_id]
    ).fetchall()
    users: dict[str, set[str]] = {}
    for human_id, reason in failed:
        users.setdefault(failure_kind(reason or ""), set()).add(human_id)
    items = Counter(failure_kind(reason or "") for _, reason in failed)
    grouped = [(kind, len(users[kind]), n) for kind, n in items.most_common()]
    return RunOutcome(
        received=int(received),
        loaded=int(loaded),
        rejected=int(rejected),
        requests=int(requests),
        failures=[g for g in grouped if g[0] != NEEDS_RECONNECT],
        skipped=[g for g in grouped if g[0] == NEEDS_RECONNECT],
    )
