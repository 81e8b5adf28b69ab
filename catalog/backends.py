"""The two databases the catalog runs on, behind one small seam.

``Store`` (store.py) holds all the logic — matching, placement, consensus, erasure, rate limits,
migrations — and writes its SQL once, with ``?`` placeholders and rows read by column name. A
backend supplies only what differs between SQLite and PostgreSQL:

* connections and transactions: ``transaction()`` (a write transaction), ``reading()`` (one
  consistent snapshot), ``run()`` (one statement as its own transaction: no BEGIN/COMMIT round
  trips on a server);
* the placeholder style (``?`` becomes ``%s`` on PostgreSQL) and the row factory (named rows);
* a list parameter (``IN (...)`` or ``= ANY(?)``): ``any_of``;
* many rows in one statement: ``table`` (a table expression of numbers and text, for reads) and
  ``each`` (a statement over rows ``d``: one statement over ``unnest`` of arrays on PostgreSQL,
  a VALUES list of bound parameters on SQLite);
* the column types of the DDL, ``FOR UPDATE [SKIP LOCKED]``, the database's clock;
* the cluster-wide lock that serializes matching, ``placing()`` (a lock of this process on
  SQLite, whose one process is every worker; an advisory lock on PostgreSQL), which a lone
  ingest can ask for without waiting (``Busy`` when another holds it);
* where volatile state lives (the rate limits' buckets): an UNLOGGED table every worker shares
  on PostgreSQL, an in-memory database of this process on SQLite (its one process is every
  worker; a durable commit per request would cost an fsync).

``migrate`` is the one migration runner, over either backend: each script once, in order,
recorded in a ``migrations`` table, under a lock so several workers starting at once migrate once.

* ``SQLiteBackend``: one file, WAL, durable commits; a connection per thread (readers run beside
  the writer); one process (``--workers`` is refused).
* ``PostgresBackend``: a psycopg 3 connection pool (``cratesense[postgres]``); any number of
  worker processes, on any number of hosts, over one database; optionally a streaming standby
  for reads that may lag (``ReadReplica``).
"""

from __future__ import annotations

import json
import keyword
import logging
import re
import sqlite3
import threading
import time
from collections import namedtuple
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cratesense import sqlite
from cratesense.errors import BackendError

log = logging.getLogger(__name__)

# Keys of PostgreSQL advisory locks (one 64-bit number space per database): "CS" + a purpose.
MATCHING_LOCK = 0x4353_0001  # placing observations into recordings, and erasing them
MIGRATION_LOCK = 0x4353_0002  # several workers starting at once migrate once

# The column types a statement over many rows (``table``, ``each``) names: a backend's own names
_PG_TYPES = {"bigint": "bigint", "int": "integer", "real": "double precision", "text": "text", "blob": "bytea"}


class Busy(Exception):
    """A lock asked for without waiting is held by another (nothing was done)."""


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


def migrate(backend: SQLiteBackend | PostgresBackend, migrations: Sequence[str]) -> None:
    """Apply each script of ``migrations`` not yet recorded, in order, each in its own
    transaction, under the migration lock (workers starting at once wait for one another, so each
    script runs once; on SQLite the write transaction is that lock)."""
    with backend.transaction() as db:
        backend.lock(db, MIGRATION_LOCK)
        db.execute(f"CREATE TABLE IF NOT EXISTS migrations (version INTEGER PRIMARY KEY, applied_at {backend.types['real']})")
    for version, script in enumerate(migrations, start=1):
        with backend.transaction() as db:
            backend.lock(db, MIGRATION_LOCK)
            if db.execute("SELECT 1 FROM migrations WHERE version = ?", (version,)).fetchone():
                continue
            for statement in filter(str.strip, script.split(";")):
                db.execute(statement)
            db.execute("INSERT INTO migrations VALUES (?, ?)", (version, time.time()))


_ROW_TYPES: dict[tuple[str, ...], Any] = {}
_LAST_ROW_TYPE = threading.local()  # per thread: the last statement's columns and their row type


def _named_row(cursor: sqlite3.Cursor, values: tuple) -> tuple:
    """SQLite's rows as named tuples (psycopg's ``namedtuple_row`` on PostgreSQL): read by name,
    still unpacked like tuples. The row type is looked up once per statement, not per row (a
    cursor keeps one description object for all of its rows)."""
    description = cursor.description
    last = _LAST_ROW_TYPE.__dict__
    if last.get("description") is not description:
        names = tuple(column[0] for column in description)
        row_type: Any = _ROW_TYPES.get(names)
        if row_type is None:
            row_type = _ROW_TYPES[names] = namedtuple("Row", [
                name if name.isidentifier() and not keyword.iskeyword(name) else f"f{i}" for i, name in enumerate(names)])
        last["description"], last["row_type"] = description, row_type
    return last["row_type"]._make(values)


class SQLiteBackend:
    name = "sqlite"
    several_processes = False  # one writer per file: --workers is refused
    # row locks: SQLite locks the whole file instead (BEGIN IMMEDIATE)
    for_update = ""
    skip_locked = ""
    now = "((julianday('now') - 2440587.5) * 86400.0)"  # seconds since the epoch, to the millisecond
    least = "MIN"  # the smaller of its arguments
    connection_errors: tuple[type[BaseException], ...] = ()  # a file has no connection to lose
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
        # placing observations into recordings (``placing``): taken before the writer's lock, so a
        # placer waiting for it never holds up an accept, and a lone ingest can try it at once
        self.matching = threading.Lock()
        # volatile state (rate buckets): this process's own memory, one connection, its own lock
        self._volatile = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self._volatile.row_factory = _named_row
        self._volatile_lock = threading.Lock()
        self._connection()  # fail here, at start, if the file cannot be opened

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            # durable: an acknowledged observation is never sent again, so it must outlive a power cut
            # check_same_thread off: close() closes every thread's connection from one thread
            db = sqlite.connect(self.path, timeout=10, check_same_thread=False, durable=True)
            db.row_factory = _named_row
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
        self._volatile.close()

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

    def run(self, sql: str, params: Sequence = (), *, writes: bool = False) -> list:
        """One statement as its own transaction: its rows."""
        if writes:
            with self.transaction() as db:
                return db.execute(sql, params).fetchall()
        return self._connection().execute(sql, params).fetchall()

    @contextmanager
    def volatile(self) -> Iterator[sqlite3.Connection]:
        """Where volatile state lives: this process's in-memory database."""
        with self._volatile_lock:
            yield self._volatile

    def prepare_volatile(self, ddl: str) -> None:
        with self.volatile() as db:
            for statement in filter(str.strip, ddl.split(";")):
                db.execute(statement)

    @contextmanager
    def placing(self, *, wait: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the matching lock (this process is every worker: a lock
        of its own; another process's placer is kept out by BEGIN IMMEDIATE). ``wait=False``:
        ``Busy`` at once when another placer holds it."""
        if not self.matching.acquire(blocking=wait):
            raise Busy("placing")
        try:
            with self.transaction() as db:
                yield db
        finally:
            self.matching.release()

    def lock(self, db, key: int) -> None:
        """Nothing to take: BEGIN IMMEDIATE already made this transaction the only writer."""

    def recover(self) -> None:
        """Nothing to reconnect."""

    @staticmethod
    def any_of(column: str, values: Sequence) -> tuple[str, list]:
        """``column`` is one of ``values``: a short list inline, a long one (past SQLite's limit
        of bound parameters) as one JSON array."""
        if len(values) <= 500:
            return f"{column} IN ({','.join('?' * len(values))})", list(values)
        return f"{column} IN (SELECT value FROM json_each(?))", [json.dumps(list(values))]

    PARAMETERS = 30_000  # bound parameters per statement (SQLite's limit: 32,766)

    @classmethod
    def table(cls, columns: dict[str, str], rows: Sequence[Sequence], alias: str = "d") -> tuple[str, list]:
        """A table expression ``alias`` of ``rows`` with ``columns`` (name -> type): a VALUES list
        of bound parameters; past the limit of parameters (numbers and text only) one JSON array
        read by ``json_each``."""
        names = list(columns)
        if len(rows) * len(names) <= cls.PARAMETERS:
            values = ", ".join([f"({', '.join('?' * len(names))})"] * len(rows)) or f"({', '.join(['NULL'] * len(names))})"
            picked = ", ".join(f"column{i + 1} AS {name}" for i, name in enumerate(names))
            where = "" if rows else " WHERE 0"
            return f"(SELECT {picked} FROM (VALUES {values}){where}) AS {alias}", [value for row in rows for value in row]
        picked = ", ".join(f"json_extract(value, '$[{i}]') AS {name}" for i, name in enumerate(names))
        return f"(SELECT {picked} FROM json_each(?)) AS {alias}", [json.dumps(rows)]

    @classmethod
    def table_of_columns(cls, columns: dict[str, str], values: Sequence[Sequence], alias: str = "d") -> tuple[str, list]:
        """``table`` of rows given column by column (``values``: one sequence per column)."""
        return cls.table(columns, list(zip(*values)), alias)

    @classmethod
    def each(cls, db, sql: str, columns: dict[str, str], rows: Sequence[Sequence]) -> list:
        """Run ``sql`` over ``rows``, which it reads as the table ``{rows}`` (alias ``d``) with
        ``columns`` (name -> type): one statement per few thousand rows; the rows any RETURNING
        clause gave."""
        returned: list = []
        chunk = max(1, cls.PARAMETERS // max(1, len(columns)))
        for start in range(0, len(rows), chunk):
            table, params = cls.table(columns, rows[start:start + chunk])
            cursor = db.execute(sql.replace("{rows}", table), params)
            if cursor.description:
                returned += cursor.fetchall()
        return returned

    def migrate(self, migrations: Sequence[str]) -> None:
        migrate(self, migrations)

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
        # binary results: fingerprint items come back as they are, not escaped into text (parameters:
        # psycopg picks per value; a list of bytes goes binary only where table() wrote "?!")
        return self._connection.execute(self._translate(sql), params, binary=True)

    def executemany(self, sql: str, rows):
        cursor = self._connection.cursor()
        cursor.executemany(self._translate(sql), list(rows))
        return cursor


class PostgresBackend:
    name = "postgresql"
    several_processes = True
    for_update = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"  # a slice another worker holds is passed over, not waited for
    now = "EXTRACT(EPOCH FROM clock_timestamp())::double precision"  # the database's clock: hosts may differ
    least = "LEAST"
    types = {"id": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", "real": "DOUBLE PRECISION",
             "blob": "BYTEA", "bigint": "BIGINT", "without_rowid": "", "unlogged": "UNLOGGED"}

    def __init__(self, url: str, *, pool_size: int = 10, role: str = "catalog", wait: float = 5.0) -> None:
        try:
            import psycopg
            from psycopg.rows import namedtuple_row
            from psycopg_pool import ConnectionPool
        except ImportError:
            raise BackendError("a PostgreSQL catalog needs psycopg: pip install 'cratesense[postgres]'") from None
        self.path = None
        self.url = url
        self.label = redact(url)
        self._sql: dict[str, str] = {}
        self.errors = psycopg.Error
        self.connection_errors = (psycopg.OperationalError,)  # includes the pool's timeout
        try:  # one connection first: its error says why (the pool's would only say "timed out")
            psycopg.connect(url, connect_timeout=10).close()
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split())
            raise BackendError(f"cannot connect to PostgreSQL at {self.label}: {reason}") from None
        # timeout: a request waits this long for a connection (a server that is down answers 503 soon);
        # reconnect_timeout: the pool keeps trying to reconnect to a server that restarts
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=False, name=role, timeout=wait,
                                    reconnect_timeout=300,
                                    kwargs={"autocommit": True, "application_name": f"cratesense-{role}",
                                            "row_factory": namedtuple_row, "connect_timeout": 10})
        self._pool.open(wait=True, timeout=30)

    def _translate(self, sql: str) -> str:
        translated = self._sql.get(sql)
        if translated is None:
            translated = self._sql[sql] = sql.replace("%", "%%").replace("?!", "%b").replace("?", "%s")
        return translated

    def close(self) -> None:
        self._pool.close()

    def recover(self) -> None:
        """After a connection failed (a restarted server): drop the pool's dead idle connections."""
        self._pool.check()

    @contextmanager
    def transaction(self) -> Iterator[_PgConnection]:
        with self._pool.connection() as connection:
            connection.read_only, connection.isolation_level = False, None
            with connection.transaction():
                yield _PgConnection(connection, self._translate)

    @contextmanager
    def reading(self) -> Iterator[_PgConnection]:
        """One snapshot: BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY (one statement)."""
        import psycopg

        with self._pool.connection() as connection:
            connection.read_only, connection.isolation_level = True, psycopg.IsolationLevel.REPEATABLE_READ
            try:
                with connection.transaction():
                    yield _PgConnection(connection, self._translate)
            finally:
                connection.read_only, connection.isolation_level = False, None

    def run(self, sql: str, params: Sequence = (), *, writes: bool = False) -> list:
        """One statement as its own transaction (autocommit: one round trip): its rows."""
        with self._pool.connection() as connection:
            cursor = _PgConnection(connection, self._translate).execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    @contextmanager
    def volatile(self) -> Iterator[_PgConnection]:
        """Where volatile state lives: UNLOGGED tables of this database, one statement at a time."""
        with self._pool.connection() as connection:
            yield _PgConnection(connection, self._translate)

    def prepare_volatile(self, ddl: str) -> None:
        with self.transaction() as db:
            self.lock(db, MIGRATION_LOCK)
            for statement in filter(str.strip, ddl.split(";")):
                db.execute(statement)

    def lock(self, db: Any, key: int) -> None:
        """A cluster-wide lock until this transaction ends (every worker, every host)."""
        db.execute("SELECT pg_advisory_xact_lock(?)", (key,))

    @contextmanager
    def placing(self, *, wait: bool = True) -> Iterator[_PgConnection]:
        """A write transaction holding the matching lock (every worker, every host).
        ``wait=False``: ``Busy`` at once when another placer holds it (pg_try_advisory_xact_lock)."""
        with self.transaction() as db:
            if wait:
                self.lock(db, MATCHING_LOCK)
            elif not db.execute("SELECT pg_try_advisory_xact_lock(?) AS taken", (MATCHING_LOCK,)).fetchone().taken:
                raise Busy("placing")
            yield db

    @staticmethod
    def any_of(column: str, values: Sequence) -> tuple[str, list]:
        return f"{column} = ANY(?)", [list(values)]

    @staticmethod
    def table(columns: dict[str, str], rows: Sequence[Sequence], alias: str = "d") -> tuple[str, list]:
        """A table expression ``alias`` of ``rows``: ``unnest`` of one array per column."""
        # bytes go binary ("?!" becomes psycopg's %b): a list of them in text would be escaped item by item
        arrays = ", ".join(f"{'?!' if kind == 'blob' and rows else '?'}::{_PG_TYPES[kind]}[]" for kind in columns.values())
        values = [_array(kind, column) for kind, column in zip(columns.values(), zip(*rows))] if rows else [
            [] for _ in columns]
        return f"unnest({arrays}) AS {alias} ({', '.join(columns)})", values

    @staticmethod
    def table_of_columns(columns: dict[str, str], values: Sequence[Sequence], alias: str = "d") -> tuple[str, list]:
        """``table`` of rows given column by column (``values``: one sequence per column, none
        empty): no rows built only to be taken apart again."""
        arrays = ", ".join(f"{'?!' if kind == 'blob' else '?'}::{_PG_TYPES[kind]}[]" for kind in columns.values())
        return (f"unnest({arrays}) AS {alias} ({', '.join(columns)})",
                [_array(kind, column) for kind, column in zip(columns.values(), values)])

    def each(self, db, sql: str, columns: dict[str, str], rows: Sequence[Sequence]) -> list:
        """Run ``sql`` over ``rows`` as the table ``{rows}``: one statement, one round trip."""
        if not rows:
            return []
        table, params = self.table(columns, rows)
        cursor = db.execute(sql.replace("{rows}", table), params)
        return cursor.fetchall() if cursor.description else []

    def migrate(self, migrations: Sequence[str]) -> None:
        migrate(self, migrations)

    def size(self) -> int:
        with self.reading() as db:
            return db.execute("SELECT pg_database_size(current_database())").fetchone()[0]


def _array(kind: str, values: Sequence) -> list | str:
    """One column of a table of rows as a parameter: numbers as an array literal, which costs a
    join of strings here (psycopg's list dumper walks a long list in Python: most of a placed
    slice's client time); text as one too (quoted, escaped); bytes as lists (binary, unescaped)."""
    if kind in ("int", "bigint", "real"):
        if None not in values:  # the common case, at C speed
            return "{" + ",".join(map(repr, values)) + "}"
        return "{" + ",".join("NULL" if value is None else repr(value) for value in values) + "}"
    if kind == "text":  # quoted elements: only a backslash and a double quote need escaping
        return "{" + ",".join("NULL" if value is None else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
                              for value in values) + "}"
    return list(values)


class ReadReplica:
    """A streaming standby for reads that may lag (look-ups, recommendations, exports), watched
    from the primary: its lag is the time since the newest moment at which the primary had
    written no more than the standby has replayed (a sample of the primary's WAL position every
    ``check_seconds``), so an idle primary is no lag and a standby cut off from its primary is.
    Unreachable, or further behind than ``max_lag``: reads go to the primary, and one log line
    says so (and another when the standby is used again)."""

    def __init__(self, url: str, primary: PostgresBackend, *, max_lag: float = 5.0, check_seconds: float = 1.0,
                 pool_size: int = 10) -> None:
        self.url, self.label, self.primary = url, redact(url), primary
        self.max_lag, self.check_seconds = max_lag, check_seconds
        self.backend: PostgresBackend | None = None
        self.lag: float | None = None  # seconds, None while unknown or unreachable
        self.state = "unknown"  # "in use", "lagging", "unreachable", "not a standby"
        self.reason = ""
        self._samples: list[tuple[float, int]] = []  # (time, the primary's WAL position)
        self._pool_size = pool_size
        self._lock = threading.Lock()
        self.check()

    @property
    def usable(self) -> bool:
        return self.state == "in use" and self.backend is not None

    def _connect(self) -> PostgresBackend:
        if self.backend is None:
            self.backend = PostgresBackend(self.url, pool_size=self._pool_size, role="catalog-replica", wait=2.0)
        return self.backend

    def check(self) -> None:
        """Measure the standby's lag and decide whether reads go to it (called every
        ``check_seconds`` by the server; cheap: one statement on each side)."""
        with self._lock:
            now = time.monotonic()
            try:
                [primary] = self.primary.run("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS lsn")
                self._samples = [s for s in self._samples if now - s[0] <= 10 * max(self.max_lag, 1.0)]
                self._samples.append((now, primary.lsn))
            except Exception as exc:  # the primary's trouble is the primary's log line
                log.debug("cannot sample the primary's WAL position: %s", exc)
            try:
                [standby] = self._connect().run(
                    "SELECT pg_is_in_recovery() AS standby, "
                    "pg_wal_lsn_diff(COALESCE(pg_last_wal_replay_lsn(), '0/0'), '0/0')::bigint AS replayed")
            except Exception as exc:  # any failure means: read from the primary
                self._become("unreachable", None, " ".join(str(exc).split())[:300] or type(exc).__name__)
                return
            if not standby.standby:
                self._become("not a standby", None, "it is not in recovery (a promoted standby is a primary)")
                return
            caught_up = [t for t, lsn in self._samples if lsn <= standby.replayed]
            # no sample it has caught up with: behind for at least as long as samples are kept
            lag = max(0.0, now - (max(caught_up) if caught_up else min(t for t, _ in self._samples or [(now, 0)])))
            if lag > self.max_lag:
                self._become("lagging", lag, f"{lag:.1f} s behind the primary (limit {self.max_lag:g} s)")
            else:
                self._become("in use", lag, "")

    def failed(self, exc: BaseException) -> None:
        """A read on the standby failed: the primary answers until the next check says otherwise."""
        with self._lock:
            self._become("unreachable", None, " ".join(str(exc).split())[:300] or type(exc).__name__)

    def _become(self, state: str, lag: float | None, reason: str) -> None:
        self.lag = lag
        if state != self.state:
            if state == "in use":
                log.log(logging.INFO if self.state == "unknown" else logging.WARNING,
                        "read replica %s is in use%s (lag %.1f s): look-ups, recommendations and exports go to it",
                        self.label, "" if self.state == "unknown" else " again", lag or 0.0)
            else:
                log.warning("read replica %s is %s: %s; look-ups, recommendations and exports go to the "
                            "primary", self.label, state, reason)
        self.state, self.reason = state, reason

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()

    def status(self) -> dict[str, Any]:
        return {"url": self.label, "state": self.state, "lag_seconds": None if self.lag is None else round(self.lag, 3),
                "max_lag_seconds": self.max_lag, "reason": self.reason or None}
