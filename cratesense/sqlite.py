"""SQLite habits shared by the agent's journal and the catalog's store: WAL, explicit
transactions, and migrations recorded in a table (one numbered script each, applied once)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote


def connect(path: Path, *, timeout: float, check_same_thread: bool = True, durable: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, foreign keys on.
    synchronous=NORMAL in WAL mode survives a crash or kill -9 of the process; a power cut or a
    failing disk costs at most the last transactions, never consistency. ``durable`` (FULL) makes
    every commit reach the disk before it returns: for a store whose answers promise that."""
    db = sqlite3.connect(path, isolation_level=None, timeout=timeout, check_same_thread=check_same_thread)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
    db.execute("PRAGMA foreign_keys=ON")
    return db


def connect_read_only(path: Path, *, timeout: float, check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection that can only read: it never creates, migrates or writes the database (a
    missing file is an error, not a new empty database)."""
    uri = f"file:{quote(str(Path(path).absolute()))}?mode=ro"
    return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=timeout, check_same_thread=check_same_thread)


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def migrate(db: sqlite3.Connection, migrations: Sequence[str]) -> None:
    """Apply each script of ``migrations`` not yet recorded, in order, each in its own transaction."""
    db.execute("CREATE TABLE IF NOT EXISTS migrations (version INTEGER PRIMARY KEY, applied_at REAL)")
    applied = {row[0] for row in db.execute("SELECT version FROM migrations")}
    for version, script in enumerate(migrations, start=1):
        if version not in applied:
            with transaction(db):
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
                db.execute("INSERT INTO migrations VALUES (?, ?)", (version, time.time()))


def schema_version(db: sqlite3.Connection) -> int:
    return db.execute("SELECT COALESCE(MAX(version), 0) FROM migrations").fetchone()[0]
