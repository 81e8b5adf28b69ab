"""The catalog's database: the logic, written once over SQLite or PostgreSQL (backends.py).

No column can hold a path, a file name or audio: text columns are the contract's bounded
metadata fields and ids, each with a length CHECK; the only BLOBs are raw fingerprint items,
embeddings and profile vectors, each with a size CHECK (tests/test_catalog_contract.py reads the
schema and proves it). Contributors are pseudonymous: a random id and the SHA-256 of a bearer
token; nothing links them to a person.

An observation goes through two steps. ``accept`` stores a batch durably as *arrivals*
(idempotent by observation id; any worker, any number at once; a few statements per batch).
``settle`` matches arrivals into recordings: it claims a slice (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so workers take different slices), finds and scores the candidates of the whole slice
outside any lock (one statement, then the costly scoring in Python, in parallel across workers),
then places the slice under one cluster-wide lock: it looks again at the fingerprints stored
since it looked (two workers must never both decide "new recording" for one track), decides in
memory, and writes the slice with a few set-based statements (recordings, fingerprints, index
terms, observations, consensus), whatever its size. Erasure takes the same lock. ``settle_now``
is the variant for a lone request that must not wait: it takes the lock only if it is free at
once, then claims, scores and places a small slice under it. Every method is a blocking call;
the server runs them on an executor so no event loop waits on the database.

Reads that may lag (look-ups, recommendations, exports) go to a streaming standby when one is
given (``read_target``) and it keeps up; everything else reads the primary (backends.ReadReplica).
"""

from __future__ import annotations

import hashlib
import math
import secrets
import statistics
import struct
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from cratesense.catalog import matching
from cratesense.catalog.backends import Busy, PostgresBackend, ReadReplica, open_backend
from cratesense.catalog.contract import (
    EMBEDDING_LENGTH, KEY_BINS, LOUDNESS_BINS, PROFILE_LENGTH, TEMPO_BINS, Observation, Profile, fingerprint_items,
    fingerprint_packed,
)
from cratesense.errors import BackendError

_TEXT = {"artist": 256, "title": 256, "album": 256, "isrc": 12, "catalog_number": 64, "key": 8, "camelot": 3}
_WORDS_LENGTH = 100  # three vocabulary words, comma-separated
T = TypeVar("T")


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
    # 5: recording ids from a counter too (SQLite reused the highest id once it was erased, and a
    # slice's new recordings are written in one statement, their ids chosen beforehand)
    scripts.append("""
    INSERT INTO counters SELECT 'recording', COALESCE(MAX(id), 0) FROM recordings;
    """)
    # 6: the change feed (catalog/follow.py): a recording's consensus carries the number of the
    # change that last altered it, from one counter taken last in the deriving transaction (so
    # the numbers are in commit order); holdings by contributor then recording (the feed's "do I
    # hold it", the recommender's "what does each contributor hold")
    scripts.append(f"""
    ALTER TABLE recordings ADD COLUMN changed {t['bigint']} NOT NULL DEFAULT 0;
    UPDATE recordings SET changed = 1;
    INSERT INTO counters VALUES ('consensus', 1);
    CREATE INDEX recordings_changed ON recordings (changed, id);
    CREATE INDEX observations_holdings ON observations (contributor, recording);
    """)
    # 7: the sound model's genre and mood words (#27): comma-separated words of the vocabulary
    # (the contract admits no other), carried by observations, voted into each recording's consensus
    words = f"CHECK (length({{name}}) <= {_WORDS_LENGTH})"
    scripts.append("".join(f"""
    ALTER TABLE {table} ADD COLUMN {name} TEXT {words.format(name=name)};"""
                           for table in ("arrivals", "observations", "recordings") for name in ("genres", "moods"))
                   # what a profile's embedding centroid is (NULL: sent before version 3, i.e. 2)
                   + """
    ALTER TABLE profiles ADD COLUMN embedding_version INTEGER;""")
    return tuple(scripts)




# Volatile state: lost on a crash (which only refills the buckets), never migrated. PostgreSQL
# keeps it in an UNLOGGED table every worker shares; SQLite in its one process's memory.
def _volatile(t: dict[str, str]) -> str:
    return f"""
    CREATE {t['unlogged']} TABLE IF NOT EXISTS rate_buckets (
        key TEXT PRIMARY KEY CHECK (length(key) <= 80),
        tokens {t['real']} NOT NULL,
        at {t['real']} NOT NULL,
        allowed BOOLEAN NOT NULL
    )"""


# what an arrival carries over into its observation (name -> type for statements over many rows)
_CARRIED = {"id": "text", "contributor": "text", "fingerprint_duration": "real", "artist": "text", "title": "text",
            "album": "text", "isrc": "text", "catalog_number": "text", "key": "text", "camelot": "text",
            "duration": "real", "bpm": "real", "loudness_lufs": "real", "embedding": "blob",
            "analyzer_version": "text", "received_at": "real", "genres": "text", "moods": "text"}
_CARRIED_LIST = ", ".join(_CARRIED)
CONSENSUS_FIELDS = ("artist", "title", "album", "isrc", "catalog_number", "key", "camelot", "duration", "bpm", "loudness_lufs",
                    "genres", "moods")
_CONSENSUS_TYPES = {name: ("real" if name in ("duration", "bpm", "loudness_lufs") else "text") for name in CONSENSUS_FIELDS}


class Observed(NamedTuple):
    """What ``consensus_of`` reads of one observation (its rows are read by these names)."""
    contributor: str
    artist: str | None
    title: str | None
    album: str | None
    isrc: str | None
    catalog_number: str | None
    key: str | None
    camelot: str | None
    duration: float | None  # the tag's duration, else the fingerprint's
    bpm: float | None
    loudness_lufs: float | None
    analyzer_version: str
    received_at: float
    genres: str | None = None  # the sound model's words, comma-separated (contract: the vocabulary only)
    moods: str | None = None


_OBSERVED = ("contributor, artist, title, album, isrc, catalog_number, key, camelot, "
             "COALESCE(duration, fingerprint_duration) AS duration, bpm, loudness_lufs, analyzer_version, received_at, "
             "genres, moods")

# Candidates of many fingerprints in one statement: per query fingerprint ``n``, the stored
# fingerprints sharing at least ``minimum`` of its index terms, the 10 sharing the most, of
# those the ones sharing at least half as many as the best (AcoustID's shortlist), with their
# items and their recording's consensus (a look-up answers from this one statement).
_CANDIDATES = """
    WITH shared AS (
        SELECT q.n, t.fingerprint, COUNT(*) AS terms_shared
        FROM {queries} JOIN fingerprint_terms t ON t.term = q.term
        WHERE t.fingerprint > ? AND t.fingerprint NOT IN (SELECT id FROM erased_fingerprints)
        GROUP BY q.n, t.fingerprint
        HAVING COUNT(*) >= MIN(q.minimum)
    ), ranked AS (
        SELECT n, fingerprint, terms_shared,
               ROW_NUMBER() OVER (PARTITION BY n ORDER BY terms_shared DESC, fingerprint) AS place,
               MAX(terms_shared) OVER (PARTITION BY n) AS best
        FROM shared
    )
    SELECT r.n, r.fingerprint, f.items, f.duration AS fingerprint_duration, rec.id AS recording,
           rec.contributors, """ + ", ".join(f"rec.{name}" for name in CONSENSUS_FIELDS) + """
    FROM ranked r JOIN fingerprints f ON f.id = r.fingerprint JOIN recordings rec ON rec.id = f.recording
    WHERE r.place <= 10 AND 2 * r.terms_shared >= r.best
    ORDER BY r.n, r.terms_shared DESC, r.fingerprint"""


class Candidate(NamedTuple):
    score: float
    fingerprint: int
    recording: int
    row: Any  # the candidates statement's row: the recording's consensus


class ContributionOff(Exception):
    """The contributor turned contribution off: nothing of the batch is stored."""


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Store:
    """The catalog database at ``target`` (a SQLite file path or a ``postgresql://`` URL).

    ``read_target``: a streaming standby of a PostgreSQL ``target`` for reads that may lag
    (look-ups, recommendations, exports), used while it is less than ``max_lag`` seconds behind.
    ``claim_seconds``: how long a settler's claim on arrivals holds before another may take them
    (a worker killed mid-slice); correctness never depends on it, only how soon work is redone.
    ``sweep_inline``: an erasure of more fingerprints than this answers once the data is gone
    and leaves their index terms to ``sweep`` (in the background).
    ``exact_below``, ``debounce_seconds``: a recording with fewer observations than
    ``exact_below`` has its consensus re-derived at every change; a larger one when it has
    grown by an eighth since the last derivation, or when it has been stale for
    ``debounce_seconds`` per 64 observations (at most 10 minutes) — each derivation reads all
    of its observations, so a popular recording costs O(1) per new observation, amortized.
    ``token_seconds``: how long this process trusts a token it has seen with contribution on
    (a token never changes owner; whether it may contribute is checked again when it sends).
    """

    TERM_SPACE = 1 << (32 - matching.TERM_SHIFT)  # index terms are items' top 28 bits
    SWEEP_SLICES = 64  # sweep() passes over the index in this many term ranges (a transaction each)

    def __init__(self, target: str | Path, *, read_target: str | None = None, max_lag: float = 5.0,
                 claim_seconds: float = 10.0, exact_below: int = 16, debounce_seconds: float = 2.0,
                 sweep_inline: int = 2000, pool_size: int = 10, token_seconds: float = 60.0) -> None:
        self.backend = open_backend(target, pool_size=pool_size)
        self.path = self.backend.path  # the SQLite file (None on PostgreSQL)
        self.label = self.backend.label  # for log lines: never a password
        self.claim_seconds = claim_seconds
        self.exact_below = exact_below
        self.debounce_seconds = debounce_seconds
        self.sweep_inline = sweep_inline  # an erasure of more fingerprints leaves their index terms to sweep()
        self.token_seconds = token_seconds
        self.derived_rows = 0  # observations read by consensus derivations (a cost measure: tests, bench)
        self.replica_reads = 0  # reads the standby answered (tests, health)
        self._tokens: dict[bytes, tuple[str, float]] = {}  # token hash -> (contributor, trusted until)
        self._tokens_lock = threading.Lock()
        self.replica: ReadReplica | None = None
        try:
            self.backend.migrate(_migrations(self.backend.types))
            self.backend.prepare_volatile(_volatile(self.backend.types))
            if read_target:
                if not isinstance(self.backend, PostgresBackend):
                    raise BackendError("--read-db needs a PostgreSQL primary (--db postgresql://...): "
                                       "a SQLite file has no streaming standby")
                self.replica = ReadReplica(read_target, self.backend, max_lag=max_lag, pool_size=pool_size)
        except BaseException:
            self.close()
            raise

    @property
    def several_processes(self) -> bool:
        """Whether several worker processes may serve this database at once."""
        return self.backend.several_processes

    def close(self) -> None:
        if self.replica is not None:
            self.replica.close()
        self.backend.close()

    def _transaction(self):
        return self.backend.transaction()

    def _reading(self):
        return self.backend.reading()

    def _lagging(self, read: Callable[[Any], T]) -> T:
        """``read(backend)`` on the standby while it keeps up, else (or if it fails) on the primary."""
        replica = self.replica
        if replica is not None and replica.usable and replica.backend is not None:
            try:
                result = read(replica.backend)
            except replica.backend.errors as exc:
                replica.failed(exc)
            else:
                self.replica_reads += 1
                return result
        return read(self.backend)

    # --- contributors --------------------------------------------------------------------

    def register(self) -> tuple[str, str]:
        """A new pseudonymous contributor: (id, bearer token). Only the token's hash is kept."""
        contributor, token = secrets.token_hex(16), secrets.token_urlsafe(32)
        self.backend.run("INSERT INTO contributors (id, token_hash, created_at) VALUES (?, ?, ?)",
                         (contributor, token_hash(token), time.time()), writes=True)
        return contributor, token

    def authenticate(self, token: str) -> tuple[str, bool] | None:
        """(contributor id, contribute) for a bearer token, or None. Looked up by the token's
        SHA-256, so response time says nothing about how close a guess was. A token seen with
        contribution on is trusted for ``token_seconds`` without asking the database (``accept``
        checks contribution again in its own transaction)."""
        hashed = token_hash(token)
        cached = self._tokens.get(hashed)
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0], True
        rows = self.backend.run("SELECT id, contribute FROM contributors WHERE token_hash = ?", (hashed,))
        if not rows:
            return None
        contributor, contribute = rows[0].id, bool(rows[0].contribute)
        with self._tokens_lock:
            if contribute:
                if len(self._tokens) >= 100_000:  # bounded: forget the lot, they come back on their next request
                    self._tokens.clear()
                self._tokens[hashed] = (contributor, time.monotonic() + self.token_seconds)
            else:
                self._tokens.pop(hashed, None)
        return contributor, contribute

    def admit(self, token: str, rate: float, burst: float) -> tuple[str, bool, float] | None:
        """``authenticate``, then the contributor's rate limit: (id, contribute, seconds to
        wait), or None for an unknown token. One round trip for a token seen recently."""
        found = self.authenticate(token)
        if found is None:
            return None
        return (*found, self.take_token("contributor:" + found[0], rate, burst))

    def set_contribute(self, contributor: str, contribute: bool) -> None:
        self.backend.run("UPDATE contributors SET contribute = ? WHERE id = ?", (int(contribute), contributor),
                         writes=True)
        if not contribute:
            with self._tokens_lock:
                self._tokens = {h: entry for h, entry in self._tokens.items() if entry[0] != contributor}

    def take_token(self, key: str, rate: float, burst: float) -> float:
        """A token bucket per ``key``: ``rate`` requests a second, bursts up to ``burst``; 0 if
        the request may go ahead, else the seconds to wait. Kept as volatile state, so on
        PostgreSQL every worker shares one budget; one statement, on the database's clock."""
        # the time since the bucket was last used, never negative: a clock stepped back (an RTC
        # reset, a manual change) must not drain the bucket for hours
        elapsed = "CASE WHEN excluded.at > b.at THEN excluded.at - b.at ELSE 0 END"
        refilled = f"{self.backend.least}(?, b.tokens + ({elapsed}) * ?)"
        with self.backend.volatile() as db:
            row = db.execute(
                f"INSERT INTO rate_buckets AS b (key, tokens, at, allowed) VALUES (?, ? - 1, {self.backend.now}, TRUE) "
                f"ON CONFLICT (key) DO UPDATE SET tokens = {refilled} - CASE WHEN {refilled} >= 1 THEN 1 ELSE 0 END, "
                f"allowed = {refilled} >= 1, at = excluded.at RETURNING allowed, tokens",
                (key[:80], burst, burst, rate, burst, rate, burst, rate),
            ).fetchone()
        return 0.0 if row.allowed else (1 - row.tokens) / rate

    def forget_idle_buckets(self, idle_seconds: float) -> None:
        """Drop buckets untouched for ``idle_seconds`` (a full bucket is the default anyway)."""
        with self.backend.volatile() as db:
            db.execute(f"DELETE FROM rate_buckets WHERE at < {self.backend.now} - ?", (idle_seconds,))

    # --- observations --------------------------------------------------------------------

    def ingest(self, contributor: str, observations: Iterable[Observation]) -> list[dict]:
        """Store and match a batch at once (``accept`` then ``settle`` until nothing waits)."""
        results = self.accept(contributor, observations)
        while self.settle():
            pass
        return results

    def accept(self, contributor: str, observations: Iterable[Observation]) -> list[dict]:
        """Take a batch in durably, unmatched: per item ``accepted``, ``duplicate`` (same id
        again: idempotent) or ``rejected`` with a reason. Cheap: matching is ``settle``'s; a
        few statements whatever the batch's size. Raises ``ContributionOff`` (storing nothing)
        when the contributor has turned contribution off."""
        [outcome] = self.accept_many([(contributor, observations)])
        if isinstance(outcome, ContributionOff):
            raise outcome
        return outcome

    def accept_many(self, batches: Sequence[tuple[str, Iterable[Observation]]]) -> list[list[dict] | ContributionOff]:
        """``accept`` of several contributors' batches in one transaction of a few statements
        (group commit: one durable commit for all, where each alone paid its own fsync and
        round trips): per batch its results, or ``ContributionOff`` for one whose contributor
        turned contribution off (nothing of it stored; the others are). Answered exactly as the
        batches one after another would be: an id sent in two of them is accepted once, in the
        first, and is the second's duplicate (same contributor) or refusal (another)."""
        now = time.time()
        prepared = [(contributor, list(observations)) for contributor, observations in batches]
        rows = [self._arrival_rows(contributor, observations, now) for contributor, observations in prepared]
        with self._transaction() as db:
            where, params = self.backend.any_of("id", sorted({contributor for contributor, _ in prepared}))
            allowed = {row.id for row in db.execute(f"SELECT id, contribute FROM contributors WHERE {where}", params)
                       if row.contribute}
            taking = [number for number, (contributor, _) in enumerate(prepared) if contributor in allowed]
            owners = self._owners(db, list(dict.fromkeys(o.id for number in taking for o in prepared[number][1])))
            fresh, picked_by = [], {}  # id -> the batch that takes it (the first to send it)
            for number in taking:
                for row in rows[number]:
                    if row[1] not in owners and row[1] not in picked_by:
                        picked_by[row[1]] = number
                        fresh.append(row)
            # ON CONFLICT: the same id at another worker at this very moment (a re-send)
            inserted = {row.id for row in self.backend.each(
                db, f"INSERT INTO arrivals (items, {_CARRIED_LIST}) SELECT d.items, "
                f"{', '.join('d.' + name for name in _CARRIED)} FROM {{rows}} WHERE true "
                "ON CONFLICT (id) DO NOTHING RETURNING id", {"items": "blob", **_CARRIED}, fresh)}
            if picked_by.keys() - inserted:
                owners.update(self._owners(db, sorted(picked_by.keys() - inserted)))
        for identifier in inserted:  # for the batches after the one that took it
            owners[identifier] = prepared[picked_by[identifier]][0]
        outcomes: list[list[dict] | ContributionOff] = []
        for number, (contributor, observations) in enumerate(prepared):
            if contributor not in allowed:
                outcomes.append(ContributionOff(contributor))
                continue
            results = []
            answered: set[str] = set()
            for o in observations:
                if o.id in inserted and picked_by[o.id] == number and o.id not in answered:
                    results.append({"id": o.id, "status": "accepted"})
                elif owners.get(o.id) == contributor:
                    results.append({"id": o.id, "status": "duplicate"})
                else:
                    results.append({"id": o.id, "status": "rejected", "reason": "id: already used by another contributor"})
                answered.add(o.id)
            outcomes.append(results)
        return outcomes

    @staticmethod
    def _arrival_rows(contributor: str, observations: list[Observation], now: float) -> list[tuple]:
        rows = []
        for o in observations:
            m, a = o.metadata, o.analysis
            rows.append((
                fingerprint_packed("fingerprint.chromaprint", o.fingerprint.chromaprint), o.id,
                contributor, o.fingerprint.duration, m.artist, m.title, m.album, m.isrc, m.catalog_number, a.key,
                a.camelot, m.duration, a.bpm, a.loudness_lufs,
                struct.pack(f"<{EMBEDDING_LENGTH}f", *a.embedding) if a.embedding else None, a.analyzer_version, now,
                ",".join(a.genres) if a.genres else None, ",".join(a.moods) if a.moods else None))
        return rows

    def _owners(self, db, ids: list[str]) -> dict[str, str]:
        """observation id -> its contributor, for those of ``ids`` already stored or waiting."""
        if not ids:
            return {}
        where, params = self.backend.any_of("id", ids)
        return {row.id: row.contributor for row in db.execute(
            f"SELECT id, contributor FROM observations WHERE {where} UNION ALL "
            f"SELECT id, contributor FROM arrivals WHERE {where}", params + params)}

    def settle(self, limit: int = 20) -> int:
        """Match up to ``limit`` waiting arrivals (oldest first) into observations and update the
        consensus of every recording they touch; returns how many were claimed."""
        now = time.time()
        # claim a slice (settlers elsewhere skip it), and see how far fingerprints were stored
        rows = self._claim(lambda sql, params: self.backend.run(sql, params, writes=True), limit, now)
        if not rows:
            return 0
        # the costly part, outside the lock: candidates (one statement) and their scores
        [seen] = self.backend.run("SELECT value FROM counters WHERE counter = 'fingerprint'")
        claimed = _Claimed(rows)
        prepared = dict(zip(claimed.arrivals, self._candidates(self.backend.run, claimed.queries)))
        with self.backend.placing() as db:  # one placer at a time, cluster-wide
            self._place(db, claimed, prepared, seen.value, now)
        return len(rows)

    def settle_now(self, limit: int) -> dict[str, int] | None:
        """Match up to ``limit`` waiting arrivals only if that needs no wait: the matching lock
        taken without waiting (None, nothing done, when another placer holds it), then the slice
        claimed, scored and placed in that one transaction (the lock is held while it is scored:
        meant for a lone request's small batch). Returns observation id -> recording for each
        arrival it placed."""
        now = time.time()
        try:
            with self.backend.placing(wait=False) as db:
                def execute(sql: str, params: Sequence = ()) -> list:
                    return db.execute(sql, params).fetchall()
                rows = self._claim(execute, limit, now)
                if not rows:
                    return {}
                [seen] = execute("SELECT value FROM counters WHERE counter = 'fingerprint'")
                claimed = _Claimed(rows)
                prepared = dict(zip(claimed.arrivals, self._candidates(execute, claimed.queries)))
                placement = self._place(db, claimed, prepared, seen.value, now)
        except Busy:
            return None
        return {claimed.ids[seq]: recording for seq, recording, _ in placement.placed}

    def _claim(self, run: Callable[..., list], limit: int, now: float) -> list:
        """The oldest ``limit`` arrivals nobody claimed (or whose claim ran out), claimed."""
        return run(
            "UPDATE arrivals SET claimed_at = ? WHERE seq IN (SELECT seq FROM arrivals "
            f"WHERE claimed_at IS NULL OR claimed_at < ? ORDER BY seq LIMIT ?{self.backend.skip_locked}) "
            "RETURNING seq, id, items, fingerprint_duration, isrc", (now, now - self.claim_seconds, limit))

    def _place(self, db, claimed: _Claimed, prepared: dict[int, list[Candidate]], seen: int,
               now: float) -> _Placement:
        """Place a claimed, scored slice; ``db`` holds the matching lock. Fingerprints others
        placed since ``seen`` (the counter when the slice was scored) are asked for again."""
        queries, terms = claimed.queries, claimed.terms
        counters = {row.counter: row.value for row in db.execute(
            "SELECT counter, value FROM counters WHERE counter IN ('fingerprint', 'recording')")}
        where, params = self.backend.any_of("seq", list(claimed.arrivals))
        alive = {row.seq for row in db.execute(f"SELECT seq FROM arrivals WHERE {where}", params)}
        # erased since they were scored? and their recordings' ISRCs now (a weaker match suffices
        # when they agree)
        known: dict[int, str | None] = {}
        scored = sorted({c.fingerprint for candidates in prepared.values() for c in candidates})
        if scored:
            where, params = self.backend.any_of("f.id", scored)
            known = {row.id: row.isrc for row in db.execute(
                f"SELECT f.id, r.isrc FROM fingerprints f JOIN recordings r ON r.id = f.recording WHERE {where}",
                params)}
        if counters["fingerprint"] > seen:  # others placed fingerprints since we looked: ask again
            later = self._candidates(lambda sql, p: db.execute(sql, p).fetchall(), queries, after=seen)
        else:
            later = [[] for _ in queries]
        placement = _Placement(counters["fingerprint"], counters["recording"])
        for candidates in (*prepared.values(), *later):
            for c in candidates:
                placement.isrc[c.recording] = known.get(c.fingerprint, c.row.isrc if c.row else None)
        for (seq, (items, duration, isrc)), found_later in zip(claimed.arrivals.items(), later):
            if seq not in alive:  # settled by another worker whose claim outlived ours, or erased
                continue
            candidates = [c for c in prepared[seq] if c.fingerprint in known] + found_later
            candidates += placement.candidates(items, duration, terms[seq])  # this slice's own new ones
            placement.place(seq, sorted(candidates, key=_best_first), items, terms[seq], duration, isrc)
        self._write_placement(db, placement, now)
        return placement

    def _write_placement(self, db, placement: _Placement, now: float) -> None:
        """A slice's decisions, in a few statements whatever its size."""
        each = self.backend.each
        each(db, "UPDATE counters SET value = d.value FROM {rows} WHERE counters.counter = d.counter",
             {"counter": "text", "value": "bigint"},
             [("fingerprint", placement.next_fingerprint), ("recording", placement.next_recording)])
        each(db, "INSERT INTO recordings (id, updated_at) SELECT d.id, d.updated_at FROM {rows}",
             {"id": "bigint", "updated_at": "real"}, [(recording, now) for recording in placement.new_recordings])
        each(db, "INSERT INTO fingerprints (id, recording, items, terms, duration) "
                 "SELECT d.id, d.recording, d.items, d.terms, d.duration FROM {rows}",
             {"id": "bigint", "recording": "bigint", "items": "blob", "terms": "blob", "duration": "real"},
             [(f, recording, matching.pack(items), matching.pack(terms), duration)
              for f, (recording, items, duration, terms) in placement.new_prints.items()])
        each(db, "INSERT INTO fingerprint_terms (term, fingerprint) SELECT d.term, d.fingerprint FROM {rows} "
                 "WHERE true ON CONFLICT DO NOTHING", {"term": "int", "fingerprint": "bigint"},
             sorted((term, f) for f, (_, _, _, terms) in placement.new_prints.items() for term in set(terms)))
        # ON CONFLICT: a re-send accepted while its first copy was being settled
        each(db, f"INSERT INTO observations (recording, fingerprint, {_CARRIED_LIST}) SELECT d.recording, "
                 f"d.fingerprint, {', '.join('a.' + name for name in _CARRIED)} FROM {{rows}} "
                 "JOIN arrivals a ON a.seq = d.seq WHERE true ON CONFLICT (id) DO NOTHING",
             {"seq": "bigint", "recording": "bigint", "fingerprint": "bigint"}, placement.placed)
        if placement.placed:
            where, params = self.backend.any_of("seq", [seq for seq, _, _ in placement.placed])
            db.execute(f"DELETE FROM arrivals WHERE {where}", params)
        added: dict[int, int] = defaultdict(int)
        for _, recording, _ in placement.placed:
            added[recording] += 1
        self._stamp(db, self._touch(db, sorted(added.items()), set(placement.new_recordings), now))

    def waiting(self) -> int:
        """Arrivals not matched yet."""
        return self.backend.run("SELECT COUNT(*) AS waiting FROM arrivals")[0].waiting

    def _candidates(self, run: Callable[[str, Sequence], list], queries: Sequence[tuple[list[int], float, list[int]]],
                    after: int = 0) -> list[list[Candidate]]:
        """Per query (items, duration, index terms): the stored fingerprints like it (ids above
        ``after``), scored, best first; one statement for all of them."""
        numbers: list[int] = []
        terms: list[int] = []
        minimums: list[int] = []
        for n, (_, _, query_terms) in enumerate(queries):  # column by column (a slice's are thousands long)
            numbers += [n] * len(query_terms)
            terms += query_terms
            minimums += [matching.minimum_shared_terms(query_terms)] * len(query_terms)
        if not terms:
            return [[] for _ in queries]
        table, params = self.backend.table_of_columns({"n": "int", "term": "int", "minimum": "int"},
                                                      (numbers, terms, minimums), alias="q")
        near: dict[int, list] = defaultdict(list)
        for row in run(_CANDIDATES.replace("{queries}", table), (*params, after)):
            near[row.n].append(row)
        return [_scored(items, duration, near.get(n, [])) for n, (items, duration, _) in enumerate(queries)]

    # --- consensus -----------------------------------------------------------------------

    def _touch(self, db, added: list[tuple[int, int]], created: set[int], now: float) -> list[int]:
        """Recordings got new observations (id, how many): re-derive those just created, small,
        or grown by an eighth since they were derived; mark the others stale for ``refresh``.
        (The count is kept in the row: counting the observations would cost what debouncing
        saves. The UPDATE takes each row's lock before its observations are read.) Returns the
        recordings whose consensus changed, for ``_stamp``."""
        counted = self.backend.each(
            db, "UPDATE recordings SET observations = recordings.observations + d.added, "
                "stale_since = COALESCE(recordings.stale_since, d.now) FROM {rows} WHERE recordings.id = d.id "
                "RETURNING recordings.id, recordings.observations, recordings.derived_observations",
            {"id": "bigint", "added": "bigint", "now": "real"}, [(recording, n, now) for recording, n in added])
        due = [row.id for row in counted if row.id in created or row.derived_observations < self.exact_below
               or 8 * (row.observations - row.derived_observations) >= row.derived_observations]
        return self._derive(db, due, now, locked=True)

    def refresh(self, limit: int = 20, now: float | None = None) -> int:
        """Re-derive up to ``limit`` recordings whose consensus has been stale long enough
        (``debounce_seconds`` per 64 observations, at most 10 minutes); returns how many."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            delay = "CASE WHEN derived_observations * ? < 600 THEN derived_observations * ? ELSE 600 END"
            due = [row.id for row in db.execute(
                f"SELECT id FROM recordings WHERE stale_since IS NOT NULL AND stale_since + {delay} < ? "
                f"ORDER BY stale_since LIMIT ?{self.backend.skip_locked}",
                (self.debounce_seconds / 64, self.debounce_seconds / 64, now, limit))]
            self._stamp(db, self._derive(db, due, now, locked=True))
        return len(due)

    def _derive(self, db, recordings: list[int], now: float, *, locked: bool = False) -> list[int]:
        """The consensus of ``recordings`` from their observations, votes counted per contributor;
        a recording left without observations is dropped. ``locked``: this transaction already
        holds their rows' locks (else they are taken first: an observation placed meanwhile is
        then seen). Returns those whose consensus changed (the caller ``_stamp``s them)."""
        if not recordings:
            return []
        recordings = sorted(set(recordings))
        where, params = self.backend.any_of("id", recordings)
        lock = self.backend.for_update if not locked else ""
        before = {row.id: tuple(row[1:]) for row in db.execute(
            f"SELECT id, {', '.join(CONSENSUS_FIELDS)}, contributors FROM recordings WHERE {where} ORDER BY id{lock}",
            params)}
        where, params = self.backend.any_of("recording", recordings)
        observed: dict[int, list] = defaultdict(list)
        for row in db.execute(f"SELECT recording, {_OBSERVED} FROM observations WHERE {where}", params):
            observed[row.recording].append(row)
        self.derived_rows += sum(len(rows) for rows in observed.values())
        self._drop_recordings(db, [recording for recording in recordings if recording not in observed])
        updates, changed = [], []
        for recording, rows in observed.items():
            consensus = consensus_of(rows)
            derived = (*(consensus[name] for name in CONSENSUS_FIELDS), consensus["contributors"])
            updates.append((recording, *derived, now, len(rows)))
            if before.get(recording) != derived:
                changed.append(recording)
        self.backend.each(
            db, "UPDATE recordings SET " + ", ".join(f"{name} = d.{name}" for name in CONSENSUS_FIELDS)
            + ", contributors = d.contributors, updated_at = d.updated_at, observations = d.observations, "
            "derived_observations = d.observations, stale_since = NULL FROM {rows} WHERE recordings.id = d.id",
            {"id": "bigint", **_CONSENSUS_TYPES, "contributors": "bigint", "updated_at": "real", "observations": "bigint"},
            updates)
        return changed

    def _stamp(self, db, recordings: list[int]) -> None:
        """Number the change of these recordings' consensus for the change feed (follow.py). The
        counter is taken last in the transaction and its row stays locked until the commit, so a
        later number never commits before an earlier one: a reader that sees change N has seen
        every change up to N (and nothing else is waited for while it is held: no deadlock)."""
        if not recordings:
            return
        number = db.execute(
            "UPDATE counters SET value = value + 1 WHERE counter = 'consensus' RETURNING value").fetchone().value
        where, params = self.backend.any_of("id", sorted(set(recordings)))
        db.execute(f"UPDATE recordings SET changed = ? WHERE {where}", (number, *params))

    def _drop_recordings(self, db, recordings: list[int]) -> None:
        if not recordings:
            return
        where, params = self.backend.any_of("recording", recordings)
        self._drop_fingerprints(db, [row.id for row in db.execute(f"SELECT id FROM fingerprints WHERE {where}", params)])
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
            self._delete_terms(db, [(term, row.id) for row in rows for term in matching.unpack(row.terms)])
        else:
            self.backend.each(db, "INSERT INTO erased_fingerprints (id, terms) SELECT d.id, d.terms FROM {rows}",
                              {"id": "bigint", "terms": "blob"}, [(row.id, row.terms) for row in rows])
        db.execute(f"DELETE FROM fingerprints WHERE {where}", params)

    def _delete_terms(self, db, pairs: list[tuple[int, int]]) -> None:
        """Index rows (term, fingerprint), in term order (neighbouring B-tree pages)."""
        self.backend.each(db, "DELETE FROM fingerprint_terms WHERE (term, fingerprint) IN "
                              "(SELECT d.term, d.fingerprint FROM {rows})",
                          {"term": "int", "fingerprint": "bigint"}, sorted(set(pairs)))

    def sweep(self) -> int:
        """Delete some index terms of erased fingerprints; 0 when none are left. A few are
        deleted by their own terms; many, in one pass over the index by term range, so each
        index page is rewritten once, not once per fingerprint. Erasures during a pass wait
        for the next one."""
        with self._transaction() as db:
            position = db.execute(
                f"SELECT value FROM counters WHERE counter = 'sweep_term'{self.backend.for_update}").fetchone().value
            pass_number = db.execute("SELECT value FROM counters WHERE counter = 'sweep_pass'").fetchone().value
            if position == 0:
                pending = db.execute("SELECT id, terms FROM erased_fingerprints ORDER BY id LIMIT ?",
                                     (self.sweep_inline + 1,)).fetchall()
                if not pending:
                    return 0
                if len(pending) <= self.sweep_inline:  # a few: by their own terms
                    self._delete_terms(db, [(term, row.id) for row in pending for term in matching.unpack(row.terms)])
                    where, params = self.backend.any_of("id", [row.id for row in pending])
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
        """Per fingerprint (items, duration): its recording with the consensus, or None. One
        statement for the whole request, on the standby when there is one that keeps up."""
        queries = [(items, duration, matching.index_terms(items)) for items, duration in fingerprints]
        found = self._lagging(lambda backend: self._candidates(backend.run, queries))
        return [{"score": round(candidates[0].score, 3), **recording_dict(candidates[0].row)}
                if candidates and candidates[0].score >= matching.LOOKUP_HIT else None for candidates in found]

    def lookup_encoded(self, fingerprints: list[tuple[str, float]]) -> list[dict | None]:
        """``lookup`` of fingerprints as the API sends them (guarded already: each decodes),
        decoded here, on the database's thread, not on the server's event loop."""
        return self.lookup([(fingerprint_items(f"fingerprints[{index}].chromaprint", chromaprint), duration)
                            for index, (chromaprint, duration) in enumerate(fingerprints)])

    def recording(self, recording: int) -> dict:
        with self._reading() as db:
            return self._recording(db, recording)

    @staticmethod
    def _recording(db, recording: int) -> dict:
        row = db.execute(f"SELECT id AS recording, {', '.join(CONSENSUS_FIELDS)}, contributors FROM recordings "
                         "WHERE id = ?", (recording,)).fetchone()
        return recording_dict(row)

    def delete_contributor_observations(self, contributor: str) -> int:
        """Erase every observation of ``contributor``, drop what no one else holds, re-derive
        the rest at once (an erasure never waits for a debounce), remember when and how many.
        Idempotent: a second call erases 0. Under the matching lock: no slice being placed can
        attach to a recording this drops."""
        now = time.time()
        with self.backend.placing() as db:
            held = db.execute("SELECT DISTINCT recording, fingerprint FROM observations WHERE contributor = ?",
                              (contributor,)).fetchall()
            recordings = sorted({row.recording for row in held})
            fingerprints = sorted({row.fingerprint for row in held})
            count = db.execute("DELETE FROM observations WHERE contributor = ?", (contributor,)).rowcount
            count += db.execute("DELETE FROM arrivals WHERE contributor = ?", (contributor,)).rowcount
            if fingerprints:
                where, params = self.backend.any_of("f.id", fingerprints)
                self._drop_fingerprints(db, [row.id for row in db.execute(
                    f"SELECT f.id FROM fingerprints f WHERE {where} AND NOT EXISTS "
                    "(SELECT 1 FROM observations o WHERE o.fingerprint = f.id)", params)])
            changed = self._derive(db, recordings, now)  # those left empty are dropped
            db.execute(
                "UPDATE contributors SET deleted_at = ?, deleted_count = COALESCE(deleted_count, 0) + ? WHERE id = ?",
                (now, count, contributor),
            )
            self._stamp(db, changed)  # last: see _stamp
        return count

    def export(self, contributor: str) -> dict:
        """Everything held about ``contributor`` (may lag: read from the standby when there is one)."""
        return self._lagging(lambda backend: self._export(backend, contributor))

    @staticmethod
    def _export(backend, contributor: str) -> dict:
        import chromaprint

        fields = ("{t}.id, {recording} AS recording, items, {t}.fingerprint_duration, artist, title, album, isrc, "
                  "catalog_number, {t}.duration, bpm, key, camelot, loudness_lufs, embedding, analyzer_version, "
                  "received_at, genres, moods")
        with backend.reading() as db:
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
        for o in sorted(matched + waiting, key=lambda row: (row.received_at, row.id)):
            observations.append({
                "id": o.id,
                "recording": o.recording,
                "fingerprint": {"chromaprint": chromaprint.encode_fingerprint(matching.unpack(o.items), 1).decode(),
                                "duration": o.fingerprint_duration},
                "metadata": {name: getattr(o, name) for name in ("artist", "title", "album", "isrc", "catalog_number",
                                                                 "duration")},
                "analysis": {"bpm": o.bpm, "key": o.key, "camelot": o.camelot, "loudness_lufs": o.loudness_lufs,
                             "embedding": list(struct.unpack(f"<{EMBEDDING_LENGTH}f", o.embedding)) if o.embedding else None,
                             "genres": o.genres.split(",") if o.genres else None,
                             "moods": o.moods.split(",") if o.moods else None,
                             "analyzer_version": o.analyzer_version},
                "received_at": o.received_at,
            })
        return {
            "contributor": row._asdict() | {"contribute": bool(row.contribute)},
            "observations": observations,
            "profile": _profile_dict(profile) if profile else None,
        }

    # --- profiles (recommendations: recommend.py) -------------------------------------------

    def put_profile(self, contributor: str, profile: Profile) -> None:
        vector = profile_vector(profile)
        self.backend.run(
            "INSERT INTO profiles (contributor, track_count, vector, updated_at, embedding_version) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (contributor) DO UPDATE SET track_count = excluded.track_count, "
            "vector = excluded.vector, updated_at = excluded.updated_at, embedding_version = excluded.embedding_version",
            (contributor, profile.track_count, struct.pack(f"<{PROFILE_LENGTH}f", *vector), time.time(),
             profile.embedding_version), writes=True)

    # --- operating it ----------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        with self._reading() as db:
            return {table: db.execute(f"SELECT COUNT(*) AS n FROM {table}").fetchone().n
                    for table in ("contributors", "recordings", "fingerprints", "observations", "profiles", "arrivals")}

    def backlog(self) -> dict[str, float]:
        """What waits to be matched: how many arrivals, and the age of the oldest (seconds)."""
        [row] = self.backend.run("SELECT COUNT(*) AS waiting, MIN(received_at) AS oldest FROM arrivals")
        return {"waiting": row.waiting, "oldest_seconds": round(max(0.0, time.time() - row.oldest), 3) if row.oldest else 0.0}

    def check_replica(self) -> dict | None:
        """Measure the standby's lag now (the server calls this every second); its status."""
        if self.replica is None:
            return None
        self.replica.check()
        return self.replica.status()

    def size(self) -> int:
        """Bytes the database takes on disk."""
        return self.backend.size()


class _Claimed:
    """A slice of claimed arrivals, unpacked: seq -> (items, duration, isrc), their index terms, the
    queries for ``_candidates`` (in seq order) and their observation ids."""

    def __init__(self, claimed: list) -> None:
        claimed = sorted(claimed, key=lambda row: row.seq)
        self.arrivals = {row.seq: (matching.unpack(row.items), row.fingerprint_duration, row.isrc) for row in claimed}
        self.ids: dict[int, str] = {row.seq: row.id for row in claimed}
        self.terms = {seq: matching.index_terms(items) for seq, (items, _, _) in self.arrivals.items()}
        self.queries = [(items, duration, self.terms[seq]) for seq, (items, duration, _) in self.arrivals.items()]


class _Placement:
    """A slice's placement decisions, made in memory under the matching lock: which recording
    and fingerprint each arrival belongs to, the new ones numbered from the counters."""

    def __init__(self, last_fingerprint: int, last_recording: int) -> None:
        self.next_fingerprint, self.next_recording = last_fingerprint, last_recording
        self.new_recordings: list[int] = []
        self.new_prints: dict[int, tuple[int, list[int], float, list[int]]] = {}  # id -> (recording, items, duration, terms)
        self._index: dict[int, list[int]] = defaultdict(list)  # term -> this slice's new fingerprints
        self.placed: list[tuple[int, int, int]] = []  # (arrival seq, recording, fingerprint)
        self.isrc: dict[int, str | None] = {}  # recording -> its ISRC now

    def candidates(self, items: list[int], duration: float, terms: list[int]) -> list[Candidate]:
        """``Store._candidates`` among this slice's own new fingerprints."""
        shared: dict[int, int] = defaultdict(int)
        for term in terms:
            for fingerprint in self._index.get(term, ()):
                shared[fingerprint] += 1
        minimum = matching.minimum_shared_terms(terms)
        rows = sorted(((f, n) for f, n in shared.items() if n >= minimum), key=lambda row: (-row[1], row[0]))[:10]
        near = [_InMemory(f, self.new_prints[f][0], self.new_prints[f][1], self.new_prints[f][2])
                for f, n in rows if n >= rows[0][1] / 2]
        return _scored(items, duration, near)

    def place(self, seq: int, candidates: list[Candidate], items: list[int], terms: list[int], duration: float,
              isrc: str | None) -> None:
        if candidates and candidates[0].score >= matching.SAME_FINGERPRINT:
            self.placed.append((seq, candidates[0].recording, candidates[0].fingerprint))
            return
        for candidate in candidates:
            same_isrc = isrc is not None and self.isrc.get(candidate.recording) == isrc
            if candidate.score >= (matching.SAME_RECORDING_WITH_ISRC if same_isrc else matching.SAME_RECORDING):
                self.placed.append((seq, candidate.recording, self._new_print(candidate.recording, items, duration, terms)))
                return
        self.next_recording += 1
        self.new_recordings.append(self.next_recording)
        self.isrc[self.next_recording] = None  # a new recording has no consensus yet
        self.placed.append((seq, self.next_recording, self._new_print(self.next_recording, items, duration, terms)))

    def _new_print(self, recording: int, items: list[int], duration: float, terms: list[int]) -> int:
        self.next_fingerprint += 1
        self.new_prints[self.next_fingerprint] = (recording, items, duration, terms)
        for term in terms:
            self._index[term].append(self.next_fingerprint)
        return self.next_fingerprint


class _InMemory(NamedTuple):
    """A slice's own new fingerprint, shaped like a row of the candidates statement."""
    fingerprint: int
    recording: int
    items: list[int]
    fingerprint_duration: float
    isrc: None = None


def _scored(items: list[int], duration: float, near: Sequence) -> list[Candidate]:
    """The ``near`` fingerprints (rows with fingerprint, recording, items, fingerprint_duration;
    items packed or not) within the duration tolerance, scored, best first."""
    scored: list[Candidate] = []
    packed = matching.pack(items) if near else b""
    for row in near:
        if abs(row.fingerprint_duration - duration) <= matching.DURATION_TOLERANCE:
            stored = bytes(row.items) if isinstance(row.items, memoryview) else row.items
            scored.append(Candidate(matching.score(items, stored, a_bytes=packed), row.fingerprint, row.recording,
                                    None if isinstance(row, _InMemory) else row))
            if scored[-1].score >= matching.SAME_FINGERPRINT:
                break  # the same fingerprint: nothing can do better (scores cost ~1 ms each)
    return sorted(scored, key=_best_first)


def _best_first(candidate: Candidate) -> tuple[float, int, int]:
    return -candidate.score, -candidate.fingerprint, -candidate.recording


def recording_dict(row) -> dict:
    """A recording and its consensus as the API answers it, from a row naming ``recording``,
    ``contributors`` and the consensus fields."""
    return {
        "recording": row.recording,
        "contributors": row.contributors,
        "metadata": {name: getattr(row, name) for name in ("artist", "title", "album", "isrc", "catalog_number", "duration")},
        "analysis": {**{name: getattr(row, name) for name in ("bpm", "key", "camelot", "loudness_lufs")},
                     **{name: getattr(row, name).split(",") if getattr(row, name) else None for name in ("genres", "moods")}},
    }


def consensus_of(rows: Sequence[Observed]) -> dict:
    """Pure: observations (read by name: ``Observed``'s fields) -> the consensus. Only each
    contributor's newest analysis counts (an upgraded agent sends its new figures as new
    observations: its superseded ones must not vote beside them). Text fields: the value most
    contributors agree on (ties: the smallest value); numbers: the median of each contributor's
    median, BPM after folding octave errors onto the others; camelot follows the chosen key."""
    newest: dict[str, tuple[float, str]] = {}
    for row in rows:
        if row.contributor not in newest or row.received_at > newest[row.contributor][0]:
            newest[row.contributor] = (row.received_at, row.analyzer_version)
    rows = [row for row in rows if row.analyzer_version == newest[row.contributor][1]]
    by_contributor: dict[str, list] = defaultdict(list)
    for row in rows:
        by_contributor[row.contributor].append(row)
    result: dict = {"contributors": len(by_contributor)}
    for name in ("artist", "title", "album", "isrc", "catalog_number", "key"):
        result[name] = _vote({(contributor, getattr(row, name)) for contributor, group in by_contributor.items()
                              for row in group if getattr(row, name) is not None})
    result["camelot"] = _vote({(c, row.camelot) for c, group in by_contributor.items() for row in group
                               if row.key == result["key"] and row.camelot})
    result["duration"] = _median_of_medians(by_contributor, "duration")
    result["loudness_lufs"] = _median_of_medians(by_contributor, "loudness_lufs")
    raw_bpms = [row.bpm for row in rows if row.bpm]
    if raw_bpms:
        reference = statistics.median(raw_bpms)
        folded = {c: [fold_octave(row.bpm, reference) for row in group if row.bpm] for c, group in by_contributor.items()}
        per_contributor = [statistics.median(values) for values in folded.values() if values]
        result["bpm"] = round(statistics.median(per_contributor), 2)
    else:
        result["bpm"] = None
    for name in ("genres", "moods"):
        result[name] = _words_vote(by_contributor, name)
    return result


def _words_vote(by_contributor: dict[str, list], name: str) -> str | None:
    """The sound model's words most contributors heard: each contributor names the words of its
    newest observation that names any (not the union of everything it ever sent); the words named by at least half of them, most named first (ties:
    alphabetical), at most 3; when none is, the most named one. Comma-separated, as stored."""
    named: dict[str, int] = defaultdict(int)
    for group in by_contributor.values():
        heard = [row for row in group if getattr(row, name)]
        if heard:  # the newest observation that names words (a re-analysis replaces, never adds to, the last)
            newest = max(heard, key=lambda row: (row.received_at, getattr(row, name)))  # ties (one batch): by words
            for word in set(getattr(newest, name).split(",")):
                named[word] += 1
    if not named:
        return None
    ranked = sorted(named, key=lambda word: (-named[word], word))
    agreed = [word for word in ranked if 2 * named[word] >= len(by_contributor)] or ranked[:1]
    return ",".join(agreed[:3])


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


def _median_of_medians(by_contributor: dict[str, list], name: str) -> float | None:
    medians = [statistics.median(values) for values in
               ([getattr(row, name) for row in group if getattr(row, name) is not None]
                for group in by_contributor.values()) if values]
    return round(statistics.median(medians), 2) if medians else None


def profile_vector(profile: Profile) -> list[float]:
    return [*profile.tempo_histogram, *profile.key_histogram, *profile.loudness_histogram,
            *(profile.embedding_centroid or [0.0] * EMBEDDING_LENGTH)]


def _profile_dict(row) -> dict:
    values = struct.unpack(f"<{PROFILE_LENGTH}f", row.vector)
    key_start = TEMPO_BINS
    loudness_start = key_start + KEY_BINS
    embedding_start = loudness_start + LOUDNESS_BINS
    return {"track_count": row.track_count, "tempo_histogram": list(values[:key_start]),
            "key_histogram": list(values[key_start:loudness_start]),
            "loudness_histogram": list(values[loudness_start:embedding_start]),
            "embedding_centroid": list(values[embedding_start:]), "updated_at": row.updated_at}
