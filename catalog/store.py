"""The catalog's database: SQLite (WAL), one writer, migrations recorded.

No column can hold a path, a file name or audio: text columns are the contract's bounded
metadata fields and ids, each with a length CHECK; the only BLOBs are raw fingerprint items,
embeddings and profile vectors, each with a size CHECK (tests/test_catalog_store.py reads the
schema and proves it). Contributors are pseudonymous: a random id and the SHA-256 of a bearer
token; nothing links them to a person.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import statistics
import struct
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from cratesense import sqlite
from cratesense.catalog import matching
from cratesense.catalog.contract import EMBEDDING_LENGTH, Observation, Profile, fingerprint_items

_TEXT = {"artist": 256, "title": 256, "album": 256, "isrc": 12, "catalog_number": 64, "key": 8, "camelot": 3}
_METADATA_COLUMNS = ", ".join(f"{name} TEXT CHECK (length({name}) <= {limit})" for name, limit in _TEXT.items())
PROFILE_LENGTH = 24 + 24 + 12 + EMBEDDING_LENGTH
# what an observation carries, as typed, length-checked columns (observations and arrivals)
_OBSERVED_COLUMNS = f"""
        fingerprint_duration REAL NOT NULL,
        {_METADATA_COLUMNS},
        duration REAL,
        bpm REAL,
        loudness_lufs REAL,
        embedding BLOB CHECK (embedding IS NULL OR length(embedding) = {4 * EMBEDDING_LENGTH}),
        analyzer_version TEXT NOT NULL CHECK (length(analyzer_version) <= 64),
        received_at REAL NOT NULL"""

_MIGRATIONS = (
    f"""
    CREATE TABLE contributors (
        id TEXT PRIMARY KEY CHECK (length(id) = 32),
        token_hash BLOB NOT NULL UNIQUE CHECK (length(token_hash) = 32),
        contribute INTEGER NOT NULL DEFAULT 1 CHECK (contribute IN (0, 1)),
        created_at REAL NOT NULL,
        deleted_at REAL,
        deleted_count INTEGER
    );
    CREATE TABLE recordings (
        id INTEGER PRIMARY KEY,
        {_METADATA_COLUMNS},
        duration REAL,
        bpm REAL,
        loudness_lufs REAL,
        contributors INTEGER NOT NULL DEFAULT 0,
        updated_at REAL NOT NULL
    );
    CREATE TABLE fingerprints (
        id INTEGER PRIMARY KEY,
        recording INTEGER NOT NULL REFERENCES recordings (id),
        items BLOB NOT NULL CHECK (length(items) <= 4000 AND length(items) % 4 = 0),
        terms BLOB NOT NULL CHECK (length(terms) <= {4 * matching.TERMS} AND length(terms) % 4 = 0),
        duration REAL NOT NULL
    );
    CREATE INDEX fingerprints_recording ON fingerprints (recording);
    CREATE TABLE fingerprint_terms (
        term INTEGER NOT NULL,
        fingerprint INTEGER NOT NULL,
        PRIMARY KEY (term, fingerprint)
    ) WITHOUT ROWID;
    CREATE TABLE observations (
        id TEXT PRIMARY KEY CHECK (length(id) = 32),
        contributor TEXT NOT NULL REFERENCES contributors (id) CHECK (length(contributor) = 32),
        recording INTEGER NOT NULL REFERENCES recordings (id),
        fingerprint INTEGER NOT NULL REFERENCES fingerprints (id),{_OBSERVED_COLUMNS}
    );
    CREATE INDEX observations_contributor ON observations (contributor);
    CREATE INDEX observations_recording ON observations (recording);
    CREATE INDEX observations_fingerprint ON observations (fingerprint);
    CREATE TABLE profiles (
        contributor TEXT PRIMARY KEY REFERENCES contributors (id) CHECK (length(contributor) = 32),
        track_count INTEGER NOT NULL,
        vector BLOB NOT NULL CHECK (length(vector) = {4 * PROFILE_LENGTH}),
        updated_at REAL NOT NULL
    );
    """,
    # 2: observations accepted but not yet matched (under load, matching runs after the answer;
    # same typed, length-checked columns as observations, the fingerprint as raw items)
    f"""
    CREATE TABLE arrivals (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE CHECK (length(id) = 32),
        contributor TEXT NOT NULL REFERENCES contributors (id) CHECK (length(contributor) = 32),
        items BLOB NOT NULL CHECK (length(items) <= 4000 AND length(items) % 4 = 0),{_OBSERVED_COLUMNS}
    );
    CREATE INDEX arrivals_contributor ON arrivals (contributor);
    """,
)
# the columns an arrival carries over into its observation, in this order
_CARRIED = ("id, contributor, fingerprint_duration, artist, title, album, isrc, catalog_number, key, camelot, "
            "duration, bpm, loudness_lufs, embedding, analyzer_version, received_at")


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Store:
    """The catalog database at ``path``; every method is one transaction."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread off: the store is used from the event loop's thread only, but that
        # may not be the thread that opened it (the agent's embedded catalog)
        # durable: an acknowledged observation is never sent again, so it must outlive a power cut
        self._db = sqlite.connect(self.path, timeout=10, check_same_thread=False, durable=True)
        sqlite.migrate(self._db, _MIGRATIONS)

    def close(self) -> None:
        self._db.close()

    def _transaction(self):
        return sqlite.transaction(self._db)

    # --- contributors --------------------------------------------------------------------

    def register(self) -> tuple[str, str]:
        """A new pseudonymous contributor: (id, bearer token). Only the token's hash is kept."""
        contributor, token = secrets.token_hex(16), secrets.token_urlsafe(32)
        with self._transaction() as db:
            db.execute(
                "INSERT INTO contributors (id, token_hash, created_at) VALUES (?, ?, ?)",
                (contributor, token_hash(token), time.time()),
            )
        return contributor, token

    def authenticate(self, token: str) -> tuple[str, bool] | None:
        """(contributor id, contribute) for a bearer token, or None. Looked up by the token's
        SHA-256, so response time says nothing about how close a guess was."""
        row = self._db.execute(
            "SELECT id, contribute FROM contributors WHERE token_hash = ?", (token_hash(token),)
        ).fetchone()
        return (row[0], bool(row[1])) if row else None

    def set_contribute(self, contributor: str, contribute: bool) -> None:
        with self._transaction() as db:
            db.execute("UPDATE contributors SET contribute = ? WHERE id = ?", (int(contribute), contributor))

    # --- observations --------------------------------------------------------------------

    def ingest(self, contributor: str, observations: Iterable[Observation]) -> list[dict]:
        """Store and match a batch at once (``accept`` then ``settle`` until nothing waits)."""
        results = self.accept(contributor, observations)
        while self.settle():
            pass
        return results

    def accept(self, contributor: str, observations: Iterable[Observation]) -> list[dict]:
        """Take a batch in durably, unmatched: per item ``accepted``, ``duplicate`` (same id
        again: idempotent) or ``rejected`` with a reason. Cheap: matching is ``settle``'s."""
        results = []
        now = time.time()
        with self._transaction() as db:
            for o in observations:
                owner = db.execute(
                    "SELECT contributor FROM observations WHERE id = ? UNION ALL "
                    "SELECT contributor FROM arrivals WHERE id = ?", (o.id, o.id)).fetchone()
                if owner is not None:
                    if owner[0] == contributor:
                        results.append({"id": o.id, "status": "duplicate"})
                    else:
                        results.append({"id": o.id, "status": "rejected", "reason": "id: already used by another contributor"})
                    continue
                items = fingerprint_items("fingerprint.chromaprint", o.fingerprint.chromaprint)
                m, a = o.metadata, o.analysis
                embedding = struct.pack(f"<{EMBEDDING_LENGTH}f", *a.embedding) if a.embedding else None
                db.execute(
                    f"INSERT INTO arrivals (items, {_CARRIED}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (matching.pack(items), o.id, contributor, o.fingerprint.duration, m.artist, m.title, m.album,
                     m.isrc, m.catalog_number, a.key, a.camelot, m.duration, a.bpm, a.loudness_lufs, embedding,
                     a.analyzer_version, now),
                )
                results.append({"id": o.id, "status": "accepted"})
        return results

    def settle(self, limit: int = 20) -> int:
        """Match up to ``limit`` waiting arrivals (oldest first) into observations and re-derive
        the consensus of every recording they touch; returns how many were settled."""
        now = time.time()
        with self._transaction() as db:
            rows = db.execute(
                "SELECT seq, items, fingerprint_duration, isrc FROM arrivals ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
            touched = set()
            for seq, packed, duration, isrc in rows:
                recording, fingerprint = self._place(db, matching.unpack(packed), duration, isrc, now)
                db.execute(
                    f"INSERT INTO observations (recording, fingerprint, {_CARRIED}) "
                    f"SELECT ?, ?, {_CARRIED} FROM arrivals WHERE seq = ?", (recording, fingerprint, seq))
                db.execute("DELETE FROM arrivals WHERE seq = ?", (seq,))
                touched.add(recording)
            for recording in touched:
                self._derive(db, recording, now)
        return len(rows)

    def waiting(self) -> int:
        """Arrivals not matched yet."""
        return self._db.execute("SELECT COUNT(*) FROM arrivals").fetchone()[0]

    def _candidates(self, db, items: list[int], duration: float) -> list[tuple[float, int, int]]:
        """(score, fingerprint id, recording id) of stored fingerprints like ``items``, best first."""
        terms = matching.index_terms(items)
        if not terms:
            return []
        rows = db.execute(
            f"SELECT fingerprint, COUNT(*) AS shared FROM fingerprint_terms WHERE term IN ({','.join('?' * len(terms))}) "
            "GROUP BY fingerprint HAVING shared >= ? ORDER BY shared DESC LIMIT 10",
            (*terms, matching.minimum_shared_terms(terms)),
        ).fetchall()
        if not rows:
            return []
        best_shared = rows[0][1]
        scored = []
        for fingerprint, shared in rows:
            if shared < best_shared / 2:  # only those near the best
                break
            stored = db.execute("SELECT recording, items, duration FROM fingerprints WHERE id = ?", (fingerprint,)).fetchone()
            if stored and abs(stored[2] - duration) <= matching.DURATION_TOLERANCE:
                scored.append((matching.score(items, matching.unpack(stored[1])), fingerprint, stored[0]))
                if scored[-1][0] >= matching.SAME_FINGERPRINT:
                    break  # the same fingerprint: nothing can do better (scores cost ~1 ms each)
        return sorted(scored, reverse=True)

    def _place(self, db, items: list[int], duration: float, isrc: str | None, now: float) -> tuple[int, int]:
        """The recording and fingerprint an observation belongs to, created when new."""
        candidates = self._candidates(db, items, duration)
        if candidates:
            best_score, fingerprint, recording = candidates[0]
            if best_score >= matching.SAME_FINGERPRINT:
                return recording, fingerprint
            for candidate_score, _, candidate_recording in candidates:
                same_isrc = isrc is not None and db.execute(
                    "SELECT 1 FROM recordings WHERE id = ? AND isrc = ?", (candidate_recording, isrc)
                ).fetchone()
                threshold = matching.SAME_RECORDING_WITH_ISRC if same_isrc else matching.SAME_RECORDING
                if candidate_score >= threshold:
                    return candidate_recording, self._new_fingerprint(db, candidate_recording, items, duration)
        recording = db.execute("INSERT INTO recordings (updated_at) VALUES (?)", (now,)).lastrowid
        return recording, self._new_fingerprint(db, recording, items, duration)

    @staticmethod
    def _new_fingerprint(db, recording: int, items: list[int], duration: float) -> int:
        terms = matching.index_terms(items)
        fingerprint = db.execute(
            "INSERT INTO fingerprints (recording, items, terms, duration) VALUES (?, ?, ?, ?)",
            (recording, matching.pack(items), matching.pack(terms), duration),
        ).lastrowid
        db.executemany("INSERT OR IGNORE INTO fingerprint_terms VALUES (?, ?)", [(term, fingerprint) for term in terms])
        return fingerprint

    def _derive(self, db, recording: int, now: float) -> None:
        """The consensus of a recording from its observations, votes counted per contributor."""
        rows = db.execute(
            "SELECT contributor, artist, title, album, isrc, catalog_number, key, camelot, "
            "COALESCE(duration, fingerprint_duration), bpm, loudness_lufs FROM observations WHERE recording = ?",
            (recording,),
        ).fetchall()
        if not rows:
            self._drop_recording(db, recording)
            return
        consensus = consensus_of(rows)
        db.execute(
            "UPDATE recordings SET artist = ?, title = ?, album = ?, isrc = ?, catalog_number = ?, key = ?, "
            "camelot = ?, duration = ?, bpm = ?, loudness_lufs = ?, contributors = ?, updated_at = ? WHERE id = ?",
            (*(consensus[name] for name in CONSENSUS_FIELDS), consensus["contributors"], now, recording),
        )

    @classmethod
    def _drop_recording(cls, db, recording: int) -> None:
        fingerprints = [row[0] for row in db.execute("SELECT id FROM fingerprints WHERE recording = ?", (recording,))]
        cls._drop_fingerprints(db, fingerprints)
        db.execute("DELETE FROM recordings WHERE id = ?", (recording,))

    @staticmethod
    def _drop_fingerprints(db, fingerprints: list[int]) -> None:
        """Fingerprints and their index terms. The index is keyed by term, so each fingerprint
        keeps its own term list, and the terms are deleted in term order (neighbouring B-tree
        pages; sorting packed integers is the cheap way to get there)."""
        if not fingerprints:
            return
        packed = []
        for fingerprint in fingerprints:
            row = db.execute("SELECT terms FROM fingerprints WHERE id = ?", (fingerprint,)).fetchone()
            if row:
                packed.extend((term << 40) | fingerprint for term in matching.unpack(row[0]))
        packed.sort()
        db.executemany("DELETE FROM fingerprint_terms WHERE term = ? AND fingerprint = ?",
                       ((value >> 40, value & 0xFF_FFFF_FFFF) for value in packed))
        db.executemany("DELETE FROM fingerprints WHERE id = ?", [(f,) for f in fingerprints])

    # --- look-up, deletion, export --------------------------------------------------------

    def lookup(self, fingerprints: list[tuple[list[int], float]]) -> list[dict | None]:
        results = []
        for items, duration in fingerprints:
            candidates = self._candidates(self._db, items, duration)
            if candidates and candidates[0][0] >= matching.LOOKUP_HIT:
                score, _, recording = candidates[0]
                results.append({"score": round(score, 3), **self.recording(recording)})
            else:
                results.append(None)
        return results

    def recording(self, recording: int) -> dict:
        row = self._db.execute(
            f"SELECT id, {', '.join(CONSENSUS_FIELDS)}, contributors FROM recordings WHERE id = ?", (recording,)
        ).fetchone()
        values = dict(zip(("id", *CONSENSUS_FIELDS, "contributors"), row))
        return {
            "recording": values["id"],
            "contributors": values["contributors"],
            "metadata": {name: values[name] for name in ("artist", "title", "album", "isrc", "catalog_number", "duration")},
            "analysis": {name: values[name] for name in ("bpm", "key", "camelot", "loudness_lufs")},
        }

    def delete_contributor_observations(self, contributor: str) -> int:
        """Erase every observation of ``contributor``, drop what no one else holds, re-derive
        the rest, remember when and how many. Idempotent: a second call erases 0."""
        now = time.time()
        with self._transaction() as db:
            recordings = [row[0] for row in db.execute(
                "SELECT DISTINCT recording FROM observations WHERE contributor = ?", (contributor,))]
            fingerprints = [row[0] for row in db.execute(
                "SELECT DISTINCT fingerprint FROM observations WHERE contributor = ?", (contributor,))]
            count = db.execute("DELETE FROM observations WHERE contributor = ?", (contributor,)).rowcount
            count += db.execute("DELETE FROM arrivals WHERE contributor = ?", (contributor,)).rowcount
            unused = [f for f in fingerprints
                      if db.execute("SELECT 1 FROM observations WHERE fingerprint = ? LIMIT 1", (f,)).fetchone() is None]
            self._drop_fingerprints(db, unused)
            for recording in recordings:
                self._derive(db, recording, now)
            db.execute(
                "UPDATE contributors SET deleted_at = ?, deleted_count = COALESCE(deleted_count, 0) + ? WHERE id = ?",
                (now, count, contributor),
            )
        return count

    def export(self, contributor: str) -> dict:
        import chromaprint

        row = self._db.execute(
            "SELECT id, contribute, created_at, deleted_at, deleted_count FROM contributors WHERE id = ?", (contributor,)
        ).fetchone()
        observations = []
        fields = ("{t}.id, {recording}, items, {t}.fingerprint_duration, artist, title, album, isrc, catalog_number, "
                  "{t}.duration, bpm, key, camelot, loudness_lufs, embedding, analyzer_version, received_at")
        matched = self._db.execute(
            f"SELECT {fields.format(t='o', recording='o.recording')} FROM observations o JOIN fingerprints f "
            "ON f.id = o.fingerprint WHERE o.contributor = ?", (contributor,)).fetchall()
        waiting = self._db.execute(  # accepted, not matched yet: no recording
            f"SELECT {fields.format(t='arrivals', recording='NULL')} FROM arrivals WHERE contributor = ?",
            (contributor,)).fetchall()
        for o in sorted(matched + waiting, key=lambda row: (row[16], row[0])):
            observations.append({
                "id": o[0],
                "recording": o[1],
                "fingerprint": {"chromaprint": chromaprint.encode_fingerprint(matching.unpack(o[2]), 1).decode(),
                                "duration": o[3]},
                "metadata": dict(zip(("artist", "title", "album", "isrc", "catalog_number", "duration"), o[4:10])),
                "analysis": {"bpm": o[10], "key": o[11], "camelot": o[12], "loudness_lufs": o[13],
                             "embedding": list(struct.unpack(f"<{EMBEDDING_LENGTH}f", o[14])) if o[14] else None,
                             "analyzer_version": o[15]},
                "received_at": o[16],
            })
        profile = self._db.execute(
            "SELECT track_count, vector, updated_at FROM profiles WHERE contributor = ?", (contributor,)
        ).fetchone()
        return {
            "contributor": dict(zip(("id", "contribute", "created_at", "deleted_at", "deleted_count"), row))
            | {"contribute": bool(row[1])},
            "observations": observations,
            "profile": _profile_dict(profile) if profile else None,
        }

    # --- profiles and recommendations -----------------------------------------------------

    def put_profile(self, contributor: str, profile: Profile) -> None:
        vector = profile_vector(profile)
        with self._transaction() as db:
            db.execute(
                "INSERT INTO profiles VALUES (?, ?, ?, ?) ON CONFLICT (contributor) DO UPDATE SET "
                "track_count = excluded.track_count, vector = excluded.vector, updated_at = excluded.updated_at",
                (contributor, profile.track_count, struct.pack(f"<{PROFILE_LENGTH}f", *vector), time.time()),
            )

    def recommendations(self, contributor: str, limit: int = 20, neighbours: int = 10) -> list[dict]:
        """Recordings held by the contributors with the nearest profiles (cosine), which the
        requester does not hold."""
        mine = self._db.execute("SELECT vector FROM profiles WHERE contributor = ?", (contributor,)).fetchone()
        if mine is None:
            return []
        me = struct.unpack(f"<{PROFILE_LENGTH}f", mine[0])
        nearest = []
        for other, vector in self._db.execute("SELECT contributor, vector FROM profiles WHERE contributor != ?", (contributor,)):
            similarity = _cosine(me, struct.unpack(f"<{PROFILE_LENGTH}f", vector))
            if similarity > 0:
                nearest.append((similarity, other))
        nearest = sorted(nearest, reverse=True)[:neighbours]
        held = {row[0] for row in self._db.execute("SELECT DISTINCT recording FROM observations WHERE contributor = ?", (contributor,))}
        weights: dict[int, float] = defaultdict(float)
        for similarity, other in nearest:
            for (recording,) in self._db.execute("SELECT DISTINCT recording FROM observations WHERE contributor = ?", (other,)):
                if recording not in held:
                    weights[recording] += similarity
        ranked = sorted(weights.items(), key=lambda item: (-item[1], item[0]))[:limit]
        return [{"weight": round(weight, 4), **self.recording(recording)} for recording, weight in ranked]

    def counts(self) -> dict[str, int]:
        return {table: self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("contributors", "recordings", "fingerprints", "observations", "profiles", "arrivals")}


CONSENSUS_FIELDS = ("artist", "title", "album", "isrc", "catalog_number", "key", "camelot", "duration", "bpm", "loudness_lufs")


def consensus_of(rows: list[tuple]) -> dict:
    """Pure: rows of (contributor, artist, title, album, isrc, catalog_number, key, camelot,
    duration, bpm, loudness) -> the consensus. Text fields: the value most contributors agree on
    (ties: the smallest value); numbers: the median of each contributor's median, BPM after
    folding octave errors onto the others; camelot follows the chosen key."""
    by_contributor: dict[str, list[tuple]] = defaultdict(list)
    for row in rows:
        by_contributor[row[0]].append(row)
    result: dict = {"contributors": len(by_contributor)}
    for index, name in enumerate(("artist", "title", "album", "isrc", "catalog_number", "key"), start=1):
        result[name] = _vote({(contributor, row[index]) for contributor, group in by_contributor.items()
                              for row in group if row[index] is not None})
    camelots = {(c, row[7]) for c, group in by_contributor.items() for row in group if row[6] == result["key"] and row[7]}
    result["camelot"] = _vote(camelots)
    result["duration"] = _median_of_medians(by_contributor, 8)
    result["loudness_lufs"] = _median_of_medians(by_contributor, 10)
    raw_bpms = [row[9] for row in rows if row[9]]
    if raw_bpms:
        reference = statistics.median(raw_bpms)
        folded = {c: [fold_octave(row[9], reference) for row in group if row[9]] for c, group in by_contributor.items()}
        per_contributor = [statistics.median(values) for values in folded.values() if values]
        result["bpm"] = round(statistics.median(per_contributor), 2)
    else:
        result["bpm"] = None
    return result


def fold_octave(bpm: float, reference: float) -> float:
    """``bpm`` times the power of two that brings it nearest ``reference`` (half/double-time)."""
    return bpm * 2.0 ** round(math.log2(reference / bpm))


def _vote(pairs: set[tuple[str, object]]):
    votes: dict[object, int] = defaultdict(int)
    for _, value in pairs:
        votes[value] += 1
    if not votes:
        return None
    return min(votes.items(), key=lambda item: (-item[1], str(item[0])))[0]


def _median_of_medians(by_contributor: dict[str, list[tuple]], index: int) -> float | None:
    medians = [statistics.median(values) for values in
               ([row[index] for row in group if row[index] is not None] for group in by_contributor.values()) if values]
    return round(statistics.median(medians), 2) if medians else None


def profile_vector(profile: Profile) -> list[float]:
    return [*profile.tempo_histogram, *profile.key_histogram, *profile.loudness_histogram,
            *(profile.embedding_centroid or [0.0] * EMBEDDING_LENGTH)]


def _profile_dict(row) -> dict:
    track_count, vector, updated_at = row
    values = struct.unpack(f"<{PROFILE_LENGTH}f", vector)
    return {"track_count": track_count, "tempo_histogram": list(values[:24]), "key_histogram": list(values[24:48]),
            "loudness_histogram": list(values[48:60]), "embedding_centroid": list(values[60:]), "updated_at": updated_at}


def _cosine(a, b) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0
