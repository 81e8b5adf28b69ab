"""The two databases the catalog runs on, behind one small seam.

``Store`` (store.py) holds all the logic — matching, placement, consensus, erasure — and writes
its SQL once, with ``?`` placeholders. A backend supplies only what differs between SQLite and
PostgreSQL: connections and transactions, the placeholder style, a list parameter (``IN (...)``
against ``= ANY(?)``), the column types of the DDL, and the cluster-wide lock that serializes
matching (SQLite's one writer already does; PostgreSQL takes an advisory lock). Both record their
migrations in a ``migrations`` table.

* ``SQLiteBackend``: one file, WAL, durable commits; a connection per thread (readers run beside
  the writer); one process (``--workers`` is refused).
* ``PostgresBackend``: a psycopg 3 connection pool (``cratesense[postgres]``); any number of
  worker processes, on any number of hosts, over one database.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from cratesense import sqlite
from cratesense.errors import BackendError

log = logging.getLogger(__name__)

# Keys of PostgreSQL advisory locks (one 64-bit number space per database): "CS" + a purpose.
MATCHING_LOCK = 0x4353_0001  # placing observations into recordings, and erasing them
MIGRATION_LOCK = 0x4353_0002  # several workers starting at once migrate once


def is_postgres_url(target: str | Path) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def open_backend(target: str | Path, *, pool_size: int = 10) -> SQLiteBackend | PostgresBackend:
    """The backend for ``target``: a ``postgresql://`` URL or a SQLite file path."""
    if is_postgres_url(target):
        return PostgresBackend(str(target), pool_size=pool_size)
    return SQLiteBackend(Path(target))


def redact(url: str) -> str:
    """A database URL fit for a log line: the password replaced."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


class SQLiteBackend:
    name = "sqlite"
    several_processes = False  # one writer per file: --workers is refused
    # row locks: SQLite locks the whole file instead (BEGIN IMMEDIATE)
    for_update = ""
    skip_locked = ""
    types = {"id": "INTEGER PRIMARY KEY", "real": "REAL", "blob": "BLOB", "bigint": "INTEGER",
             "without_rowid": "WITHOUT ROWID", "unlogged": ""}

    def __init__(self, path: Path) -> None:
        self.path = path
        self.label = str(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()  # this thread's connection
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        # this process's writers queue here, woken at once; SQLite's own busy handler would
        # make a thread that finds the file locked sleep for up to 100 ms at a time
        self._write_lock = threading.Lock()
        self._connection()  # fail here, at start, if the file cannot be opened

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            # durable: an acknowledged observation is never sent again, so it must outlive a power cut
            # check_same_thread off: close() closes every thread's connection from one thread
            db = sqlite.connect(self.path, timeout=10, check_same_thread=False, durable=True)
            self._local.db = db
            with self._all_lock:
                self._all.append(db)
        return db

    def close(self) -> None:
        with self._all_lock:
            for db in self._all:
                db.close()
            self._all.clear()
        self._local = threading.local()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE: the file's one writer)."""
        with self._write_lock, sqlite.transaction(self._connection()) as db:
            yield db

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot, beside the writer (WAL)."""
        db = self._connection()
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

    def lock(self, db, key: int) -> None:
        """Nothing to take: BEGIN IMMEDIATE already made this transaction the only writer."""

    @staticmethod
    def any_of(column: str, values: Sequence) -> tuple[str, list]:
        """``column`` is one of ``values``: a short list inline, a long one (past SQLite's limit
        of bound parameters) as one JSON array."""
        if len(values) <= 500:
            return f"{column} IN ({','.join('?' * len(values))})", list(values)
        return f"{column} IN (SELECT value FROM json_each(?))", [json.dumps(list(values))]

    @staticmethod
    def delete_terms(db, pairs: list[tuple[int, int]]) -> None:
        """Index rows (term, fingerprint), deleted in term order (neighbouring B-tree pages)."""
        db.executemany("DELETE FROM fingerprint_terms WHERE term = ? AND fingerprint = ?", sorted(pairs))

    def migrate(self, migrations: Sequence[str]) -> None:
        sqlite.migrate(self._connection(), migrations)

    def size(self) -> int:
        """Bytes on disk (the database file and its WAL)."""
        self._connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return self.path.stat().st_size


class _PgConnection:
    """A psycopg connection that speaks the Store's SQL: ``?`` placeholders become ``%s``."""

    def __init__(self, connection, translate) -> None:
        self._connection, self._translate = connection, translate

    def execute(self, sql: str, params: Sequence = ()):
        if not params:  # psycopg reads % as a placeholder only when there are parameters
            return self._connection.execute(sql)
        return self._connection.execute(self._translate(sql), params)

    def executemany(self, sql: str, rows):
        cursor = self._connection.cursor()
        cursor.executemany(self._translate(sql), list(rows))
        return cursor


class PostgresBackend:
    name = "postgresql"
    several_processes = True
    for_update = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"  # a slice another worker holds is passed over, not waited for
    types = {"id": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", "real": "DOUBLE PRECISION",
             "blob": "BYTEA", "bigint": "BIGINT", "without_rowid": "", "unlogged": "UNLOGGED"}

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError:
            raise BackendError("a PostgreSQL catalog needs psycopg: pip install 'cratesense[postgres]'") from None
        self.path = None
        self.label = redact(url)
        self._sql: dict[str, str] = {}
        self._errors = psycopg.Error
        try:  # one connection first: its error says why (the pool's would only say "timed out")
            psycopg.connect(url, connect_timeout=10).close()
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split())
            raise BackendError(f"cannot connect to PostgreSQL at {self.label}: {reason}") from None
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=False, name="catalog",
                                    kwargs={"autocommit": True, "application_name": "cratesense-catalog"})
        self._pool.open(wait=True, timeout=30)

    def _translate(self, sql: str) -> str:
        translated = self._sql.get(sql)
        if translated is None:
            translated = self._sql[sql] = sql.replace("%", "%%").replace("?", "%s")
        return translated

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def transaction(self) -> Iterator[_PgConnection]:
        with self._pool.connection() as connection, connection.transaction():
            yield _PgConnection(connection, self._translate)

    @contextmanager
    def reading(self) -> Iterator[_PgConnection]:
        with self._pool.connection() as connection, connection.transaction():
            connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield _PgConnection(connection, self._translate)

    def lock(self, db: _PgConnection, key: int) -> None:
        """A cluster-wide lock until this transaction ends (every worker, every host)."""
        db.execute("SELECT pg_advisory_xact_lock(?)", (key,))

    @staticmethod
    def any_of(column: str, values: Sequence) -> tuple[str, list]:
        return f"{column} = ANY(?)", [list(values)]

    @staticmethod
    def delete_terms(db, pairs: list[tuple[int, int]]) -> None:
        """Index rows (term, fingerprint) in one statement (one round trip, not one per row)."""
        if pairs:
            pairs = sorted(pairs)
            db.execute("DELETE FROM fingerprint_terms t USING unnest(?::integer[], ?::bigint[]) AS d (term, fingerprint) "
                       "WHERE t.term = d.term AND t.fingerprint = d.fingerprint",
                       ([term for term, _ in pairs], [fingerprint for _, fingerprint in pairs]))

    def migrate(self, migrations: Sequence[str]) -> None:
        """Each script not yet recorded, in order, each in its own transaction; workers starting
        at once wait for one another (an advisory lock), so each script runs once."""
        with self.transaction() as db:
            self.lock(db, MIGRATION_LOCK)
            db.execute("CREATE TABLE IF NOT EXISTS migrations (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION)")
        for version, script in enumerate(migrations, start=1):
            with self.transaction() as db:
                self.lock(db, MIGRATION_LOCK)
                if db.execute("SELECT 1 FROM migrations WHERE version = ?", (version,)).fetchone():
                    continue
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
                db.execute("INSERT INTO migrations VALUES (?, ?)", (version, time.time()))

    def size(self) -> int:
        with self.reading() as db:
            return db.execute("SELECT pg_database_size(current_database())").fetchone()[0]
