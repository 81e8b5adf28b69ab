"""The journal's read model: every question the agent, the CLI, the DJ's library and the control
API ask of the journal, answered over a connection that can only read.

It never creates, migrates or writes a journal, and refuses one of another schema version with a
``JournalVersionError`` that says which program should open it; so the DJ's commands work with
the agent stopped and can never change the journal under a running one. The write model
(``daemon/journal.py``'s ``Journal``) is a ``JournalReader`` too, over its one write connection.

Answers are typed (``TrackAnalysis``, ``Consensus``, ``LibraryEntry``) or plain tuples of what
was asked; no caller sees a table or the connection.
"""

from __future__ import annotations

import errno
import math
import os
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from cratesense import sqlite
from cratesense.analysis.model import Consensus, TrackAnalysis, decode_consensus, decode_track
from cratesense.daemon.profile import ProfileTotals, TrackTaste
from cratesense.daemon.trackview import COLUMNS, TASTE_COLUMNS, LibraryRow, taste_of, unpack_embedding
from cratesense.errors import JournalDamagedError, JournalError, JournalVersionError

SCHEMA_VERSION = 13  # the number of migrations in daemon/journal.py (checked there)
CHUNK = 500  # keys per IN (...) list: well under SQLite's variable limit


Identity = tuple[int, int, int, int]  # (device, inode, size, mtime_ns): a FileIdentity, or the plain tuple


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


class LibraryEntry(LibraryRow, frozen=True, kw_only=True):
    """A library row with where it is on disk: one of its files (the first by path), how many
    files hold it, and when it came into the library."""

    path: str = ""
    copies: int = 0
    added_at: float | None = None


class LibraryQuery(NamedTuple):
    """Which library rows, in which order: what the DJ's filters become (dj/collection.py)."""

    bpm: tuple[float, float] | None = None
    camelots: tuple[str, ...] | None = None  # any of these Camelot codes
    search: str | None = None  # in the artist, title, album or a file's path
    order: str = "artist"  # a key of ORDERS
    genre: str | None = None  # a vocabulary word among the track's genres
    mood: str | None = None  # ... among its moods
    tag: str | None = None  # ... among any of its words


ORDERS = {
    "bpm": "l.bpm IS NULL, l.bpm, l.artist, l.title",
    "key": "l.camelot IS NULL, CAST(substr(l.camelot, 1, length(l.camelot) - 1) AS INTEGER), "
           "substr(l.camelot, -1), l.bpm",
    "loudness": "l.loudness IS NULL, l.loudness DESC",
    "added": "l.added_at DESC",
    "artist": "l.artist IS NULL, l.artist COLLATE NOCASE, l.title COLLATE NOCASE",
    "title": "l.title IS NULL, l.title COLLATE NOCASE",
    "duration": "l.duration",
}
# The library holds exactly the tracks on disk: no query needs to look at the files for that.
_ENTRY = (
    "SELECT " + ", ".join(f"l.{name}" for name in COLUMNS)
    + ", (SELECT MIN(path) FROM files f WHERE f.content_key = l.content_key AND f.state = 'analyzed')"
    + ", (SELECT COUNT(*) FROM files f WHERE f.content_key = l.content_key AND f.state = 'analyzed')"
    + ", l.added_at FROM library l"
)


def explain(error: sqlite3.Error, path: Path) -> JournalError:
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


def _marks(values: Iterable[Any]) -> str:
    return ", ".join("?" for _ in values)


def _chunks(values: list, size: int = CHUNK) -> Iterable[list]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class JournalReader:
    """The journal at ``path`` for reading only; use as a context manager."""

    _db: sqlite3.Connection

    def __init__(self, path: str | os.PathLike, *, busy_timeout: float = 5.0, check_same_thread: bool = True) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise JournalError(f"there is no journal at {self.path} yet: the agent has not run (cratesense run)")
        try:
            self._db = sqlite.connect_read_only(self.path, timeout=busy_timeout, check_same_thread=check_same_thread)
            found = sqlite.schema_version(self._db) if self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'migrations'").fetchone() else 0
        except sqlite3.Error as exc:
            if hasattr(self, "_db"):
                self._db.close()
            raise explain(exc, self.path) from exc
        if found != SCHEMA_VERSION:
            self._db.close()
            if found > SCHEMA_VERSION:
                raise JournalVersionError(
                    f"the journal {self.path} was written by a newer CrateSense (schema {found}; this one "
                    f"reads schema {SCHEMA_VERSION}): upgrade CrateSense to read it; nothing was changed")
            raise JournalVersionError(
                f"the journal {self.path} is from an older CrateSense (schema {found}; this one reads schema "
                f"{SCHEMA_VERSION}): start the agent once (cratesense run) to upgrade it; nothing was changed")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    @property
    def schema_version(self) -> int:
        return sqlite.schema_version(self._db)

    # --- files -----------------------------------------------------------------------------

    def identity(self, path: str | bytes) -> FileIdentity | None:
        row = self._db.execute(
            "SELECT device, inode, size, mtime_ns FROM files WHERE path = ?", (os.fsencode(path),)
        ).fetchone()
        return FileIdentity(*row) if row else None

    def files_under(self, folders: Iterable[bytes]) -> dict[bytes, Identity]:
        """Every known file at or below each of ``folders`` (a file path matches itself), with
        its (device, inode, size, mtime_ns): plain tuples, equal to ``FileIdentity``'s, which a
        100,000-file rescan builds twice as fast."""
        known: dict[bytes, Identity] = {}
        for folder in folders:
            folder = os.fsencode(folder).rstrip(b"/") or b"/"
            low = folder if folder.endswith(b"/") else folder + b"/"
            high = low[:-1] + b"0"  # "0" sorts right after "/": the range is exactly the subtree
            rows = self._db.execute(
                "SELECT path, device, inode, size, mtime_ns FROM files "
                "WHERE path = ? OR (path >= ? AND path < ?)",
                (folder, low, high),
            )
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

    def failed_paths(self, kind: str) -> list[bytes]:
        return [bytes(path) for (path,) in self._db.execute(
            "SELECT path FROM files WHERE state = 'failed' AND error_kind = ?", (kind,))]

    def failures(self) -> list[tuple[bytes, str, str]]:
        return self._db.execute(
            "SELECT path, error_kind, error FROM files WHERE state = 'failed' ORDER BY path"
        ).fetchall()

    def counts(self) -> dict[str, int]:
        query = (
            "SELECT (SELECT COUNT(*) FROM files), (SELECT COUNT(*) FROM tracks), "
            "(SELECT COUNT(*) FROM outbox WHERE state = 'pending'), "
            "(SELECT COUNT(*) FROM outbox WHERE state = 'parked'), "
            "(SELECT COUNT(*) FROM files WHERE state = 'failed')"
        )
        files, tracks, pending, parked, failed = self._db.execute(query).fetchone()
        return {"files": files, "tracks": tracks, "outbox": pending, "parked": parked, "failed": failed}

    # --- tracks and the catalog's consensus --------------------------------------------------

    def track_version(self, content_key: str) -> str | None:
        row = self._db.execute("SELECT analyzer_version FROM tracks WHERE content_key = ?", (content_key,)).fetchone()
        return row[0] if row else None

    def track(self, content_key: str) -> TrackAnalysis | None:
        row = self._db.execute("SELECT analysis FROM tracks WHERE content_key = ?", (content_key,)).fetchone()
        return decode_track(row[0]) if row else None

    def consensus(self, content_key: str) -> Consensus | None:
        row = self._db.execute("SELECT recording FROM consensus WHERE content_key = ?", (content_key,)).fetchone()
        return decode_consensus(row[0]) if row else None

    def lookup_due(self, limit: int, now: float, asked_before: float | None = None) -> list[tuple[str, str, float]]:
        """(content key, chromaprint, duration) of tracks on disk to look up at the catalog by
        fingerprint: never looked up, or not followed by the change feed and due by ``now``
        (and not asked since ``asked_before``: one sync asks about a track once). Chosen by an
        index range and one pass over the tracks' keys; only the chosen analyses are read."""
        rows = self._db.execute(
            "SELECT t.content_key, t.analysis FROM tracks t WHERE t.content_key IN "
            "(SELECT content_key FROM consensus WHERE next_lookup_at <= ? AND looked_up_at < ? UNION ALL "
            "SELECT content_key FROM tracks n WHERE NOT EXISTS (SELECT 1 FROM consensus c WHERE c.content_key = n.content_key)) "
            "AND json_extract(t.analysis, '$.fingerprint.chromaprint') IS NOT NULL "
            "AND EXISTS (SELECT 1 FROM files f WHERE f.content_key = t.content_key AND f.state = 'analyzed') LIMIT ?",
            (now, math.inf if asked_before is None else asked_before, limit))
        due = []
        for key, analysis in rows:
            fingerprint = decode_track(analysis).fingerprint
            if fingerprint.chromaprint:
                due.append((key, fingerprint.chromaprint, fingerprint.duration))
        return due

    def recording_tracks(self, recordings: list[int]) -> dict[int, list[str]]:
        """The tracks known as each of ``recordings`` (by the catalog's recording id)."""
        found: dict[int, list[str]] = {}
        for chunk in _chunks(recordings):
            for recording, key in self._db.execute(
                    f"SELECT recording_id, content_key FROM consensus WHERE recording_id IN ({_marks(chunk)})", chunk):
                found.setdefault(recording, []).append(key)
        return found

    def track_versions(self) -> list[tuple[str, str]]:
        """(content key, analyzer version) of every track on disk: what its observation id is
        derived from (the change feed names recordings by our observation ids)."""
        return self._db.execute(
            "SELECT content_key, analyzer_version FROM tracks t WHERE EXISTS "
            "(SELECT 1 FROM files f WHERE f.content_key = t.content_key AND f.state = 'analyzed')").fetchall()

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

    def tastes(self, content_keys: list[str] | None = None) -> dict[str, TrackTaste]:
        """What each track on disk (or each of ``content_keys`` that is on disk) adds to the
        profile: what its library row shows (``LibraryRow.taste``)."""
        query = f"SELECT content_key, {', '.join(TASTE_COLUMNS)} FROM library"
        if content_keys is None:
            rows = self._db.execute(query).fetchall()
        else:
            rows = []
            for chunk in _chunks(content_keys):
                rows += self._db.execute(f"{query} WHERE content_key IN ({_marks(chunk)})", chunk).fetchall()
        return {key: taste_of(*values) for key, *values in rows}

    # --- the library view: the DJ's questions ----------------------------------------------

    def _where(self, query: LibraryQuery) -> tuple[str, list[object]]:
        where: list[str] = ["1"]
        parameters: list[object] = []
        if query.bpm is not None:
            where.append("l.bpm BETWEEN ? AND ?")
            parameters += list(query.bpm)
        if query.camelots is not None:
            where.append(f"l.camelot IN ({_marks(query.camelots)})")
            parameters += list(query.camelots)
        for column, word in (("l.genres", query.genre), ("l.moods", query.mood)):
            if word:
                where.append(f"instr(',' || {column} || ',', ?) > 0")
                parameters.append(f",{word},")
        if query.tag:
            where.append("instr(',' || coalesce(l.genres, '') || ',' || coalesce(l.moods, '') || ',' "
                         "|| coalesce(l.sound_tags, '') || ',', ?) > 0")
            parameters.append(f",{query.tag},")
        if query.search:
            pattern = "%" + query.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(l.artist LIKE ? ESCAPE '\\' OR l.title LIKE ? ESCAPE '\\' OR l.album LIKE ? ESCAPE '\\' "
                         "OR l.content_key IN (SELECT f.content_key FROM files f WHERE f.state = 'analyzed' "
                         "AND CAST(f.path AS TEXT) LIKE ? ESCAPE '\\'))")  # one pass over the paths, not one per row
            parameters += [pattern] * 4
        return " AND ".join(where), parameters

    def library(self, query: LibraryQuery, *, limit: int | None = None, offset: int = 0) -> list[LibraryEntry]:
        """The entries ``query`` selects, in its order. A page is ordered by the library's own
        columns first, and only its rows then get their paths (a path per row of 100,000,
        before sorting, was most of a page's cost)."""
        where, parameters = self._where(query)
        sql = f"SELECT l.content_key FROM library l WHERE {where} ORDER BY {ORDERS[query.order]}"
        if limit is not None or offset:
            sql += " LIMIT ? OFFSET ?"
            parameters += [limit if limit is not None else -1, offset]
        keys = [key for (key,) in self._db.execute(sql, parameters)]
        found = self.entries(keys)
        return [found[key] for key in keys if key in found]

    def library_count(self, query: LibraryQuery) -> int:
        where, parameters = self._where(query)
        return self._db.execute(f"SELECT COUNT(*) FROM library l WHERE {where}", parameters).fetchone()[0]

    def entries(self, content_keys: list[str]) -> dict[str, LibraryEntry]:
        """The library entries of those of ``content_keys`` that are on disk."""
        found = {}
        for chunk in _chunks(content_keys):
            for row in self._db.execute(f"{_ENTRY} WHERE l.content_key IN ({_marks(chunk)})", chunk):
                entry = _entry(row)
                found[entry.content_key] = entry
        return found

    def key_of_file(self, path: str | bytes) -> str | None:
        """The content key of an analyzed file at ``path``."""
        row = self._db.execute("SELECT content_key FROM files WHERE path = ? AND state = 'analyzed'",
                               (os.fsencode(path),)).fetchone()
        return row[0] if row else None

    def files_of(self, content_key: str) -> list[tuple[str, int]]:
        """(path, size) of every file on disk with this content."""
        return [(display_path(path), size) for path, size in self._db.execute(
            "SELECT path, size FROM files WHERE content_key = ? AND state = 'analyzed' ORDER BY path", (content_key,))]

    def stored_files(self, content_key: str) -> list[tuple[bytes, FileIdentity]]:
        """The analyzed files with this content, as stored (raw path bytes) with their identity."""
        return [(path, FileIdentity(*identity)) for path, *identity in self._db.execute(
            "SELECT path, device, inode, size, mtime_ns FROM files WHERE content_key = ? AND state = 'analyzed' "
            "ORDER BY path", (content_key,))]

    def all_files(self) -> list[tuple[str, str, int]]:
        """(content key, path, size) of every analyzed file."""
        return [(key, display_path(path), size) for key, path, size in self._db.execute(
            "SELECT content_key, path, size FROM files WHERE state = 'analyzed' ORDER BY path")]

    def embeddings(self, content_keys: list[str]) -> dict[str, tuple[float, ...]]:
        found = {}
        for chunk in _chunks(content_keys):
            for key, blob in self._db.execute(
                    f"SELECT content_key, embedding FROM library WHERE embedding IS NOT NULL AND content_key IN "
                    f"({_marks(chunk)})", chunk):
                found[key] = unpack_embedding(blob)
        return found

    def sound_sketch(self, content_key: str) -> bytes | None:
        """The track's 128-bit sound sketch, or None before it has an embedding."""
        row = self._db.execute("SELECT sound_sketch FROM library WHERE content_key = ?", (content_key,)).fetchone()
        return row[0] if row else None

    def sketch_block(self) -> tuple[list[str], bytes]:
        """The row ids and the sound sketches, end to end, of every track on disk with an
        embedding: one row out of SQLite instead of 100,000 (their Python objects cost more than
        the scan)."""
        rowids, sketches = self._db.execute(
            "SELECT group_concat(rowid), group_concat(hex(sound_sketch), '') FROM library "
            "WHERE sound_sketch IS NOT NULL").fetchone()
        return (rowids.split(",") if rowids else []), bytes.fromhex(sketches or "")

    def content_keys(self, rowids: list[int]) -> dict[int, str]:
        """Row id -> content key, for the few rows a sketch search picked."""
        found: dict[int, str] = {}
        for chunk in _chunks(rowids):
            found.update(self._db.execute(f"SELECT rowid, content_key FROM library WHERE rowid IN ({_marks(chunk)})",
                                          chunk).fetchall())
        return found

    def mix_candidates(self, codes: list[str] | None, windows: list[tuple[float, float]]) -> list[tuple]:
        """(content key, bpm, camelot, artist, sketch bytes) of the tracks on disk in one of the
        Camelot ``codes`` (None: any key) whose tempo lies in one of the ``windows``."""
        where: list[str] = ["l.bpm IS NOT NULL"]
        parameters: list[object] = []
        if codes is not None:
            where.append(f"l.camelot IN ({_marks(codes)})")
            parameters += codes
        if windows:
            where.append("(" + " OR ".join("l.bpm BETWEEN ? AND ?" for _ in windows) + ")")
            parameters += [bound for window in windows for bound in window]
        return self._db.execute(f"SELECT l.content_key, l.bpm, l.camelot, l.artist, l.sound_sketch FROM library l "
                                f"WHERE {' AND '.join(where)}", parameters).fetchall()

    def fingerprint_sketches(self) -> list[tuple[str, bytes, float]]:
        return self._db.execute(
            "SELECT l.content_key, l.fingerprint_sketch, l.fingerprint_duration FROM library l "
            "WHERE l.fingerprint_sketch IS NOT NULL").fetchall()

    def chromaprint(self, content_key: str) -> str | None:
        track = self.track(content_key)
        return track.fingerprint.chromaprint if track else None

    def overview(self) -> dict:
        """Histograms of the library (it holds exactly the tracks on disk)."""
        db = self._db
        tempo = dict(db.execute("SELECT CAST(bpm / 2 AS INTEGER) * 2, COUNT(*) FROM library WHERE bpm IS NOT NULL "
                                "GROUP BY 1"))
        keys = dict(db.execute("SELECT camelot, COUNT(*) FROM library WHERE camelot IS NOT NULL GROUP BY 1"))
        # floor() without SQLite's optional math functions: shifted past zero, truncated, shifted back
        loudness = dict(db.execute("SELECT CAST(loudness + 1000 AS INTEGER) - 1000, COUNT(*) FROM library "
                                   "WHERE loudness IS NOT NULL GROUP BY 1"))
        total = db.execute("SELECT COUNT(*) FROM library").fetchone()[0]
        words: dict[str, Counter[str]] = {"genres": Counter(), "moods": Counter()}
        for genres, moods in db.execute("SELECT genres, moods FROM library WHERE genres IS NOT NULL OR moods IS NOT NULL"):
            words["genres"].update((genres or "").split(",") if genres else ())
            words["moods"].update((moods or "").split(",") if moods else ())
        return {"tracks": total, "tempo": {"bin": 2, "counts": {str(k): v for k, v in sorted(tempo.items())}},
                "keys": keys, "loudness": {"bin": 1, "counts": {str(k): v for k, v in sorted(loudness.items())}},
                # how many tracks say each word of the sound model's (any of their words), most first
                **{kind: dict(counter.most_common()) for kind, counter in words.items()}}

    # --- the outbox and settings -------------------------------------------------------------

    def pending(self, limit: int) -> list[tuple[int, str, dict]]:
        """The oldest observations due for sending: (seq, observation id, payload)."""
        rows = self._db.execute(
            "SELECT seq, observation_id, payload FROM outbox WHERE state = 'pending' "
            "AND next_attempt_at <= ? ORDER BY seq LIMIT ?",
            (time.time(), limit),
        ).fetchall()
        return [(seq, observation_id, msgspec.json.decode(payload)) for seq, observation_id, payload in rows]

    def parked(self, limit: int = 100) -> list[tuple[str, str]]:
        """(observation id, why the catalog refused it), newest first."""
        return self._db.execute(
            "SELECT observation_id, reason FROM outbox WHERE state = 'parked' ORDER BY seq DESC LIMIT ?", (limit,)
        ).fetchall()

    def setting(self, key: str, default=None):
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return msgspec.json.decode(row[0]) if row else default

    def export(self) -> dict:
        """Everything the journal holds, paths included, for the user's own export (the
        credentials live in the identity file, not here)."""
        files = [
            {"path": display_path(path), "device": d, "inode": i, "size": s, "mtime_ns": m, "content_key": k,
             "state": state, "error_kind": kind, "error": error}
            for path, d, i, s, m, k, state, kind, error in self._db.execute(
                "SELECT path, device, inode, size, mtime_ns, content_key, state, error_kind, error FROM files ORDER BY path")
        ]
        consensus = {key: msgspec.json.decode(recording) for key, recording in self._db.execute(
            "SELECT content_key, recording FROM consensus")}
        tracks = [{"content_key": k, "analyzer_version": v, "analyzed_at": at, "analysis": msgspec.json.decode(a),
                   "catalog_consensus": consensus.get(k)}  # the catalog's view beside our own, per track
                  for k, a, v, at in self._db.execute("SELECT content_key, analysis, analyzer_version, analyzed_at FROM tracks")]
        outbox = [{"observation_id": o, "state": state, "reason": reason, "payload": msgspec.json.decode(payload)}
                  for o, state, reason, payload in self._db.execute(
                      "SELECT observation_id, state, reason, payload FROM outbox ORDER BY seq")]
        settings = {key: msgspec.json.decode(value) for key, value in self._db.execute("SELECT key, value FROM settings")}
        return {"files": files, "tracks": tracks, "outbox": outbox, "settings": settings}


def _entry(row: tuple) -> LibraryEntry:
    values = dict(zip(COLUMNS, row))
    path, copies, added_at = row[len(COLUMNS):]
    return LibraryEntry(**values, path=display_path(path) if path else "", copies=copies, added_at=added_at)
