"""The embedded Dagster instance's SQLite storage, with its database connections kept open.

Dagster's own SQLite storages build a new SQLAlchemy engine, and so open a new SQLite
connection, for every statement batch. A run writes each event through one such batch, and each
asset or check event twice (its run's file and the cross-run index): ~3.5 ms per event,
about 40 % of a small `sync-pipeline sync` (profiled: `SqliteEventLogStorage._connect`). These
subclasses keep one engine per database file, with a bounded pool of open connections, and
change nothing else: the same files, schema and migrations, so an instance written through them
is read by Dagster's stock classes and the other way round (a `dg dev` started without them,
an older checkout).

`deploy.instance_yaml` selects `SqliteInstanceStorage` as the local instance's `storage`, so the
CLI, the webserver, the daemon and every run worker use it. Bounds: the cross-run index and at
most RUN_FILES_KEPT_OPEN run files keep an engine; each engine's pool holds at most
POOL_SIZE idle connections (SQLAlchemy's QueuePool; more may be open while in use).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SqliteEventLogStorage,
)
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sql import create_engine
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._serdes import ConfigurableClassData
from sqlalchemy.engine import Connection, Engine

# A run writes to its own file while it runs; a webserver showing runs reads a few at a time.
RUN_FILES_KEPT_OPEN = 8
POOL_SIZE = 4


def _engine(conn_string: str, **connect_args: Any) -> Engine:
    # connections cross threads (the daemon's and webserver's thread pools); the pool hands each
    # to one thread at a time
    return create_engine(
        conn_string,
        pool_size=POOL_SIZE,
        max_overflow=2 * POOL_SIZE,
        connect_args={"check_same_thread": False, **connect_args},
    )


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """Event log: one run file per run plus the cross-run index (`index.db`)."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        # set before the stock constructor, which may already connect (index creation)
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._engines_lock = threading.Lock()
        super().__init__(base_dir, inst_data)

    def _engine_for(self, shard: str) -> Engine:
        with self._engines_lock:
            engine = self._engines.get(shard)
            if engine is not None:
                self._engines.move_to_end(shard)
                return engine
            engine = _engine(self.conn_string_for_shard(shard), timeout=SQLITE_BUSY_TIMEOUT_SECONDS)
            self._engines[shard] = engine
            run_files = [name for name in self._engines if name != INDEX_SHARD_NAME]
            for evicted in run_files[: max(0, len(run_files) - RUN_FILES_KEPT_OPEN)]:
                self._engines.pop(evicted).dispose()
            return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        # as the stock method (one writer per storage object at a time; the file's schema
        # created on first use), on a kept engine
        with self._db_lock:
            engine = self._engine_for(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def has_table(self, table_name: str) -> bool:
        engine = self._engine_for(INDEX_SHARD_NAME)
        with engine.connect() as conn:
            return bool(engine.dialect.has_table(conn, table_name))

    def _dispose_engines(self) -> None:
        with self._engines_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()

    def wipe(self) -> None:
        # the stock wipe deletes run files: no open connection may outlive its file
        self._dispose_engines()
        super().wipe()

    def dispose(self) -> None:
        super().dispose()
        self._dispose_engines()


class _KeptEngine:
    """`connect()` for a storage with one database file, on one kept engine."""

    _conn_string: str
    _kept: Engine | None = None
    # shared by the storages of a process; held only while the first engine is created
    _kept_lock = threading.Lock()

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self._kept_lock:
            if self._kept is None:
                self._kept = _engine(self._conn_string)
            engine = self._kept
        with engine.connect() as conn, conn.begin():
            yield conn

    def _dispose_kept(self) -> None:
        with self._kept_lock:
            if self._kept is not None:
                self._kept.dispose()
                self._kept = None


class PooledSqliteRunStorage(_KeptEngine, SqliteRunStorage):
    """Runs (`history/runs.db`)."""

    def dispose(self) -> None:
        super().dispose()
        self._dispose_kept()


class PooledSqliteScheduleStorage(_KeptEngine, SqliteScheduleStorage):
    """Schedule and sensor state and ticks (`schedules/schedules.db`)."""

    def dispose(self) -> None:
        super().dispose()
        self._dispose_kept()


class SqliteInstanceStorage(DagsterSqliteStorage):
    """Dagster's SQLite instance storage (same folders under `base_dir`) on the pooled
    storages above."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        # not DagsterSqliteStorage.__init__: it would open the stock storages first
        self.base_dir = base_dir
        self._run_storage = PooledSqliteRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = PooledSqliteEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = PooledSqliteScheduleStorage.from_local(
            _schedule_directory(base_dir)
        )
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()  # type: ignore[no-untyped-call]

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, str]
    ) -> SqliteInstanceStorage:
        return cls.from_local(config_value["base_dir"], inst_data=inst_data)
