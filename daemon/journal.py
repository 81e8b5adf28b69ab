"""The agent's journal: one SQLite file (WAL) holding what the agent knows about the library.

Tables (see shared/design.md, "The journal"):

* ``files``: every audio file seen, by path (stored as bytes: Linux paths need not be UTF-8),
  with the (device, inode, size, mtime_ns) that say whether it changed, its content key, and its
  state (``analyzed``, ``failed``) with the last error;
* ``tracks``: one analysis per content key, with the analyzer version that made it;
* ``outbox``: observations waiting for the catalog, written in the same transaction as their
  track; unique by observation id, so a retried write never queues a duplicate;
* ``settings``: small key/value state (paused, paused until); the privacy choices are the
  identity file's (``identity.py``), earlier versions' copies here are moved there once;
* ``consensus``: what the catalog knows of each track, beside our own analysis;
* ``profile``: the taste profile's running totals, kept in step with the tracks on disk by the
  same transactions that add or remove them (so a change never needs a pass over the library).

One writer: a ``Journal`` is used from one thread; in the agent that is the journal's own
writer thread (``daemon/journal_io.py``), and every other reader opens it read-only. A read-only
``Journal`` never migrates: it refuses a journal of another schema version with a
``JournalVersionError`` that says which program should open it. Migrations are recorded in
``migrations``. Raw sqlite errors become a ``JournalError`` that says what to do.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from cratesense import sqlite
from cratesense.daemon import trackview
from cratesense.daemon.profile import ProfileTotals, TrackTaste
from cratesense.errors import JournalDamagedError, JournalError, JournalVersionError

__all__ = ["Journal", "JournalError", "JournalDamagedError", "JournalVersionError", "FileIdentity", "Observation"]

_MIGRATIONS = (
    """
    CREATE TABLE files (
        path BLOB PRIMARY KEY,
        device INTEGER NOT NULL,
        inode INTEGER NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        content_key TEXT,
        state TEXT NOT NULL CHECK (state IN ('analyzed', 'failed')),
        error_kind TEXT,
        error TEXT,
        updated_at REAL NOT NULL
    );
    CREATE INDEX files_content_key ON files (content_key);
    CREATE TABLE tracks (
        content_key TEXT PRIMARY KEY,
        analysis TEXT NOT NULL,
        analyzer_version TEXT NOT NULL,
        analyzed_at REAL NOT NULL
    );
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        observation_id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'parked')),
        reason TEXT
    );
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: the analyzer version that last looked at a file, so a failure is retried only when the
    # file or the analyzer changes (#4: quarantine, no retry loop)
    """
    ALTER TABLE files ADD COLUMN analyzer_version TEXT;
    CREATE INDEX outbox_state ON outbox (state, next_attempt_at);
    """,
    # 3: what the catalog knows of each track (its consensus), kept beside our own analysis and
    # never written into the user's files; recording is 'null' when the catalog did not know it
    """
    CREATE TABLE consensus (
        content_key TEXT PRIMARY KEY,
        recording TEXT NOT NULL,
        looked_up_at REAL NOT NULL
    );
    """,
    # 4: the taste profile's running totals (filled from the tracks on open when missing)
    """
    CREATE TABLE profile (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        totals TEXT NOT NULL,
        revision INTEGER NOT NULL
    );
    """,
    # 5: the library view (daemon/trackview.py): a query-ready row per track on disk, kept in
    # step with its files, its analysis and the catalog's consensus (filled on open when missing)
    """
    CREATE TABLE library (
        content_key TEXT PRIMARY KEY,
        artist TEXT, title TEXT, album TEXT, isrc TEXT, catalog_number TEXT, filled TEXT,
        duration REAL, bpm REAL, key TEXT, camelot TEXT, loudness REAL, replaygain REAL, true_peak REAL,
        beat_offset REAL, downbeat_offset REAL, beats_per_bar INTEGER,
        codec TEXT, sample_rate INTEGER, channels INTEGER,
        embedding BLOB, sound_sketch BLOB, fingerprint_sketch BLOB, fingerprint_duration REAL, added_at REAL
    );
    CREATE INDEX library_bpm ON library (bpm);
    CREATE INDEX library_camelot ON library (camelot, bpm);
    CREATE INDEX library_added ON library (added_at);
    """,
    # 6: counting failing files (the status, polled every few seconds) without a full scan. A
    # partial index: one on state alone made the planner take it for "state = 'analyzed'" (all
    # rows) instead of the content-key index, and the library's queries went quadratic.
    """
    CREATE INDEX files_failed ON files (error_kind) WHERE state = 'failed';
    """,
    # 7: a rescan reads every known file's identity: from an index that holds it, not through
    # the path index and then the wide row (100,000 files: ~0.15 s instead of ~0.27 s, for
    # ~75 bytes a file).
    """
    CREATE INDEX files_identity ON files (path, device, inode, size, mtime_ns);
    """,
)

SCHEMA_VERSION = len(_MIGRATIONS)


class FileIdentity(NamedTuple):
    """What says a file is unchanged: equal identities mean no re-analysis. (A named tuple: a
    100,000-file rescan builds two of these per file, and tuples are the cheapest to build.)"""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, stat: os.stat_result) -> FileIdentity:
        return cls(stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


@dataclass(frozen=True, slots=True)
class Observation:
    id: str
    payload: dict  # the wire fields only (see cratesense.analysis.model.observation_fields)


def _explain(error: sqlite3.Error, path: Path) -> JournalError:
    """A sentence that says what happened and what to do."""
    text = str(error).lower()
    if "locked" in text or "busy" in text:
        return JournalError(f"the journal {path} is locked by another process; is another CrateSense agent running?")
    # for a bare "disk I/O error" SQLite does not say why: ask the file system
    cause = _why_unwritable(path.parent) if "disk i/o error" in text else None
    if "full" in text or cause == errno.ENOSPC:
        return JournalError(f"the disk holding the journal {path} is full; free some space and the agent resumes")
    if "readonly" in text or "read-only" in text:
        return JournalError(f"the journal {path} is read-only; check the permissions of {path.parent}")
    if "not a database" in text or "malformed" in text or "corrupt" in text or "integrity" in text:
        return JournalDamagedError(
            f"the journal {path} is damaged; move it aside (the agent rebuilds it from a rescan)"
        )
    if "unable to open" in text:
        return JournalError(f"cannot open the journal {path}; check that {path.parent} exists and is writable")
    if cause == errno.EROFS:  # a failing disk is remounted read-only by the kernel
        return JournalError(
            f"the file system holding the journal {path} has turned read-only (a failing disk?); "
            "check the disk, then restart the agent"
        )
    return JournalError(f"journal error in {path}: {error}")


def _why_unwritable(folder: Path) -> int | None:
    """The errno that creating a file in ``folder`` fails with, or None when it can be written."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError as exc:
        return exc.errno


def display_path(path: bytes) -> str:
    """A path for people and JSON: UTF-8, with bytes that are not UTF-8 shown as \\xNN."""
    return bytes(path).decode("utf-8", "backslashreplace")


class Journal:
    """The journal at ``path``, created and migrated on open; or, ``read_only``, opened for
    reading only (never created, never migrated). Use as a context manager."""

    def __init__(self, path: str | os.PathLike, *, busy_timeout: float = 5.0, verify: bool = False,
                 read_only: bool = False, check_same_thread: bool = True) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if read_only:
            self._open_read_only(busy_timeout, check_same_thread)
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite.connect(self.path, timeout=busy_timeout, check_same_thread=check_same_thread)
            if verify and self._db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("integrity check failed")
            sqlite.migrate(self._db, _MIGRATIONS)
            if self._db.execute("SELECT 1 FROM profile").fetchone() is None:
                self.rebuild_profile()
            if self._db.execute("SELECT (SELECT COUNT(DISTINCT content_key) FROM files WHERE state = 'analyzed') "
                                "!= (SELECT COUNT(*) FROM library)").fetchone()[0]:
                self.rebuild_library()
        except sqlite3.Error as exc:
            if hasattr(self, "_db"):
                self._db.close()
            raise _explain(exc, self.path) from exc
        except OSError as exc:
            raise JournalError(f"cannot create the journal's folder {self.path.parent}: {exc.strerror}") from exc

    def _open_read_only(self, busy_timeout: float, check_same_thread: bool) -> None:
        if not self.path.exists():
            raise JournalError(f"there is no journal at {self.path} yet: the agent has not run (cratesense run)")
        try:
            self._db = sqlite.connect_read_only(self.path, timeout=busy_timeout, check_same_thread=check_same_thread)
            found = sqlite.schema_version(self._db) if self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'migrations'").fetchone() else 0
        except sqlite3.Error as exc:
            if hasattr(self, "_db"):
                self._db.close()
            raise _explain(exc, self.path) from exc
        if found != SCHEMA_VERSION:
            self._db.close()
            if found > SCHEMA_VERSION:
                raise JournalVersionError(
                    f"the journal {self.path} was written by a newer CrateSense (schema {found}; this one "
                    f"reads schema {SCHEMA_VERSION}): upgrade CrateSense to read it; nothing was changed")
            raise JournalVersionError(
                f"the journal {self.path} is from an older CrateSense (schema {found}; this one reads schema "
                f"{SCHEMA_VERSION}): start the agent once (cratesense run) to upgrade it; nothing was changed")

    @classmethod
    def open_or_rebuild(cls, path: Path) -> tuple[Journal, Path | None]:
        """The journal, verified; a damaged one is moved aside (kept for inspection) and a new
        one started, which the first scan fills again. Returns where the damaged file went."""
        try:
            return cls(path, verify=True), None
        except JournalDamagedError:
            aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            for suffix in ("", "-wal", "-shm"):
                if Path(f"{path}{suffix}").exists():
                    os.replace(f"{path}{suffix}", f"{aside}{suffix}")
            return cls(path, verify=True), aside

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            with sqlite.transaction(self._db) as db:
                yield db
        except sqlite3.Error as exc:
            raise _explain(exc, self.path) from exc

    @property
    def schema_version(self) -> int:
        return sqlite.schema_version(self._db)

    # --- files -----------------------------------------------------------------------------

    def identity(self, path: str | bytes) -> FileIdentity | None:
        row = self._db.execute(
            "SELECT device, inode, size, mtime_ns FROM files WHERE path = ?", (os.fsencode(path),)
        ).fetchone()
        return FileIdentity(*row) if row else None

    def record_analysis(
        self,
        path: str | bytes,
        identity: FileIdentity,
        content_key: str,
        analysis: dict,
        analyzer_version: str,
        observation: Observation | None,
        consensus: dict | None = None,
        links: list[tuple[bytes, FileIdentity]] = (),
    ) -> None:
        """The file, its track and its observation, in one transaction: all or nothing. With
        ``consensus`` (the catalog's view, when our descriptors were skipped for it) too, and
        ``links``: other files with the same content (copies), linked to the same track."""
        now = time.time()
        with self._transaction() as db, self._profile_follows(db, [content_key], [path, *(p for p, _ in links)]):
            db.execute(
                "INSERT INTO tracks VALUES (?, ?, ?, ?) ON CONFLICT (content_key) DO UPDATE SET "
                "analysis = excluded.analysis, analyzer_version = excluded.analyzer_version, "
                "analyzed_at = excluded.analyzed_at",
                (content_key, json.dumps(analysis, ensure_ascii=False), analyzer_version, now),
            )
            self._upsert_file(db, path, identity, content_key, "analyzed", None, None, now, analyzer_version)
            if observation is not None:
                db.execute(
                    "INSERT INTO outbox (observation_id, kind, payload) VALUES (?, 'observation', ?) "
                    "ON CONFLICT (observation_id) DO NOTHING",
                    (observation.id, json.dumps(observation.payload, ensure_ascii=False)),
                )
            if consensus is not None:
                self._store_consensus(db, [(content_key, consensus)], now)
            else:
                self._refresh_library(db, [content_key])  # a new analysis: its row derived anew
            for link, link_identity in links:
                self._upsert_file(db, link, link_identity, content_key, "analyzed", None, None, now, analyzer_version)

    def record_failure(
        self, path: str | bytes, identity: FileIdentity, kind: str, message: str, analyzer_version: str | None = None
    ) -> None:
        """A file that could not be analyzed: kept with its error until it or the analyzer changes."""
        with self._transaction() as db, self._profile_follows(db, [], [path]):
            self._upsert_file(db, path, identity, None, "failed", kind, message, time.time(), analyzer_version)

    def record_failures(
        self, files: list[tuple[bytes, FileIdentity]], kind: str, message: str, analyzer_version: str | None = None
    ) -> None:
        """Several files (a file and its copies) that failed alike, in one transaction."""
        now = time.time()
        with self._transaction() as db, self._profile_follows(db, [], [path for path, _ in files]):
            for path, identity in files:
                self._upsert_file(db, path, identity, None, "failed", kind, message, now, analyzer_version)

    def record_link(self, path: str | bytes, identity: FileIdentity, content_key: str, analyzer_version: str) -> None:
        """A file whose content is already analyzed (a copy, or a hard link): no new observation."""
        with self._transaction() as db, self._profile_follows(db, [content_key], [path]):
            self._upsert_file(db, path, identity, content_key, "analyzed", None, None, time.time(), analyzer_version)

    def retagged(self, path: str | bytes, identity: FileIdentity, content_key: str) -> None:
        """Our own tag write changed ``path``'s bytes but not its audio: it keeps its analysis
        under its new identity and content key (so neither the scan nor a watcher event sees
        something to analyze again)."""
        now = time.time()
        encoded = os.fsencode(path)
        with self._transaction() as db, self._profile_follows(db, [content_key], [path]):
            row = db.execute("SELECT content_key, analyzer_version FROM files WHERE path = ?", (encoded,)).fetchone()
            if row is None or row[0] is None:
                return
            old_key, version = row
            if old_key != content_key:
                db.execute("INSERT OR IGNORE INTO tracks SELECT ?, analysis, analyzer_version, analyzed_at FROM tracks "
                           "WHERE content_key = ?", (content_key, old_key))
                db.execute("INSERT OR IGNORE INTO consensus SELECT ?, recording, looked_up_at FROM consensus "
                           "WHERE content_key = ?", (content_key, old_key))
            self._upsert_file(db, path, identity, content_key, "analyzed", None, None, now, version)
            if old_key != content_key and db.execute("SELECT 1 FROM files WHERE content_key = ? LIMIT 1",
                                                     (old_key,)).fetchone() is None:
                for table in ("tracks", "library", "consensus"):  # nothing holds that content any more
                    db.execute(f"DELETE FROM {table} WHERE content_key = ?", (old_key,))

    def move_files(self, moves: list[tuple[bytes, bytes]]) -> None:
        """Renamed or moved files keep their analysis: only the path changes."""
        with self._transaction() as db, self._profile_follows(db, [], [path for move in moves for path in move]):
            for old, new in moves:
                db.execute("DELETE FROM files WHERE path = ?", (os.fsencode(new),))
                db.execute("UPDATE files SET path = ? WHERE path = ?", (os.fsencode(new), os.fsencode(old)))

    def forget_files(self, paths: list[bytes]) -> None:
        with self._transaction() as db, self._profile_follows(db, [], paths):
            db.executemany("DELETE FROM files WHERE path = ?", [(os.fsencode(path),) for path in paths])

    def files_under(self, folders: list[bytes]) -> dict[bytes, FileIdentity]:
        """Every known file at or below each of ``folders`` (a file path matches itself)."""
        known: dict[bytes, FileIdentity] = {}
        for folder in folders:
            folder = os.fsencode(folder).rstrip(b"/") or b"/"
            low = folder if folder.endswith(b"/") else folder + b"/"
            high = low[:-1] + b"0"  # "0" sorts right after "/": the range is exactly the subtree
            rows = self._db.execute(
                "SELECT path, device, inode, size, mtime_ns FROM files "
                "WHERE path = ? OR (path >= ? AND path < ?)",
                (folder, low, high),
            )
            # plain (device, inode, size, mtime_ns) tuples: equal to FileIdentity's, and a
            # 100,000-file rescan builds them twice as fast
            known.update({row[0]: row[1:] for row in rows})
        return known

    def stale_files(self, analyzer_version: str) -> list[bytes]:
        """Files a newer analyzer should look at again, newest first: analyses and failures made
        by another version."""
        if not self._db.execute(  # the common case, answered without a pass over every file
            "SELECT EXISTS (SELECT 1 FROM tracks WHERE analyzer_version != ?) "
            "OR EXISTS (SELECT 1 FROM files WHERE state = 'failed' AND (analyzer_version IS NULL OR analyzer_version != ?)) "
            "OR EXISTS (SELECT 1 FROM files f WHERE f.state = 'analyzed' AND NOT EXISTS "
            "(SELECT 1 FROM tracks t WHERE t.content_key = f.content_key))",
            (analyzer_version, analyzer_version),
        ).fetchone()[0]:
            return []
        rows = self._db.execute(
            "SELECT f.path FROM files f LEFT JOIN tracks t ON t.content_key = f.content_key "
            "WHERE (f.state = 'analyzed' AND (t.analyzer_version IS NULL OR t.analyzer_version != ?)) "
            "OR (f.state = 'failed' AND (f.analyzer_version IS NULL OR f.analyzer_version != ?)) "
            "ORDER BY f.mtime_ns DESC",
            (analyzer_version, analyzer_version),
        )
        return [bytes(path) for (path,) in rows]

    def track_version(self, content_key: str) -> str | None:
        row = self._db.execute(
            "SELECT analyzer_version FROM tracks WHERE content_key = ?", (content_key,)
        ).fetchone()
        return row[0] if row else None

    @staticmethod
    def _upsert_file(db, path, identity, content_key, state, error_kind, error, now, analyzer_version=None) -> None:
        db.execute(
            "INSERT INTO files (path, device, inode, size, mtime_ns, content_key, state, error_kind, "
            "error, updated_at, analyzer_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (path) DO UPDATE SET "
            "device = excluded.device, inode = excluded.inode, size = excluded.size, "
            "mtime_ns = excluded.mtime_ns, content_key = excluded.content_key, state = excluded.state, "
            "error_kind = excluded.error_kind, error = excluded.error, updated_at = excluded.updated_at, "
            "analyzer_version = excluded.analyzer_version",
            (
                os.fsencode(path),
                identity.device,
                identity.inode,
                identity.size,
                identity.mtime_ns,
                content_key,
                state,
                error_kind,
                error,
                now,
                analyzer_version,
            ),
        )

    def failed_paths(self, kind: str) -> list[bytes]:
        return [bytes(path) for (path,) in self._db.execute(
            "SELECT path FROM files WHERE state = 'failed' AND error_kind = ?", (kind,))]

    def failures(self) -> list[tuple[bytes, str, str]]:
        return self._db.execute(
            "SELECT path, error_kind, error FROM files WHERE state = 'failed' ORDER BY path"
        ).fetchall()

    def track(self, content_key: str) -> dict | None:
        row = self._db.execute("SELECT analysis FROM tracks WHERE content_key = ?", (content_key,)).fetchone()
        return json.loads(row[0]) if row else None

    def lookup_due(self, limit: int, older_than: float) -> list[tuple[str, str, float]]:
        """(content key, chromaprint, duration) of tracks on disk never looked up at the catalog,
        or last looked up before ``older_than``."""
        return self._db.execute(
            "SELECT t.content_key, json_extract(t.analysis, '$.fingerprint.chromaprint'), "
            "json_extract(t.analysis, '$.fingerprint.duration') FROM tracks t "
            "LEFT JOIN consensus c ON c.content_key = t.content_key "
            "WHERE (c.content_key IS NULL OR c.looked_up_at < ?) "
            "AND json_extract(t.analysis, '$.fingerprint.chromaprint') IS NOT NULL "
            "AND t.content_key IN (SELECT content_key FROM files WHERE state = 'analyzed') LIMIT ?",
            (older_than, limit),
        ).fetchall()

    def record_consensus(self, found: list[tuple[str, dict | None]]) -> None:
        with self._transaction() as db, self._profile_follows(db, [key for key, _ in found], []):
            self._store_consensus(db, found, time.time())

    @classmethod
    def _store_consensus(cls, db, found: list[tuple[str, dict | None]], now: float) -> None:
        db.executemany(
            "INSERT INTO consensus VALUES (?, ?, ?) ON CONFLICT (content_key) DO UPDATE SET "
            "recording = excluded.recording, looked_up_at = excluded.looked_up_at",
            [(key, json.dumps(recording, ensure_ascii=False), now) for key, recording in found],
        )
        cls._refresh_library(db, [key for key, _ in found])

    # --- the library view (daemon/trackview.py) ---------------------------------------------

    @staticmethod
    def _refresh_library(db: sqlite3.Connection, content_keys: list[str]) -> None:
        """The library rows of ``content_keys`` derived anew from their analysis and consensus
        (those on disk; a track no analyzed file holds has no row)."""
        columns = (*trackview.COLUMNS, "added_at")
        placeholders = ", ".join(["?"] * len(columns))
        for start in range(0, len(content_keys), 500):
            chunk = content_keys[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            rows = db.execute(
                "SELECT t.content_key, t.analysis, c.recording, t.analyzed_at FROM tracks t LEFT JOIN consensus c "
                f"ON c.content_key = t.content_key WHERE t.content_key IN ({marks}) AND EXISTS "
                "(SELECT 1 FROM files f WHERE f.content_key = t.content_key AND f.state = 'analyzed')", chunk).fetchall()
            db.executemany(
                f"INSERT OR REPLACE INTO library ({', '.join(columns)}) VALUES ({placeholders})",
                [(*trackview.library_row(key, json.loads(analysis), json.loads(recording) if recording else None), at)
                 for key, analysis, recording, at in rows])
            on_disk = {row[0] for row in rows}
            db.executemany("DELETE FROM library WHERE content_key = ?", [(k,) for k in chunk if k not in on_disk])

    def rebuild_library(self) -> None:
        """Every library row from scratch (a new or migrated journal)."""
        with self._transaction() as db:
            db.execute("DELETE FROM library")
            keys = [key for (key,) in db.execute("SELECT DISTINCT content_key FROM files WHERE state = 'analyzed'")]
            self._refresh_library(db, keys)

    def known_to_catalog(self) -> int:
        # EXISTS probes the content-key index per consensus row; IN (SELECT ...) built a
        # 100,000-key temporary index at every status request (130 ms)
        return self._db.execute(
            "SELECT COUNT(*) FROM consensus c WHERE c.recording != 'null' AND EXISTS "
            "(SELECT 1 FROM files f WHERE f.content_key = c.content_key AND f.state = 'analyzed')"
        ).fetchone()[0]

    # --- the taste profile ------------------------------------------------------------------

    def profile(self) -> tuple[dict, int]:
        """The taste profile of the tracks on disk, and its revision (it grows with each change)."""
        totals, revision = self._db.execute("SELECT totals, revision FROM profile").fetchone()
        return ProfileTotals.from_json(totals).profile(), revision

    def tastes(self, content_keys: list[str] | None = None, db: sqlite3.Connection | None = None) -> dict[str, TrackTaste]:
        """What each track on disk (or each of ``content_keys`` that is on disk) adds to the
        profile: our own descriptors, or the catalog's consensus where ours were skipped."""
        db = db or self._db
        query = (
            "SELECT t.content_key, json_extract(t.analysis, '$.descriptors_from'), "
            "json_extract(t.analysis, '$.descriptors.bpm'), json_extract(t.analysis, '$.descriptors.camelot'), "
            "json_extract(t.analysis, '$.descriptors.loudness_lufs'), json_extract(t.analysis, '$.descriptors.embedding'), "
            "json_extract(c.recording, '$.analysis.bpm'), json_extract(c.recording, '$.analysis.camelot'), "
            "json_extract(c.recording, '$.analysis.loudness_lufs') "
            "FROM tracks t LEFT JOIN consensus c ON c.content_key = t.content_key "
            "WHERE EXISTS (SELECT 1 FROM files f WHERE f.content_key = t.content_key AND f.state = 'analyzed')"
        )
        if content_keys is None:
            rows = db.execute(query).fetchall()
        else:
            rows = []
            for start in range(0, len(content_keys), 500):
                chunk = content_keys[start : start + 500]
                rows += db.execute(f"{query} AND t.content_key IN ({', '.join('?' * len(chunk))})", chunk).fetchall()
        tastes = {}
        for key, source, bpm, camelot, lufs, embedding, c_bpm, c_camelot, c_lufs in rows:
            if source == "catalog":
                tastes[key] = TrackTaste(c_bpm, c_camelot, c_lufs, None)
            else:
                tastes[key] = TrackTaste(bpm, camelot, lufs, json.loads(embedding) if embedding else None)
        return tastes

    def rebuild_profile(self) -> None:
        """The totals from scratch (a new or migrated journal)."""
        totals = ProfileTotals()
        with self._transaction() as db:
            for taste in self.tastes(db=db).values():
                totals.add(taste)
            revision = (db.execute("SELECT revision FROM profile").fetchone() or (0,))[0] + 1
            db.execute("INSERT OR REPLACE INTO profile VALUES (1, ?, ?)", (totals.to_json(), revision))

    @contextmanager
    def _profile_follows(self, db: sqlite3.Connection, content_keys: list[str], paths: list) -> Iterator[None]:
        """Keep the profile's totals and the library view in step with a change, inside its
        transaction: the tracks the change may add, remove or alter (``content_keys`` and those
        of ``paths`` now) are taken out as they were and put back as they are; a track that
        came onto the disk gets its library row, one that left loses it."""
        keys = set(content_keys)
        encoded = [os.fsencode(path) for path in paths]
        for start in range(0, len(encoded), 500):
            chunk = encoded[start : start + 500]
            keys.update(key for (key,) in db.execute(
                f"SELECT content_key FROM files WHERE content_key IS NOT NULL AND path IN ({', '.join('?' * len(chunk))})",
                chunk))
        keys = sorted(keys)
        before = self.tastes(keys, db)
        yield
        after = self.tastes(keys, db)
        self._library_follows(db, keys, set(after))
        if before == after:
            return
        totals_json, revision = db.execute("SELECT totals, revision FROM profile").fetchone()
        totals = ProfileTotals.from_json(totals_json)
        for key in keys:
            if before.get(key) != after.get(key):
                if key in before:
                    totals.add(before[key], -1)
                if key in after:
                    totals.add(after[key])
        db.execute("UPDATE profile SET totals = ?, revision = ?", (totals.to_json(), revision + 1))

    @classmethod
    def _library_follows(cls, db: sqlite3.Connection, keys: list[str], on_disk: set[str]) -> None:
        """Rows for the tracks of ``keys`` that are on disk and have none; none for the others."""
        have = set()
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            have.update(key for (key,) in db.execute(
                f"SELECT content_key FROM library WHERE content_key IN ({', '.join('?' * len(chunk))})", chunk))
        changed = sorted((on_disk - have) | (have - on_disk))
        if changed:
            cls._refresh_library(db, changed)

    def export(self) -> dict:
        """Everything the journal holds, paths included, for the user's own export (the
        credentials live in the identity file, not here)."""
        files = [
            {"path": display_path(path), "device": d, "inode": i, "size": s, "mtime_ns": m, "content_key": k,
             "state": state, "error_kind": kind, "error": error}
            for path, d, i, s, m, k, state, kind, error in self._db.execute(
                "SELECT path, device, inode, size, mtime_ns, content_key, state, error_kind, error FROM files ORDER BY path")
        ]
        tracks = [{"content_key": k, "analyzer_version": v, "analyzed_at": at, "analysis": json.loads(a)}
                  for k, a, v, at in self._db.execute("SELECT content_key, analysis, analyzer_version, analyzed_at FROM tracks")]
        outbox = [{"observation_id": o, "state": state, "reason": reason, "payload": json.loads(payload)}
                  for o, state, reason, payload in self._db.execute(
                      "SELECT observation_id, state, reason, payload FROM outbox ORDER BY seq")]
        settings = {key: json.loads(value) for key, value in self._db.execute("SELECT key, value FROM settings")}
        consensus = {key: json.loads(recording) for key, recording in self._db.execute(
            "SELECT content_key, recording FROM consensus")}
        for track in tracks:  # the catalog's view beside our own, per track
            track["catalog_consensus"] = consensus.get(track["content_key"])
        return {"files": files, "tracks": tracks, "outbox": outbox, "settings": settings}

    def counts(self) -> dict[str, int]:
        query = (
            "SELECT (SELECT COUNT(*) FROM files), (SELECT COUNT(*) FROM tracks), "
            "(SELECT COUNT(*) FROM outbox WHERE state = 'pending'), "
            "(SELECT COUNT(*) FROM outbox WHERE state = 'parked'), "
            "(SELECT COUNT(*) FROM files WHERE state = 'failed')"
        )
        files, tracks, pending, parked, failed = self._db.execute(query).fetchone()
        return {"files": files, "tracks": tracks, "outbox": pending, "parked": parked, "failed": failed}

    # --- outbox --------------------------------------------------------------------------

    def pending(self, limit: int) -> list[tuple[int, str, dict]]:
        """The oldest observations due for sending: (seq, observation id, payload)."""
        rows = self._db.execute(
            "SELECT seq, observation_id, payload FROM outbox WHERE state = 'pending' "
            "AND next_attempt_at <= ? ORDER BY seq LIMIT ?",
            (time.time(), limit),
        ).fetchall()
        return [(seq, observation_id, json.loads(payload)) for seq, observation_id, payload in rows]

    def parked(self, limit: int = 100) -> list[tuple[str, str]]:
        """(observation id, why the catalog refused it), newest first."""
        return self._db.execute(
            "SELECT observation_id, reason FROM outbox WHERE state = 'parked' ORDER BY seq DESC LIMIT ?", (limit,)
        ).fetchall()

    def acknowledge(self, seqs: list[int]) -> None:
        """Remove rows only once the catalog has acknowledged them."""
        with self._transaction() as db:
            db.executemany("DELETE FROM outbox WHERE seq = ?", [(seq,) for seq in seqs])

    def park(self, seq: int, reason: str) -> None:
        """A row the catalog rejected: kept with the reason, never retried in a loop."""
        with self._transaction() as db:
            db.execute("UPDATE outbox SET state = 'parked', reason = ? WHERE seq = ?", (reason, seq))

    # --- settings ------------------------------------------------------------------------

    def setting(self, key: str, default=None):
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_setting(self, key: str, value) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO settings VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)),
            )
