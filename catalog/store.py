"""The catalog's database: the logic, written once over SQLite or PostgreSQL (backends.py).

No column can hold a path, a file name or audio: text columns are the contract's bounded
metadata fields and ids, each with a length CHECK; the only BLOBs are raw fingerprint items,
embeddings and profile vectors, each with a size CHECK (tests/test_catalog_contract.py reads the
schema and proves it). Contributors are pseudonymous: a random id and the SHA-256 of a bearer
token; nothing links them to a person.

An observation goes through two steps. ``accept`` stores it durably as an *arrival* (idempotent
by observation id; any worker, any number at once). ``settle`` matches arrivals into
recordings: it claims a slice (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so workers take
different slices), scores the candidates outside any lock (the costly part, in parallel across
workers), then places the slice under one cluster-wide lock, after looking again at the
fingerprints stored since it looked (two workers must never both decide "new recording" for one
track). Erasure takes the same lock. Every method is a blocking call; the server runs them on an
executor so no event loop waits on the database.
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

from cratesense.catalog import matching
from cratesense.catalog.backends import MATCHING_LOCK, open_backend
from cratesense.catalog.contract import (
    EMBEDDING_LENGTH, KEY_BINS, LOUDNESS_BINS, PROFILE_LENGTH, TEMPO_BINS, Observation, Profile, fingerprint_items,
)

_TEXT = {"artist": 256, "title": 256, "album": 256, "isrc": 12, "catalog_number": 64, "key": 8, "camelot": 3}


def _migrations(t: dict[str, str]) -> tuple[str, ...]:
    """The schema, rendered with a backend's column types (the SQLite rendering of scripts 1-2 is
    what earlier versions created)."""
    metadata_columns = ", ".join(f"{name} TEXT CHECK (length({name}) <= {limit})" for name, limit in _TEXT.items())
    # what an observation carries, as typed, length-checked columns (observations and arrivals)
    observed_columns = f"""
        fingerprint_duration {t['real']} NOT NULL,
        {metadata_columns},
        duration {t['real']},
        bpm {t['real']},
        loudness_lufs {t['real']},
        embedding {t['blob']} CHECK (embedding IS NULL OR length(embedding) = {4 * EMBEDDING_LENGTH}),
        analyzer_version TEXT NOT NULL CHECK (length(analyzer_version) <= 64),
        received_at {t['real']} NOT NULL"""
    scripts = [
        f"""
    CREATE TABLE contributors (
        id TEXT PRIMARY KEY CHECK (length(id) = 32),
        token_hash {t['blob']} NOT NULL UNIQUE CHECK (length(token_hash) = 32),
        contribute INTEGER NOT NULL DEFAULT 1 CHECK (contribute IN (0, 1)),
        created_at {t['real']} NOT NULL,
        deleted_at {t['real']},
        deleted_count INTEGER
    );
    CREATE TABLE recordings (
        id {t['id']},
        {metadata_columns},
        duration {t['real']},
        bpm {t['real']},
        loudness_lufs {t['real']},
        contributors INTEGER NOT NULL DEFAULT 0,
        updated_at {t['real']} NOT NULL
    );
    CREATE TABLE fingerprints (
        id {t['id']},
        recording {t['bigint']} NOT NULL REFERENCES recordings (id),
        items {t['blob']} NOT NULL CHECK (length(items) <= 4000 AND length(items) % 4 = 0),
        terms {t['blob']} NOT NULL CHECK (length(terms) <= {4 * matching.TERMS} AND length(terms) % 4 = 0),
        duration {t['real']} NOT NULL
    );
    CREATE INDEX fingerprints_recording ON fingerprints (recording);
    CREATE TABLE fingerprint_terms (
        term INTEGER NOT NULL,
        fingerprint {t['bigint']} NOT NULL,
        PRIMARY KEY (term, fingerprint)
    ) {t['without_rowid']};
    CREATE TABLE observations (
        id TEXT PRIMARY KEY CHECK (length(id) = 32),
        contributor TEXT NOT NULL REFERENCES contributors (id) CHECK (length(contributor) = 32),
        recording {t['bigint']} NOT NULL REFERENCES recordings (id),
        fingerprint {t['bigint']} NOT NULL REFERENCES fingerprints (id),{observed_columns}
    );
    CREATE INDEX observations_contributor ON observations (contributor);
    CREATE INDEX observations_recording ON observations (recording);
    CREATE INDEX observations_fingerprint ON observations (fingerprint);
    CREATE TABLE profiles (
        contributor TEXT PRIMARY KEY REFERENCES contributors (id) CHECK (length(contributor) = 32),
        track_count INTEGER NOT NULL,
        vector {t['blob']} NOT NULL CHECK (length(vector) = {4 * PROFILE_LENGTH}),
        updated_at {t['real']} NOT NULL
    );
    """,
        # 2: observations accepted but not yet matched (under load, matching runs after the answer;
        # same typed, length-checked columns as observations, the fingerprint as raw items)
        f"""
    CREATE TABLE arrivals (
        seq {t['id']},
        id TEXT NOT NULL UNIQUE CHECK (length(id) = 32),
        contributor TEXT NOT NULL REFERENCES contributors (id) CHECK (length(contributor) = 32),
        items {t['blob']} NOT NULL CHECK (length(items) <= 4000 AND length(items) % 4 = 0),{observed_columns}
    );
    CREATE INDEX arrivals_contributor ON arrivals (contributor);
    """,
        # 3: settling claims arrivals for a while (several workers take different slices), and
        # a popular recording's consensus is re-derived when it has grown enough, or after a
        # while, not at every observation (observations: its count now; derived_observations:
        # its count at the last derivation; stale_since: when it first changed after that)
        f"""
    ALTER TABLE arrivals ADD COLUMN claimed_at {t['real']};
    ALTER TABLE recordings ADD COLUMN observations {t['bigint']} NOT NULL DEFAULT 0;
    ALTER TABLE recordings ADD COLUMN derived_observations {t['bigint']} NOT NULL DEFAULT 0;
    ALTER TABLE recordings ADD COLUMN stale_since {t['real']};
    UPDATE recordings SET observations = (SELECT COUNT(*) FROM observations o WHERE o.recording = recordings.id);
    UPDATE recordings SET derived_observations = observations;
    CREATE INDEX recordings_stale ON recordings (stale_since) WHERE stale_since IS NOT NULL;
    """,
    ]
    # 4: fingerprint ids from a counter (never reused, even after the highest is erased: the
    # index may still hold an erased id's terms, and settling relies on ids only growing), and
    # the fingerprints of a large erasure, whose index terms are swept in the background
    scripts.append(f"""
    CREATE TABLE counters (
        counter TEXT PRIMARY KEY CHECK (length(counter) <= 32),
        value {t['bigint']} NOT NULL
    );
    INSERT INTO counters SELECT 'fingerprint', COALESCE(MAX(id), 0) FROM fingerprints;
    INSERT INTO counters VALUES ('sweep_pass', 0);
    INSERT INTO counters VALUES ('sweep_term', 0);
    CREATE TABLE erased_fingerprints (
        id {t['bigint']} PRIMARY KEY,
        terms {t['blob']} NOT NULL CHECK (length(terms) <= {4 * matching.TERMS} AND length(terms) % 4 = 0),
        pass {t['bigint']}
    );
    """)
    if t["unlogged"]:  # rate limits shared by every worker (SQLite's one process keeps them in memory)
        scripts[2] += f"""
    CREATE UNLOGGED TABLE rate_buckets (
        key TEXT PRIMARY KEY CHECK (length(key) <= 80),
        tokens {t['real']} NOT NULL,
        at {t['real']} NOT NULL,
        allowed BOOLEAN NOT NULL
    );
    """
    return tuple(scripts)


# the columns an arrival carries over into its observation, in this order
_CARRIED = ("id, contributor, fingerprint_duration, artist, title, album, isrc, catalog_number, key, camelot, "
            "duration, bpm, loudness_lufs, embedding, analyzer_version, received_at")
_OBSERVED = ("contributor, artist, title, album, isrc, catalog_number, key, camelot, "
             "COALESCE(duration, fingerprint_duration), bpm, loudness_lufs, analyzer_version, received_at")


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Store:
    """The catalog database at ``target`` (a SQLite file path or a ``postgresql://`` URL).

    ``claim_seconds``: how long a settler's claim on arrivals holds before another may take them
    (a worker killed mid-slice); correctness never depends on it, only how soon work is redone.
    ``sweep_inline``: an erasure of more fingerprints than this answers once the data is gone
    and leaves their index terms to ``sweep`` (in the background).
    ``exact_below``, ``debounce_seconds``: a recording with fewer observations than
    ``exact_below`` has its consensus re-derived at every change; a larger one when it has
    grown by an eighth since the last derivation, or when it has been stale for
    ``debounce_seconds`` per 64 observations (at most 10 minutes) — each derivation reads all
    of its observations, so a popular recording costs O(1) per new observation, amortized.
    """

    TERM_SPACE = 1 << (32 - matching.TERM_SHIFT)  # index terms are items' top 28 bits
    SWEEP_SLICES = 64  # sweep() passes over the index in this many term ranges (a transaction each)

    def __init__(self, target: str | Path, *, claim_seconds: float = 10.0, exact_below: int = 64,
                 debounce_seconds: float = 2.0, sweep_inline: int = 2000, pool_size: int = 10) -> None:
        self.backend = open_backend(target, pool_size=pool_size)
        self.path = self.backend.path  # the SQLite file (None on PostgreSQL)
        self.label = self.backend.label  # for log lines: never a password
        self.claim_seconds = claim_seconds
        self.exact_below = exact_below
        self.debounce_seconds = debounce_seconds
        self.sweep_inline = sweep_inline  # an erasure of more fingerprints leaves their index terms to sweep()
        self.derived_rows = 0  # observations read by consensus derivations (a cost measure: tests, bench)
        try:
            self.backend.migrate(_migrations(self.backend.types))
        except BaseException:
            self.backend.close()
            raise

    @property
    def several_processes(self) -> bool:
        """Whether several worker processes may serve this database at once."""
        return self.backend.several_processes

    def close(self) -> None:
        self.backend.close()

    def _transaction(self):
        return self.backend.transaction()

    def _reading(self):
        return self.backend.reading()

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
        with self._reading() as db:
            row = db.execute("SELECT id, contribute FROM contributors WHERE token_hash = ?", (token_hash(token),)).fetchone()
        return (row[0], bool(row[1])) if row else None

    def set_contribute(self, contributor: str, contribute: bool) -> None:
        with self._transaction() as db:
            db.execute("UPDATE contributors SET contribute = ? WHERE id = ?", (int(contribute), contributor))

    def take_token(self, key: str, rate: float, burst: float) -> float:
        """A token bucket kept in the database, so every worker shares it (PostgreSQL: an
        UNLOGGED table, cheap and lost on a crash, which only refills the buckets). 0 if the
        request may go ahead, else the seconds to wait. The database's clock: hosts may differ."""
        with self._transaction() as db:
            allowed, tokens = db.execute(
                "INSERT INTO rate_buckets AS b (key, tokens, at, allowed) "
                "VALUES (?, ? - 1, EXTRACT(EPOCH FROM clock_timestamp()), TRUE) "
                "ON CONFLICT (key) DO UPDATE SET "
                "tokens = LEAST(?, b.tokens + (EXCLUDED.at - b.at) * ?) "
                "- CASE WHEN LEAST(?, b.tokens + (EXCLUDED.at - b.at) * ?) >= 1 THEN 1 ELSE 0 END, "
                "allowed = LEAST(?, b.tokens + (EXCLUDED.at - b.at) * ?) >= 1, at = EXCLUDED.at "
                "RETURNING allowed, tokens",
                (key[:80], burst, burst, rate, burst, rate, burst, rate),
            ).fetchone()
        return 0.0 if allowed else (1 - tokens) / rate

    def forget_idle_buckets(self, idle_seconds: float) -> None:
        """Drop buckets untouched for ``idle_seconds`` (a full bucket is the default anyway)."""
        with self._transaction() as db:
            db.execute("DELETE FROM rate_buckets WHERE at < EXTRACT(EPOCH FROM clock_timestamp()) - ?", (idle_seconds,))

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
                owner = self._owner(db, o.id)
                if owner is None:
                    items = fingerprint_items("fingerprint.chromaprint", o.fingerprint.chromaprint)
                    m, a = o.metadata, o.analysis
                    embedding = struct.pack(f"<{EMBEDDING_LENGTH}f", *a.embedding) if a.embedding else None
                    # ON CONFLICT: the same id at another worker at this very moment (a re-send)
                    inserted = db.execute(
                        f"INSERT INTO arrivals (items, {_CARRIED}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (id) DO NOTHING RETURNING seq",
                        (matching.pack(items), o.id, contributor, o.fingerprint.duration, m.artist, m.title, m.album,
                         m.isrc, m.catalog_number, a.key, a.camelot, m.duration, a.bpm, a.loudness_lufs, embedding,
                         a.analyzer_version, now),
                    ).fetchone()
                    if inserted is not None:
                        results.append({"id": o.id, "status": "accepted"})
                        continue
                    owner = self._owner(db, o.id)
                if owner == contributor:
                    results.append({"id": o.id, "status": "duplicate"})
                else:
                    results.append({"id": o.id, "status": "rejected", "reason": "id: already used by another contributor"})
        return results

    @staticmethod
    def _owner(db, observation_id: str) -> str | None:
        row = db.execute("SELECT contributor FROM observations WHERE id = ? UNION ALL "
                         "SELECT contributor FROM arrivals WHERE id = ?", (observation_id, observation_id)).fetchone()
        return row[0] if row else None

    def settle(self, limit: int = 20) -> int:
        """Match up to ``limit`` waiting arrivals (oldest first) into observations and update the
        consensus of every recording they touch; returns how many were claimed."""
        now = time.time()
        with self._transaction() as db:  # claim a slice: settlers elsewhere skip it
            claimed = db.execute(
                "UPDATE arrivals SET claimed_at = ? WHERE seq IN (SELECT seq FROM arrivals "
                f"WHERE claimed_at IS NULL OR claimed_at < ? ORDER BY seq LIMIT ?{self.backend.skip_locked}) "
                "RETURNING seq, items, fingerprint_duration, isrc",
                (now, now - self.claim_seconds, limit),
            ).fetchall()
        if not claimed:
            return 0
        claimed.sort()
        arrivals = {seq: (matching.unpack(packed), duration, isrc) for seq, packed, duration, isrc in claimed}
        terms = {seq: matching.index_terms(items) for seq, (items, _, _) in arrivals.items()}
        with self._reading() as db:  # the costly part, outside the lock: candidates and their scores
            seen_up_to = db.execute("SELECT value FROM counters WHERE counter = 'fingerprint'").fetchone()[0]
            prepared = {seq: self._candidates(db, items, duration, terms[seq])
                        for seq, (items, duration, _) in arrivals.items()}
        with self._transaction() as db:
            self.backend.lock(db, MATCHING_LOCK)  # one placer at a time, cluster-wide
            # fingerprints stored since we looked, by other placers: then the index is asked
            # again; else only this slice's own new ones can be missing (kept here, in memory)
            placed_up_to = db.execute("SELECT value FROM counters WHERE counter = 'fingerprint'").fetchone()[0]
            others_placed = placed_up_to > seen_up_to
            where, params = self.backend.any_of("seq", list(arrivals))
            alive = {row[0] for row in db.execute(f"SELECT seq FROM arrivals WHERE {where}", params)}
            known = {fingerprint for candidates in prepared.values() for _, fingerprint, _ in candidates}
            if known:  # erased since they were scored?
                where, params = self.backend.any_of("id", sorted(known))
                known = {row[0] for row in db.execute(f"SELECT id FROM fingerprints WHERE {where}", params)}
            new_index: dict[int, list[int]] = defaultdict(list)  # term -> this slice's new fingerprints
            new_prints: dict[int, tuple[int, list[int], float]] = {}
            touched: dict[int, int] = defaultdict(int)
            created: set[int] = set()
            for seq, (items, duration, isrc) in arrivals.items():
                if seq not in alive:  # settled by another worker whose claim outlived ours, or erased
                    continue
                candidates = [c for c in prepared[seq] if c[1] in known]
                if others_placed:
                    candidates += self._candidates(db, items, duration, terms[seq], after=seen_up_to)
                elif new_prints:
                    candidates += _in_memory_candidates(new_index, new_prints, items, duration, terms[seq])
                candidates.sort(reverse=True)
                recording, fingerprint, new_recording = self._place(db, candidates, items, terms[seq], duration, isrc, now)
                if fingerprint > placed_up_to and fingerprint not in new_prints:  # new, in this slice
                    new_prints[fingerprint] = (recording, items, duration)
                    for term in terms[seq]:
                        new_index[term].append(fingerprint)
                if new_recording:
                    created.add(recording)
                # ON CONFLICT: a re-send accepted while its first copy was being settled
                db.execute(
                    f"INSERT INTO observations (recording, fingerprint, {_CARRIED}) "
                    f"SELECT ?, ?, {_CARRIED} FROM arrivals WHERE seq = ? ON CONFLICT (id) DO NOTHING",
                    (recording, fingerprint, seq))
                db.execute("DELETE FROM arrivals WHERE seq = ?", (seq,))
                touched[recording] += 1
            for recording, added in sorted(touched.items()):
                if recording in created:
                    self._derive(db, recording, now)
                else:
                    self._touch(db, recording, added, now)
        return len(claimed)

    def waiting(self) -> int:
        """Arrivals not matched yet."""
        with self._reading() as db:
            return db.execute("SELECT COUNT(*) FROM arrivals").fetchone()[0]

    def _candidates(self, db, items: list[int], duration: float, terms: list[int],
                    after: int = 0) -> list[tuple[float, int, int]]:
        """(score, fingerprint id, recording id) of stored fingerprints like ``items`` (whose
        index ``terms`` they are; ids above ``after``), best first."""
        if not terms:
            return []
        where, params = self.backend.any_of("term", terms)
        rows = db.execute(
            f"SELECT fingerprint, COUNT(*) AS shared FROM fingerprint_terms WHERE {where} AND fingerprint > ? "
            "AND fingerprint NOT IN (SELECT id FROM erased_fingerprints) "  # terms not swept yet
            "GROUP BY fingerprint HAVING COUNT(*) >= ? ORDER BY shared DESC, fingerprint LIMIT 10",
            (*params, after, matching.minimum_shared_terms(terms)),
        ).fetchall()
        near = _near_the_best(rows)
        if not near:
            return []
        where, params = self.backend.any_of("id", near)
        stored = {row[0]: (row[1], matching.unpack(row[2]), row[3]) for row in db.execute(
            f"SELECT id, recording, items, duration FROM fingerprints WHERE {where}", params)}
        return _scored(items, duration, near, stored)

    def _place(self, db, candidates, items: list[int], terms: list[int], duration: float, isrc: str | None,
               now: float) -> tuple[int, int, bool]:
        """The recording and fingerprint an observation belongs to, created when new (and
        whether the recording is new)."""
        if candidates:
            best_score, fingerprint, recording = candidates[0]
            if best_score >= matching.SAME_FINGERPRINT:
                return recording, fingerprint, False
            for candidate_score, _, candidate_recording in candidates:
                same_isrc = isrc is not None and db.execute(
                    "SELECT 1 FROM recordings WHERE id = ? AND isrc = ?", (candidate_recording, isrc)
                ).fetchone()
                threshold = matching.SAME_RECORDING_WITH_ISRC if same_isrc else matching.SAME_RECORDING
                if candidate_score >= threshold:
                    return candidate_recording, self._new_fingerprint(db, candidate_recording, items, terms, duration), False
        recording = db.execute("INSERT INTO recordings (updated_at) VALUES (?) RETURNING id", (now,)).fetchone()[0]
        return recording, self._new_fingerprint(db, recording, items, terms, duration), True

    @staticmethod
    def _new_fingerprint(db, recording: int, items: list[int], terms: list[int], duration: float) -> int:
        """A new fingerprint of ``recording`` and its index ``terms`` (under the matching lock)."""
        fingerprint = db.execute(
            "UPDATE counters SET value = value + 1 WHERE counter = 'fingerprint' RETURNING value").fetchone()[0]
        db.execute("INSERT INTO fingerprints (id, recording, items, terms, duration) VALUES (?, ?, ?, ?, ?)",
                   (fingerprint, recording, matching.pack(items), matching.pack(terms), duration))
        if terms:  # one statement: one round trip to a database server
            db.execute(f"INSERT INTO fingerprint_terms VALUES {', '.join(['(?, ?)'] * len(terms))} ON CONFLICT DO NOTHING",
                       [value for term in terms for value in (term, fingerprint)])
        return fingerprint

    # --- consensus -----------------------------------------------------------------------

    def _touch(self, db, recording: int, added: int, now: float) -> None:
        """A recording got ``added`` new observations: re-derive it now if it is small or has
        grown by an eighth since it was derived; otherwise mark it stale for ``refresh``."""
        # the count is kept in the row: counting the observations would cost what debouncing saves
        observed, derived = db.execute(
            "UPDATE recordings SET observations = observations + ? WHERE id = ? RETURNING observations, derived_observations",
            (added, recording)).fetchone()
        if derived < self.exact_below or 8 * (observed - derived) >= derived:
            self._derive(db, recording, now)
        else:
            db.execute("UPDATE recordings SET stale_since = COALESCE(stale_since, ?) WHERE id = ?", (now, recording))

    def refresh(self, limit: int = 20, now: float | None = None) -> int:
        """Re-derive up to ``limit`` recordings whose consensus has been stale long enough
        (``debounce_seconds`` per 64 observations, at most 10 minutes); returns how many."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            delay = "CASE WHEN derived_observations * ? < 600 THEN derived_observations * ? ELSE 600 END"
            due = db.execute(
                f"SELECT id FROM recordings WHERE stale_since IS NOT NULL AND stale_since + {delay} < ? "
                f"ORDER BY stale_since LIMIT ?{self.backend.skip_locked}",
                (self.debounce_seconds / 64, self.debounce_seconds / 64, now, limit)).fetchall()
            for (recording,) in due:
                self._derive(db, recording, now)
        return len(due)

    def _derive(self, db, recording: int, now: float) -> None:
        """The consensus of a recording from its observations, votes counted per contributor."""
        if self.backend.for_update:  # the row lock first: an observation placed meanwhile is then seen
            db.execute(f"SELECT id FROM recordings WHERE id = ?{self.backend.for_update}", (recording,))
        rows = db.execute(f"SELECT {_OBSERVED} FROM observations WHERE recording = ?", (recording,)).fetchall()
        self.derived_rows += len(rows)
        if not rows:
            self._drop_recordings(db, [recording])
            return
        consensus = consensus_of(rows)
        db.execute(
            "UPDATE recordings SET artist = ?, title = ?, album = ?, isrc = ?, catalog_number = ?, key = ?, "
            "camelot = ?, duration = ?, bpm = ?, loudness_lufs = ?, contributors = ?, updated_at = ?, "
            "observations = ?, derived_observations = ?, stale_since = NULL WHERE id = ?",
            (*(consensus[name] for name in CONSENSUS_FIELDS), consensus["contributors"], now, len(rows), len(rows),
             recording),
        )

    def _drop_recordings(self, db, recordings: list[int]) -> None:
        if not recordings:
            return
        where, params = self.backend.any_of("recording", recordings)
        self._drop_fingerprints(db, [row[0] for row in db.execute(f"SELECT id FROM fingerprints WHERE {where}", params)])
        where, params = self.backend.any_of("id", recordings)
        db.execute(f"DELETE FROM recordings WHERE {where}", params)

    def _drop_fingerprints(self, db, fingerprints: list[int]) -> None:
        """Fingerprints and their index terms. A few fingerprints' terms are deleted at once; a
        large erasure's are left to ``sweep`` (deleting 6 million postings spread over the
        whole index rewrites most of its pages: far longer than an erasure may take). Until
        then they are index rows naming ids that no longer exist, ignored by every query."""
        if not fingerprints:
            return
        where, params = self.backend.any_of("id", fingerprints)
        rows = db.execute(f"SELECT id, terms FROM fingerprints WHERE {where}", params).fetchall()
        if len(rows) <= self.sweep_inline:
            self.backend.delete_terms(db, [(term, fingerprint) for fingerprint, packed in rows
                                           for term in matching.unpack(packed)])
        else:
            db.executemany("INSERT INTO erased_fingerprints (id, terms) VALUES (?, ?)", rows)
        db.execute(f"DELETE FROM fingerprints WHERE {where}", params)

    def sweep(self) -> int:
        """Delete some index terms of erased fingerprints; 0 when none are left. A few are
        deleted by their own terms; many, in one pass over the index by term range, so each
        index page is rewritten once, not once per fingerprint. Erasures during a pass wait
        for the next one."""
        with self._transaction() as db:
            position = db.execute(f"SELECT value FROM counters WHERE counter = 'sweep_term'{self.backend.for_update}").fetchone()[0]
            pass_number = db.execute("SELECT value FROM counters WHERE counter = 'sweep_pass'").fetchone()[0]
            if position == 0:
                pending = db.execute("SELECT id, terms FROM erased_fingerprints ORDER BY id LIMIT ?",
                                     (self.sweep_inline + 1,)).fetchall()
                if not pending:
                    return 0
                if len(pending) <= self.sweep_inline:  # a few: by their own terms
                    self.backend.delete_terms(db, [(term, fingerprint) for fingerprint, packed in pending
                                                   for term in matching.unpack(packed)])
                    where, params = self.backend.any_of("id", [row[0] for row in pending])
                    db.execute(f"DELETE FROM erased_fingerprints WHERE {where}", params)
                    return len(pending)
                pass_number += 1
                db.execute("UPDATE erased_fingerprints SET pass = ? WHERE pass IS NULL", (pass_number,))
                db.execute("UPDATE counters SET value = ? WHERE counter = 'sweep_pass'", (pass_number,))
            end = position + self.TERM_SPACE // self.SWEEP_SLICES
            db.execute("DELETE FROM fingerprint_terms WHERE term >= ? AND term < ? AND fingerprint IN "
                       "(SELECT id FROM erased_fingerprints WHERE pass = ?)", (position, end, pass_number))
            if end >= self.TERM_SPACE:
                db.execute("DELETE FROM erased_fingerprints WHERE pass = ?", (pass_number,))
                end = 0
            db.execute("UPDATE counters SET value = ? WHERE counter = 'sweep_term'", (end,))
        return 1

    # --- look-up, deletion, export --------------------------------------------------------

    def lookup(self, fingerprints: list[tuple[list[int], float]]) -> list[dict | None]:
        results = []
        with self._reading() as db:
            for items, duration in fingerprints:
                candidates = self._candidates(db, items, duration, matching.index_terms(items))
                if candidates and candidates[0][0] >= matching.LOOKUP_HIT:
                    score, _, recording = candidates[0]
                    results.append({"score": round(score, 3), **self._recording(db, recording)})
                else:
                    results.append(None)
        return results

    def recording(self, recording: int) -> dict:
        with self._reading() as db:
            return self._recording(db, recording)

    @staticmethod
    def _recording(db, recording: int) -> dict:
        row = db.execute(
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
        the rest at once (an erasure never waits for a debounce), remember when and how many.
        Idempotent: a second call erases 0. Under the matching lock: no slice being placed can
        attach to a recording this drops."""
        now = time.time()
        with self._transaction() as db:
            self.backend.lock(db, MATCHING_LOCK)
            recordings = [row[0] for row in db.execute(
                "SELECT DISTINCT recording FROM observations WHERE contributor = ?", (contributor,))]
            fingerprints = [row[0] for row in db.execute(
                "SELECT DISTINCT fingerprint FROM observations WHERE contributor = ?", (contributor,))]
            count = db.execute("DELETE FROM observations WHERE contributor = ?", (contributor,)).rowcount
            count += db.execute("DELETE FROM arrivals WHERE contributor = ?", (contributor,)).rowcount
            if fingerprints:
                where, params = self.backend.any_of("f.id", fingerprints)
                self._drop_fingerprints(db, [row[0] for row in db.execute(
                    f"SELECT f.id FROM fingerprints f WHERE {where} AND NOT EXISTS "
                    "(SELECT 1 FROM observations o WHERE o.fingerprint = f.id)", params)])
            if recordings:
                where, params = self.backend.any_of("r.id", recordings)
                empty = [row[0] for row in db.execute(
                    f"SELECT r.id FROM recordings r WHERE {where} AND NOT EXISTS "
                    "(SELECT 1 FROM observations o WHERE o.recording = r.id)", params)]
                self._drop_recordings(db, empty)
                for recording in sorted(set(recordings) - set(empty)):
                    self._derive(db, recording, now)
            db.execute(
                "UPDATE contributors SET deleted_at = ?, deleted_count = COALESCE(deleted_count, 0) + ? WHERE id = ?",
                (now, count, contributor),
            )
        return count

    def export(self, contributor: str) -> dict:
        import chromaprint

        fields = ("{t}.id, {recording}, items, {t}.fingerprint_duration, artist, title, album, isrc, catalog_number, "
                  "{t}.duration, bpm, key, camelot, loudness_lufs, embedding, analyzer_version, received_at")
        with self._reading() as db:
            row = db.execute(
                "SELECT id, contribute, created_at, deleted_at, deleted_count FROM contributors WHERE id = ?", (contributor,)
            ).fetchone()
            matched = db.execute(
                f"SELECT {fields.format(t='o', recording='o.recording')} FROM observations o JOIN fingerprints f "
                "ON f.id = o.fingerprint WHERE o.contributor = ?", (contributor,)).fetchall()
            waiting = db.execute(  # accepted, not matched yet: no recording
                f"SELECT {fields.format(t='arrivals', recording='NULL')} FROM arrivals WHERE contributor = ?",
                (contributor,)).fetchall()
            profile = db.execute(
                "SELECT track_count, vector, updated_at FROM profiles WHERE contributor = ?", (contributor,)
            ).fetchone()
        observations = []
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
        with self._reading() as db:
            mine = db.execute("SELECT vector FROM profiles WHERE contributor = ?", (contributor,)).fetchone()
            if mine is None:
                return []
            me = struct.unpack(f"<{PROFILE_LENGTH}f", mine[0])
            nearest = []
            for other, vector in db.execute("SELECT contributor, vector FROM profiles WHERE contributor != ?", (contributor,)):
                similarity = _cosine(me, struct.unpack(f"<{PROFILE_LENGTH}f", vector))
                if similarity > 0:
                    nearest.append((similarity, other))
            nearest = sorted(nearest, reverse=True)[:neighbours]
            held = {row[0] for row in db.execute("SELECT DISTINCT recording FROM observations WHERE contributor = ?", (contributor,))}
            weights: dict[int, float] = defaultdict(float)
            for similarity, other in nearest:
                for (recording,) in db.execute("SELECT DISTINCT recording FROM observations WHERE contributor = ?", (other,)):
                    if recording not in held:
                        weights[recording] += similarity
            ranked = sorted(weights.items(), key=lambda item: (-item[1], item[0]))[:limit]
            return [{"weight": round(weight, 4), **self._recording(db, recording)} for recording, weight in ranked]

    def counts(self) -> dict[str, int]:
        with self._reading() as db:
            return {table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                    for table in ("contributors", "recordings", "fingerprints", "observations", "profiles", "arrivals")}

    def size(self) -> int:
        """Bytes the database takes on disk."""
        return self.backend.size()


def _near_the_best(rows: list[tuple[int, int]]) -> list[int]:
    """Of (fingerprint, shared terms) rows, best first: those sharing at least half the best's."""
    return [fingerprint for fingerprint, shared in rows if shared >= rows[0][1] / 2] if rows else []


def _scored(items: list[int], duration: float, near: list[int],
            stored: dict[int, tuple[int, list[int], float]]) -> list[tuple[float, int, int]]:
    """(score, fingerprint, recording) of the ``near`` fingerprints found in ``stored`` (id ->
    recording, items, duration) within the duration tolerance, best first."""
    scored = []
    for fingerprint in near:
        if fingerprint not in stored:
            continue
        recording, stored_items, stored_duration = stored[fingerprint]
        if abs(stored_duration - duration) <= matching.DURATION_TOLERANCE:
            scored.append((matching.score(items, stored_items), fingerprint, recording))
            if scored[-1][0] >= matching.SAME_FINGERPRINT:
                break  # the same fingerprint: nothing can do better (scores cost ~1 ms each)
    return sorted(scored, reverse=True)


def _in_memory_candidates(index: dict[int, list[int]], prints: dict[int, tuple[int, list[int], float]],
                          items: list[int], duration: float, terms: list[int]) -> list[tuple[float, int, int]]:
    """``Store._candidates`` among fingerprints held in memory (a slice's own new ones)."""
    shared: dict[int, int] = defaultdict(int)
    for term in terms:
        for fingerprint in index.get(term, ()):
            shared[fingerprint] += 1
    minimum = matching.minimum_shared_terms(terms)
    rows = sorted(((f, n) for f, n in shared.items() if n >= minimum), key=lambda row: (-row[1], row[0]))[:10]
    return _scored(items, duration, _near_the_best(rows), prints)


CONSENSUS_FIELDS = ("artist", "title", "album", "isrc", "catalog_number", "key", "camelot", "duration", "bpm", "loudness_lufs")


def consensus_of(rows: list[tuple]) -> dict:
    """Pure: rows of (contributor, artist, title, album, isrc, catalog_number, key, camelot,
    duration, bpm, loudness, analyzer_version, received_at) -> the consensus. Only each
    contributor's newest analysis counts (an upgraded agent sends its new figures as new
    observations: its superseded ones must not vote beside them). Text fields: the value most
    contributors agree on (ties: the smallest value); numbers: the median of each contributor's
    median, BPM after folding octave errors onto the others; camelot follows the chosen key."""
    newest: dict[str, tuple[float, str]] = {}
    for row in rows:
        if row[0] not in newest or row[12] > newest[row[0]][0]:
            newest[row[0]] = (row[12], row[11])
    rows = [row for row in rows if row[11] == newest[row[0]][1]]
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
    key_start = TEMPO_BINS
    loudness_start = key_start + KEY_BINS
    embedding_start = loudness_start + LOUDNESS_BINS
    return {"track_count": track_count, "tempo_histogram": list(values[:key_start]),
            "key_histogram": list(values[key_start:loudness_start]),
            "loudness_histogram": list(values[loudness_start:embedding_start]),
            "embedding_centroid": list(values[embedding_start:]), "updated_at": updated_at}


def _cosine(a, b) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0
