"""The DJ's collection: the tracks on disk, as the journal's library view knows them.

Read-only: it opens the journal for reading only, so it works with the agent stopped, never
migrates a journal under a running agent, and can never change it. One ``Track`` per recording
on disk (per content key; ``copies`` counts the files that hold it), with the catalog's
consensus filling what the file's own tags and our analysis left empty (``filled`` names those
fields, so every view can mark them).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from cratesense.analysis.constants import BPM_LIMITS
from cratesense.analysis.keys import Key, parse_key
from cratesense.daemon.journal import Journal, display_path
from cratesense.daemon.trackview import unpack_embedding
from cratesense.dj.harmony import compatible_codes, parse_user_key
from cratesense.errors import QueryError

SORTS = ("bpm", "key", "loudness", "added", "artist", "title", "duration")

_FIELDS = ("content_key", "artist", "title", "album", "isrc", "catalog_number", "filled", "duration", "bpm", "key",
           "camelot", "loudness", "replaygain", "true_peak", "beat_offset", "downbeat_offset", "beats_per_bar",
           "codec", "sample_rate", "channels")
# The library view holds exactly the tracks on disk: no query needs to look at the files for that.
_SELECT = (
    "SELECT " + ", ".join(f"l.{name}" for name in _FIELDS)
    + ", (SELECT MIN(path) FROM files f WHERE f.content_key = l.content_key AND f.state = 'analyzed')"
    + ", (SELECT COUNT(*) FROM files f WHERE f.content_key = l.content_key AND f.state = 'analyzed')"
    + ", l.added_at FROM library l"
)
_ORDER = {
    "bpm": "l.bpm IS NULL, l.bpm, l.artist, l.title",
    "key": "l.camelot IS NULL, CAST(substr(l.camelot, 1, length(l.camelot) - 1) AS INTEGER), "
           "substr(l.camelot, -1), l.bpm",
    "loudness": "l.loudness IS NULL, l.loudness DESC",
    "added": "l.added_at DESC",
    "artist": "l.artist IS NULL, l.artist COLLATE NOCASE, l.title COLLATE NOCASE",
    "title": "l.title IS NULL, l.title COLLATE NOCASE",
    "duration": "l.duration",
}


@dataclass(frozen=True)
class Track:
    content_key: str
    path: str  # one file that holds it (the first by path); ``copies`` says how many do
    copies: int
    artist: str | None
    title: str | None
    album: str | None
    isrc: str | None
    catalog_number: str | None
    duration: float | None
    bpm: float | None
    key: Key | None
    loudness: float | None
    replaygain: float | None
    true_peak: float | None
    beat_offset: float | None
    downbeat_offset: float | None
    beats_per_bar: int | None
    codec: str | None
    sample_rate: int | None
    channels: int | None
    added_at: float | None
    filled: frozenset[str] = field(default_factory=frozenset)  # fields the catalog's consensus filled

    @property
    def label(self) -> str:
        """"Artist - Title", or the file's name when the tags do not say."""
        if self.artist and self.title:
            return f"{self.artist} - {self.title}"
        return self.title or Path(self.path).stem

    @property
    def camelot(self) -> str | None:
        return self.key.camelot if self.key else None


@dataclass(frozen=True)
class Filters:
    bpm: tuple[float, float] | None = None
    key: Key | None = None
    compatible_with: Key | None = None
    search: str | None = None
    sort: str = "artist"
    limit: int | None = None


def parse_bpm_range(text: str) -> tuple[float, float]:
    """"120-128" (or one tempo, "124", for 123.5-124.5); ValueError with the reason otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:-\s*(\d+(?:\.\d+)?)\s*)?", text or "")
    if not match:
        raise ValueError(f"expected a BPM range such as 120-128, got {text!r}")
    low = float(match.group(1))
    high = float(match.group(2)) if match.group(2) else low
    if match.group(2) is None:
        low, high = low - 0.5, high + 0.5
    if low > high:
        raise ValueError(f"the BPM range {text!r} runs backwards (write the lower tempo first: "
                         f"{match.group(2)}-{match.group(1)})")
    if not (BPM_LIMITS[0] - 0.5 <= low and high <= BPM_LIMITS[1] + 0.5):
        raise ValueError(f"the BPM range {text!r} is outside {BPM_LIMITS[0]:g}-{BPM_LIMITS[1]:g}")
    return low, high


def parse_filters(values: dict) -> Filters:
    """Filters from strings (CLI flags, query parameters); QueryError names the bad one."""
    try:
        bpm = parse_bpm_range(values["bpm"]) if values.get("bpm") else None
        key = parse_user_key(values["key"]) if values.get("key") else None
        compatible = parse_user_key(values["compatible_with"]) if values.get("compatible_with") else None
        sort = values.get("sort") or "artist"
        if sort not in SORTS:
            raise ValueError(f"cannot sort by {sort!r}; choose one of {', '.join(SORTS)}")
        limit = values.get("limit")
        limit = int(limit) if limit not in (None, "") else None
        if limit is not None and limit < 1:
            raise ValueError("the limit must be a positive number")
    except ValueError as exc:
        raise QueryError(str(exc)) from None
    search = (values.get("search") or "").strip() or None
    return Filters(bpm, key, compatible, search, sort, limit)


class Collection:
    """The collection in the journal at ``path``; use as a context manager."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._db = journal._db

    @classmethod
    def open(cls, path: Path) -> Collection:
        return cls(Journal(path, read_only=True))

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc_info) -> None:
        self._journal.close()

    # --- finding tracks -----------------------------------------------------------------

    def tracks(self, filters: Filters = Filters(), *, offset: int = 0) -> list[Track]:
        """The tracks ``filters`` select, in their order. A page is ordered by the library's own
        columns first, and only its rows then get their paths (a path per row of 100,000,
        before sorting, was most of a page's cost)."""
        where, parameters = self._where(filters)
        query = f"SELECT l.content_key FROM library l WHERE {' AND '.join(where)} ORDER BY {_ORDER[filters.sort]}"
        if filters.limit is not None or offset:
            query += " LIMIT ? OFFSET ?"
            parameters += [filters.limit if filters.limit is not None else -1, offset]
        keys = [key for (key,) in self._db.execute(query, parameters)]
        rows = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows.update((row[0], row) for row in self._db.execute(
                f"{_SELECT} WHERE l.content_key IN ({', '.join('?' * len(chunk))})", chunk))
        return [_track(rows[key]) for key in keys if key in rows]

    def count(self, filters: Filters = Filters()) -> int:
        where, parameters = self._where(filters)
        return self._db.execute(f"SELECT COUNT(*) FROM library l WHERE {' AND '.join(where)}", parameters).fetchone()[0]

    @staticmethod
    def _where(filters: Filters) -> tuple[list[str], list]:
        where, parameters = ["1"], []
        if filters.bpm is not None:
            where.append("l.bpm BETWEEN ? AND ?")
            parameters += list(filters.bpm)
        if filters.key is not None:
            where.append("l.camelot = ?")
            parameters.append(filters.key.camelot)
        if filters.compatible_with is not None:
            codes = compatible_codes(filters.compatible_with.camelot)
            where.append(f"l.camelot IN ({', '.join('?' * len(codes))})")
            parameters += codes
        if filters.search:
            pattern = "%" + filters.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(l.artist LIKE ? ESCAPE '\\' OR l.title LIKE ? ESCAPE '\\' OR l.album LIKE ? ESCAPE '\\' "
                         "OR l.content_key IN (SELECT f.content_key FROM files f WHERE f.state = 'analyzed' "
                         "AND CAST(f.path AS TEXT) LIKE ? ESCAPE '\\'))")  # one pass over the paths, not one per row
            parameters += [pattern] * 4
        return where, parameters

    def track(self, content_key: str) -> Track | None:
        row = self._db.execute(f"{_SELECT} WHERE l.content_key = ?", (content_key,)).fetchone()
        return _track(row) if row else None

    def find(self, spec: str) -> Track:
        """The one track ``spec`` names: a file's path, or a text that matches one track (its
        artist, title, album or file name). QueryError when it names none or several."""
        if os.path.exists(spec) or os.path.isabs(spec):
            row = self._db.execute("SELECT content_key FROM files WHERE path = ? AND state = 'analyzed'",
                                   (os.fsencode(os.path.abspath(spec)),)).fetchone()
            if row is None:
                raise QueryError(f"{spec} is not an analyzed track of the library (is it in a music folder?)")
            return self.track(row[0])
        found = self.tracks(Filters(search=spec, limit=6))
        if not found:
            raise QueryError(f"no track matches {spec!r}")
        exact = [track for track in found if spec.lower() in (track.label.lower(), (track.title or "").lower())]
        if len(found) == 1 or len(exact) == 1:
            return (exact or found)[0]
        names = "; ".join(track.label for track in found[:5])
        raise QueryError(f"{spec!r} matches {'more than 5' if len(found) > 5 else len(found)} tracks ({names}): "
                         "say more, or give the file's path")

    def files(self, content_key: str) -> list[tuple[str, int]]:
        """(path, size) of every file on disk with this content."""
        return [(display_path(path), size) for path, size in self._db.execute(
            "SELECT path, size FROM files WHERE content_key = ? AND state = 'analyzed' ORDER BY path", (content_key,))]

    # --- what the mixing code reads -------------------------------------------------------

    def embeddings(self, content_keys: list[str]) -> dict[str, tuple[float, ...]]:
        found = {}
        for start in range(0, len(content_keys), 500):
            chunk = content_keys[start : start + 500]
            for key, blob in self._db.execute(
                    f"SELECT content_key, embedding FROM library WHERE embedding IS NOT NULL AND content_key IN "
                    f"({', '.join('?' * len(chunk))})", chunk):
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
        found = {}
        for start in range(0, len(rowids), 500):
            chunk = rowids[start : start + 500]
            found.update(self._db.execute(f"SELECT rowid, content_key FROM library WHERE rowid IN "
                                          f"({', '.join('?' * len(chunk))})", chunk).fetchall())
        return found

    def mix_candidates(self, codes: list[str] | None, windows: list[tuple[float, float]]) -> list[tuple]:
        """(content key, bpm, camelot, artist, sketch bytes) of the tracks on disk in one of the Camelot
        ``codes`` (None: any key) whose tempo lies in one of the ``windows``."""
        where, parameters = ["l.bpm IS NOT NULL"], []
        if codes is not None:
            where.append(f"l.camelot IN ({', '.join('?' * len(codes))})")
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
        row = self._db.execute("SELECT json_extract(analysis, '$.fingerprint.chromaprint') FROM tracks "
                               "WHERE content_key = ?", (content_key,)).fetchone()
        return row[0] if row else None

    def all_files(self) -> list[tuple[str, str, int]]:
        """(content key, path, size) of every analyzed file."""
        return [(key, display_path(path), size) for key, path, size in self._db.execute(
            "SELECT content_key, path, size FROM files WHERE state = 'analyzed' ORDER BY path")]


def _track(row) -> Track:
    values = dict(zip(_FIELDS, row))
    path, copies, added_at = row[len(_FIELDS):]
    key = parse_key(values["key"]) if values["key"] else None
    return Track(
        content_key=values["content_key"], path=display_path(path) if path else "", copies=copies,
        artist=values["artist"], title=values["title"], album=values["album"], isrc=values["isrc"],
        catalog_number=values["catalog_number"], duration=values["duration"], bpm=values["bpm"], key=key,
        loudness=values["loudness"], replaygain=values["replaygain"], true_peak=values["true_peak"],
        beat_offset=values["beat_offset"], downbeat_offset=values["downbeat_offset"],
        beats_per_bar=values["beats_per_bar"], codec=values["codec"], sample_rate=values["sample_rate"],
        channels=values["channels"], added_at=added_at,
        filled=frozenset((values["filled"] or "").split(",")) - {""},
    )
