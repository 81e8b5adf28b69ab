"""The agent's journal: one SQLite file (WAL) holding what the agent knows about the library.
This module is its schema and its write model; ``journal_read.py`` is its read model, which the
``Journal`` is too (over its one write connection).

Tables (see shared/design.md, "The journal"):

* ``files``: every audio file seen, by path (stored as bytes: Linux paths need not be UTF-8),
  with the (device, inode, size, mtime_ns) that say whether it changed, its content key, and its
  state (``analyzed``, ``failed``) with the last error;
* ``tracks``: one analysis per content key (the typed ``TrackAnalysis`` as its JSON), with the
  analyzer version that made it;
* ``outbox``: observations waiting for the catalog, written in the same transaction as their
  track; unique by observation id, so a retried write never queues a duplicate;
* ``settings``: small key/value state (paused, paused until); the privacy choices are the
  identity file's (``identity.py``), earlier versions' copies here are moved there once;
* ``consensus``: what the catalog knows of each track (the typed ``Consensus``), beside our own;
* derived state, kept in step by every write through one path (``_derived``): ``library``, a
  query-ready row per track on disk (``trackview.library_row``), and ``profile``, the taste
  profile's running totals, derived from those rows (so a change never needs a pass over the
  library).

One writer: a ``Journal`` is used from one thread; in the agent that is the journal's own
writer thread (``daemon/journal_io.py``), and every other reader opens a ``JournalReader``.
Migrations are recorded in ``migrations``. Raw sqlite errors become a ``JournalError`` that says
what to do.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import msgspec

from cratesense import sqlite
from cratesense.analysis.model import Consensus, TrackAnalysis, decode_consensus, decode_track, encode_consensus, encode_track
from cratesense.daemon import journal_read
from cratesense.daemon.journal_read import (
    FileIdentity,
    JournalReader,
    Observation,
    _chunks,
    _marks,
    display_path,
    explain,
)
from cratesense.daemon.profile import ProfileTotals
from cratesense.daemon.trackview import COLUMNS, library_row
from cratesense.errors import JournalDamagedError, JournalError, JournalVersionError

__all__ = ["FileIdentity", "Journal", "JournalDamagedError", "JournalError", "JournalReader", "JournalVersionError",
           "Observation", "display_path"]

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
    # 8: the taste profile is derived from the library rows (what the library shows of each
    # track): its totals are recomputed from them once, on open
    """
    DELETE FROM profile;
    """,
    # 9: look-ups that follow the catalog (#24): the recording a track is known as (the change
    # feed names recordings), and when a track the feed does not follow yet is asked about again
    # (NULL: followed by the feed; the backoff grows with ``attempts``). Every existing row is
    # due once: the first feed confirms what it follows.
    """
    ALTER TABLE consensus ADD COLUMN recording_id INTEGER;
    ALTER TABLE consensus ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE consensus ADD COLUMN next_lookup_at REAL;
    UPDATE consensus SET recording_id = json_extract(recording, '$.recording'), next_lookup_at = 0;
    CREATE INDEX consensus_recording ON consensus (recording_id) WHERE recording_id IS NOT NULL;
    CREATE INDEX consensus_due ON consensus (next_lookup_at) WHERE next_lookup_at IS NOT NULL;
    """,
    # 10: the consensus where the DJ looks (#24): how many DJs stand behind it, and what it says
    # where it disagrees with the file's own key or tempo; the rows are derived anew on open
    """
    ALTER TABLE library ADD COLUMN backed_by INTEGER;
    ALTER TABLE library ADD COLUMN catalog_camelot TEXT;
    ALTER TABLE library ADD COLUMN catalog_bpm REAL;
    DELETE FROM library;
    """,
    # 11: a DJ's prep (#26): each track's energy, phrases and cues in its library row (the rows are
    # derived again on open: the library is emptied, and rebuilt from the analyses)
    """
    ALTER TABLE library ADD COLUMN energy INTEGER;
    ALTER TABLE library ADD COLUMN phrases TEXT;
    ALTER TABLE library ADD COLUMN cues TEXT;
    DELETE FROM library;
    """,
    # 12: trust where the DJ acts (#29): how sure our analysis is of each track's key, so every
    # face can flag an uncertain one (the rows are derived again on open)
    """
    ALTER TABLE library ADD COLUMN key_strength REAL;
    DELETE FROM library;
    """,
    # 13: the sound model's words and the file's own genre (#27): our own are filled as tracks are
    # analyzed again (the model's stage is new); the rows are derived anew on open, so the catalog's
    # consensus fills them meanwhile
    """
    ALTER TABLE library ADD COLUMN tag_genre TEXT;
    ALTER TABLE library ADD COLUMN genres TEXT;
    ALTER TABLE library ADD COLUMN moods TEXT;
    ALTER TABLE library ADD COLUMN sound_tags TEXT;
    DELETE FROM library;
    """,
)

SCHEMA_VERSION = len(_MIGRATIONS)
assert SCHEMA_VERSION == journal_read.SCHEMA_VERSION, "journal_read.SCHEMA_VERSION must name the last migration"

LOOKUP_BACKOFF_CAP = 86400.0


def lookup_backoff(attempts: int) -> float:
    """Seconds until a track the change feed does not follow is asked about again, after
    ``attempts`` look-ups: the next sync, then 1 h, 2 h, 4 h ... at most a day."""
    return 0.0 if attempts <= 1 else min(LOOKUP_BACKOFF_CAP, 3600.0 * 2.0 ** (attempts - 2))


# the setting that names the catalog contract the parked rows were refused under
PARKED_UNDER = "catalog_contract"


def _put_setting(db: sqlite3.Connection, key: str, value) -> None:
    db.execute("INSERT INTO settings VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
               (key, msgspec.json.encode(value).decode()))


class Journal(JournalReader):
    """The journal at ``path``, created and migrated on open, for writing (and reading: a
    ``JournalReader`` over the same connection). Use as a context manager."""

    def __init__(self, path: str | os.PathLike, *, busy_timeout: float = 5.0, verify: bool = False,
                 check_same_thread: bool = True) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite.connect(self.path, timeout=busy_timeout, check_same_thread=check_same_thread)
            if verify and self._db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("integrity check failed")
            sqlite.migrate(self._db, _MIGRATIONS)
            if self._db.execute("SELECT (SELECT COUNT(DISTINCT content_key) FROM files WHERE state = 'analyzed') "
                                "!= (SELECT COUNT(*) FROM library)").fetchone()[0]:
                self.rebuild_library()
            if self._db.execute("SELECT 1 FROM profile").fetchone() is None:
                self.rebuild_profile()
        except sqlite3.Error as exc:
            if hasattr(self, "_db"):
                self._db.close()
            raise explain(exc, self.path) from exc
        except OSError as exc:
            raise JournalError(f"cannot create the journal's folder {self.path.parent}: {exc.strerror}") from exc

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

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            with sqlite.transaction(self._db) as db:
                yield db
        except sqlite3.Error as exc:
            raise explain(exc, self.path) from exc

    @contextmanager
    def _change(self, content_keys: Sequence[str] = (), paths: Sequence[str | bytes] = (), linked: str | None = None
                ) -> Iterator[sqlite3.Connection]:
        """One write: a transaction, and the derived state brought in step with it inside it.
        ``content_keys``: tracks whose analysis or consensus the write sets; ``paths``: files it
        adds, moves or removes (their tracks, and the ``linked`` one a new file holds, may come
        onto the disk or leave it)."""
        with self._transaction() as db, self._derived(db, list(content_keys), list(paths), linked):
            yield db

    # --- files -----------------------------------------------------------------------------

    def record_analysis(
        self,
        path: str | bytes,
        identity: FileIdentity,
        content_key: str,
        analysis: TrackAnalysis,
        observation: Observation | None,
        consensus: Consensus | None = None,
        links: Sequence[tuple[bytes, FileIdentity]] = (),
    ) -> None:
        """The file, its track and its observation, in one transaction: all or nothing. With
        ``consensus`` (the catalog's view, when our descriptors were skipped for it) too, and
        ``links``: other files with the same content (copies), linked to the same track."""
        now = time.time()
        version = analysis.analyzer_version
        with self._change([content_key], [path, *(p for p, _ in links)]) as db:
            db.execute(
                "INSERT INTO tracks VALUES (?, ?, ?, ?) ON CONFLICT (content_key) DO UPDATE SET "
                "analysis = excluded.analysis, analyzer_version = excluded.analyzer_version, "
                "analyzed_at = excluded.analyzed_at",
                (content_key, encode_track(analysis).decode(), version, now),
            )
            self._upsert_file(db, path, identity, content_key, "analyzed", None, None, now, version)
            if observation is not None:
                db.execute(
                    "INSERT INTO outbox (observation_id, kind, payload) VALUES (?, 'observation', ?) "
                    "ON CONFLICT (observation_id) DO NOTHING",
                    (observation.id, msgspec.json.encode(observation.payload).decode()),
                )
            if consensus is not None:
                self._store_consensus(db, [(content_key, consensus)], now)
            for link, link_identity in links:
                self._upsert_file(db, link, link_identity, content_key, "analyzed", None, None, now, version)

    def record_failure(
        self, path: str | bytes, identity: FileIdentity, kind: str, message: str, analyzer_version: str | None = None
    ) -> None:
        """A file that could not be analyzed: kept with its error until it or the analyzer changes."""
        self.record_failures([(path, identity)], kind, message, analyzer_version)

    def record_failures(
        self, files: Sequence[tuple[str | bytes, FileIdentity]], kind: str, message: str, analyzer_version: str | None = None
    ) -> None:
        """Several files (a file and its copies) that failed alike, in one transaction."""
        now = time.time()
        with self._change(paths=[path for path, _ in files]) as db:
            for path, identity in files:
                self._upsert_file(db, path, identity, None, "failed", kind, message, now, analyzer_version)

    def record_link(self, path: str | bytes, identity: FileIdentity, content_key: str, analyzer_version: str) -> None:
        """A file whose content is already analyzed (a copy, or a hard link): no new observation."""
        with self._change(paths=[path], linked=content_key) as db:
            self._upsert_file(db, path, identity, content_key, "analyzed", None, None, time.time(), analyzer_version)

    def retagged(self, path: str | bytes, identity: FileIdentity, content_key: str) -> None:
        """Our own tag write changed ``path``'s bytes but not its audio: it keeps its analysis
        under its new identity and content key (so neither the scan nor a watcher event sees
        something to analyze again)."""
        now = time.time()
        encoded = os.fsencode(path)
        with self._change([content_key], [path]) as db:
            row = db.execute("SELECT content_key, analyzer_version FROM files WHERE path = ?", (encoded,)).fetchone()
            if row is None or row[0] is None:
                return
            old_key, version = row
            if old_key != content_key:
                db.execute("INSERT OR IGNORE INTO tracks SELECT ?, analysis, analyzer_version, analyzed_at FROM tracks "
                           "WHERE content_key = ?", (content_key, old_key))
                db.execute("INSERT OR IGNORE INTO consensus (content_key, recording, looked_up_at, recording_id, "
                           "attempts, next_lookup_at) SELECT ?, recording, looked_up_at, recording_id, attempts, "
                           "next_lookup_at FROM consensus WHERE content_key = ?", (content_key, old_key))
            self._upsert_file(db, path, identity, content_key, "analyzed", None, None, now, version)
            if old_key != content_key and db.execute("SELECT 1 FROM files WHERE content_key = ? LIMIT 1",
                                                     (old_key,)).fetchone() is None:
                for table in ("tracks", "consensus"):  # nothing holds that content any more
                    db.execute(f"DELETE FROM {table} WHERE content_key = ?", (old_key,))

    def move_files(self, moves: list[tuple[bytes, bytes]]) -> None:
        """Renamed or moved files keep their analysis: only the path changes."""
        with self._change(paths=[path for move in moves for path in move]) as db:
            for old, new in moves:
                db.execute("DELETE FROM files WHERE path = ?", (os.fsencode(new),))
                db.execute("UPDATE files SET path = ? WHERE path = ?", (os.fsencode(new), os.fsencode(old)))

    def forget_files(self, paths: list[bytes]) -> None:
        with self._change(paths=paths) as db:
            db.executemany("DELETE FROM files WHERE path = ?", [(os.fsencode(path),) for path in paths])

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
            (os.fsencode(path), *identity, content_key, state, error_kind, error, now, analyzer_version),
        )

    # --- the catalog's consensus -------------------------------------------------------------

    def record_consensus(self, found: Sequence[tuple[str, Consensus | None]], *, followed: bool = False) -> None:
        """What the catalog answered for these tracks (None: it knows nothing of one). From a
        look-up by fingerprint, a track is asked about again after ``lookup_backoff`` unless the
        change feed already follows it in the same recording; ``followed``: from the feed."""
        with self._change([key for key, _ in found]) as db:
            self._store_consensus(db, found, time.time(), followed=followed)

    @staticmethod
    def _store_consensus(db, found: Sequence[tuple[str, Consensus | None]], now: float, *, followed: bool = False) -> None:
        before: dict[str, tuple] = {}
        for chunk in _chunks([key for key, _ in found]):
            before.update((row[0], row[1:]) for row in db.execute(
                f"SELECT content_key, recording_id, attempts, next_lookup_at FROM consensus WHERE content_key IN ({_marks(chunk)})",
                chunk))
        rows = []
        for key, consensus in found:
            recording = consensus.recording if consensus is not None else None
            old_recording, attempts, due = before.get(key, (None, 0, 0.0))
            if followed or (key in before and due is None and recording is not None and recording == old_recording):
                attempts, due = 0, None  # the feed follows it (a look-up of the same recording changes nothing)
            else:
                attempts += 1
                due = now + lookup_backoff(attempts)
            rows.append((key, encode_consensus(consensus).decode(), now, recording, attempts, due))
        db.executemany(
            "INSERT INTO consensus (content_key, recording, looked_up_at, recording_id, attempts, next_lookup_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (content_key) DO UPDATE SET recording = excluded.recording, "
            "looked_up_at = excluded.looked_up_at, recording_id = excluded.recording_id, "
            "attempts = excluded.attempts, next_lookup_at = excluded.next_lookup_at", rows)

    def forget_followed(self) -> None:
        """Another catalog, or one that forgot us: nothing is followed any more, every track is
        asked about again at the next sync."""
        with self._transaction() as db:
            db.execute("UPDATE consensus SET next_lookup_at = 0, attempts = 0, recording_id = NULL")

    # --- derived state: the library view and the taste profile --------------------------------

    @contextmanager
    def _derived(self, db: sqlite3.Connection, content_keys: list[str], paths: list[str | bytes], linked: str | None
                 ) -> Iterator[None]:
        """Keep the library view and the profile's totals in step with a change, inside its
        transaction: the rows of ``content_keys`` are derived anew (their analysis or consensus
        changed), a track that came onto the disk gets its row and one that left loses it; the
        totals take out what the changed rows added and add what they add now."""
        keys = set(content_keys) | ({linked} if linked else set())
        encoded = [os.fsencode(path) for path in paths]
        for chunk in _chunks(encoded):
            keys.update(key for (key,) in db.execute(
                f"SELECT content_key FROM files WHERE content_key IS NOT NULL AND path IN ({_marks(chunk)})", chunk))
        ordered = sorted(keys)
        before = self.tastes(ordered)
        yield
        on_disk = self._on_disk(db, ordered)
        self._derive_rows(db, sorted((set(content_keys) & on_disk) | (on_disk - set(before))))
        gone = sorted(set(before) - on_disk)
        db.executemany("DELETE FROM library WHERE content_key = ?", [(key,) for key in gone])
        after = self.tastes(ordered)
        if before == after:
            return
        totals_json, revision = db.execute("SELECT totals, revision FROM profile").fetchone()
        totals = ProfileTotals.from_json(totals_json)
        for key in ordered:
            if before.get(key) != after.get(key):
                if key in before:
                    totals.add(before[key], -1)
                if key in after:
                    totals.add(after[key])
        db.execute("UPDATE profile SET totals = ?, revision = ?", (totals.to_json(), revision + 1))

    @staticmethod
    def _on_disk(db: sqlite3.Connection, keys: list[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(keys):
            found.update(key for (key,) in db.execute(
                f"SELECT DISTINCT content_key FROM files WHERE state = 'analyzed' AND content_key IN ({_marks(chunk)})",
                chunk))
        return found

    @staticmethod
    def _derive_rows(db: sqlite3.Connection, content_keys: list[str]) -> None:
        """The library rows of ``content_keys`` (tracks on disk) from their analysis and consensus."""
        columns = (*COLUMNS, "added_at")
        placeholders = _marks(columns)
        for chunk in _chunks(content_keys):
            rows = db.execute(
                "SELECT t.content_key, t.analysis, c.recording, t.analyzed_at FROM tracks t LEFT JOIN consensus c "
                f"ON c.content_key = t.content_key WHERE t.content_key IN ({_marks(chunk)})", chunk).fetchall()
            db.executemany(
                f"INSERT OR REPLACE INTO library ({', '.join(columns)}) VALUES ({placeholders})",
                [(*msgspec.structs.astuple(library_row(key, decode_track(analysis), decode_consensus(recording) if recording else None)), at)
                 for key, analysis, recording, at in rows])

    def rebuild_library(self) -> None:
        """Every library row from scratch (a new or migrated journal), and the totals from them."""
        with self._transaction() as db:
            db.execute("DELETE FROM library")
            keys = [key for (key,) in db.execute("SELECT DISTINCT content_key FROM files WHERE state = 'analyzed'")]
            self._derive_rows(db, keys)
        self.rebuild_profile()

    def rebuild_profile(self) -> None:
        """The totals from scratch, from the library rows."""
        totals = ProfileTotals()
        with self._transaction() as db:
            for taste in self.tastes().values():
                totals.add(taste)
            revision = (db.execute("SELECT revision FROM profile").fetchone() or (0,))[0] + 1
            db.execute("INSERT OR REPLACE INTO profile VALUES (1, ?, ?)", (totals.to_json(), revision))

    # --- outbox --------------------------------------------------------------------------

    def acknowledge(self, seqs: list[int]) -> None:
        """Remove rows only once the catalog has acknowledged them."""
        with self._transaction() as db:
            db.executemany("DELETE FROM outbox WHERE seq = ?", [(seq,) for seq in seqs])

    def park(self, seq: int, reason: str, contract: str | None = None) -> None:
        """A row the catalog rejected: kept with the reason, never retried in a loop; with the
        contract it was refused under (the setting ``PARKED_UNDER``, written with it), so that
        only a catalog answering under another contract is offered it again (``unpark``)."""
        with self._transaction() as db:
            db.execute("UPDATE outbox SET state = 'parked', reason = ? WHERE seq = ?", (reason, seq))
            if contract is not None:
                _put_setting(db, PARKED_UNDER, contract)

    def unpark(self) -> int:
        """Every parked row back in line (the catalog's contract changed: what an older one
        refused may pass now); returns how many."""
        with self._transaction() as db:
            return db.execute("UPDATE outbox SET state = 'pending', reason = NULL WHERE state = 'parked'").rowcount

    # --- settings ------------------------------------------------------------------------

    def set_setting(self, key: str, value) -> None:
        with self._transaction() as db:
            _put_setting(db, key, value)
