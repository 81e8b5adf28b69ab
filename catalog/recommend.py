"""Recommendations: what the DJs whose libraries are most like yours hold, and you do not.

Two things tell the catalog what a DJ likes. What a contributing DJ *holds*: their observations,
matched into recordings. And the *taste profile* every agent sends, contributing or not:
histograms of tempo, key and loudness and the centroid of the sound embeddings — the only thing
known of a DJ who does not contribute.

1. **Neighbours.** Every DJ who holds something is compared with you. By holdings: the recordings
   you both hold, each weighted by how rare it is (``log((N + 1) / holders)``: what everybody
   holds says little), over the geometric mean of the two library sizes. By profile: each part
   of the profile centred on the community's mean (the shape every library shares says nothing
   either), compared by cosine, the parts averaged with fixed weights; the embedding centroids
   only between profiles of one embedding version (``profiles.embedding_version``: version 3,
   the sound model's, is another space than version 2), centred among that version's. The two
   are blended by how much you hold (``held / (held + 20)`` on holdings): a non-contributor is
   known by profile alone. The nearest ``neighbours_for(N)`` are kept: about the square root of the community
   (3 in a community of 12, 10 among 100, 32 among 1,000), so a small community is not "everybody".
2. **Candidates.** The recordings the neighbours hold, each scored by the similarities of the
   neighbours holding it over ``holders ** POPULARITY_DAMPING`` (a recording held by everyone is
   not a discovery).
3. **Never yours.** Nothing you hold, nor any recording whose fingerprint matches one of yours
   at the look-up threshold (the catalog may hold the same music as two recordings).
4. **Private.** Only recordings held by at least ``MIN_HOLDERS`` contributors; an answer never
   names another contributor, and its reason gives only counts and an average.

Each recommendation carries its reason in words ("held by 4 DJs whose libraries overlap yours
by 31 %"). All of it is plain SQL over the store's tables, on SQLite and PostgreSQL alike; one
request reads the holdings of the DJs it compares (fine for thousands of contributors; a larger
community wants the neighbours precomputed).
"""

from __future__ import annotations

import math
import struct
from collections import defaultdict
from dataclasses import dataclass

from cratesense.catalog import matching
from cratesense.catalog.contract import EMBEDDING_LENGTH, KEY_BINS, LOUDNESS_BINS, PROFILE_LENGTH, TEMPO_BINS
from cratesense.catalog.store import CONSENSUS_FIELDS, Store, recording_dict

MIN_HOLDERS = 3  # a recommendation never reveals a recording fewer DJs hold
POPULARITY_DAMPING = 0.5
HOLDINGS_HALF = 20  # holdings and profile weigh the same for a DJ who holds this many recordings
# the profile's parts (start, end) and their weights: the sound tells the most about taste
_PARTS = (
    ((0, TEMPO_BINS), 0.25),
    ((TEMPO_BINS, TEMPO_BINS + KEY_BINS), 0.1),
    ((TEMPO_BINS + KEY_BINS, TEMPO_BINS + KEY_BINS + LOUDNESS_BINS), 0.15),
    ((TEMPO_BINS + KEY_BINS + LOUDNESS_BINS, PROFILE_LENGTH), 0.5),
)
_EMBEDDING_PART = len(_PARTS) - 1  # the centroid of the sound embeddings: comparable within one version only
assert _PARTS[_EMBEDDING_PART][0][1] - _PARTS[_EMBEDDING_PART][0][0] == EMBEDDING_LENGTH
FIRST_EMBEDDING_VERSION = 2  # a profile stored without its version (NULL) was sent before version 3


def neighbours_for(community: int) -> int:
    """How many neighbours to listen to among ``community`` other DJs: about its square root,
    at least 3 (or all there are), at most 50."""
    return min(community, max(3, min(50, round(math.sqrt(community)))))


@dataclass(frozen=True)
class Neighbour:
    similarity: float  # the blend that ranks neighbours
    overlap: float  # the share of your recordings they hold too (0 when you hold none)
    profile: float  # profile similarity, -1..1 (0 when either has no profile)


def recommend(store: Store, contributor: str, limit: int = 20) -> list[dict]:
    """Up to ``limit`` recordings for ``contributor``, best first, each with its weight and
    reason (may lag: read from the standby when there is one)."""
    return store._lagging(lambda backend: _recommend(store, backend, contributor, limit))


def _recommend(store: Store, backend, contributor: str, limit: int) -> list[dict]:
    with backend.reading() as db:
        mine = {row.recording for row in db.execute(
            "SELECT DISTINCT recording FROM observations WHERE contributor = ?", (contributor,))}
        profiles, versions = {}, {}
        for row in db.execute("SELECT contributor, vector, embedding_version FROM profiles"):
            profiles[row.contributor] = struct.unpack(f"<{PROFILE_LENGTH}f", row.vector)
            versions[row.contributor] = row.embedding_version or FIRST_EMBEDDING_VERSION
        if not mine and contributor not in profiles:
            return []
        held = {row.contributor: row.held for row in db.execute(
            "SELECT contributor, COUNT(DISTINCT recording) AS held FROM observations GROUP BY contributor")
            if row.contributor != contributor}
        if not held:
            return []
        shared: dict[str, set[int]] = defaultdict(set)
        rarity: dict[int, float] = {}
        if mine:
            where, params = backend.any_of("recording", sorted(mine))
            for row in db.execute(f"SELECT DISTINCT contributor, recording FROM observations WHERE {where}", params):
                if row.contributor != contributor:
                    shared[row.contributor].add(row.recording)
            where, params = backend.any_of("id", sorted(mine))
            community = len(held) + 1
            rarity = {row.id: math.log((community + 1) / max(1, row.contributors)) for row in db.execute(
                f"SELECT id, contributors FROM recordings WHERE {where}", params)}
        neighbours = _neighbours(contributor, mine, held, shared, rarity, profiles, versions)
        if not neighbours:
            return []
        where, params = backend.any_of("contributor", sorted(neighbours))
        holders_of: dict[int, list[str]] = defaultdict(list)
        for row in db.execute(f"SELECT DISTINCT contributor, recording FROM observations WHERE {where}", params):
            if row.recording not in mine:
                holders_of[row.recording].append(row.contributor)
        if not holders_of:
            return []
        where, params = backend.any_of("id", sorted(holders_of))
        popularity = {row.id: row.contributors for row in db.execute(
            f"SELECT id, contributors FROM recordings WHERE {where} AND contributors >= ?", (*params, MIN_HOLDERS))}
        scored = sorted(((sum(neighbours[who].similarity for who in holders_of[recording])
                          / popularity[recording] ** POPULARITY_DAMPING, recording) for recording in popularity),
                        key=lambda item: (-item[0], item[1]))
        # the best, less any that is the same music as one of yours (asked in batches of a few
        # more than are needed: one statement each)
        kept: list[tuple[float, int]] = []
        for start in range(0, len(scored), 2 * limit + 10):
            batch = scored[start : start + 2 * limit + 10]
            doubles = _duplicates_of_mine(store, db, [recording for _, recording in batch], mine) if mine else set()
            kept += [item for item in batch if item[1] not in doubles]
            if len(kept) >= limit:
                break
        kept = kept[:limit]
        if not kept:
            return []
        where, params = backend.any_of("id", [recording for _, recording in kept])
        rows = {row.recording: row for row in db.execute(
            f"SELECT id AS recording, contributors, {', '.join(CONSENSUS_FIELDS)} FROM recordings WHERE {where}", params)}
        where, params = backend.any_of("recording", [recording for _, recording in kept])
        sketches: dict[int, list[int]] = {}
        for row in db.execute(f"SELECT recording, items FROM fingerprints WHERE {where} ORDER BY id", params):
            sketches.setdefault(row.recording, matching.sketch(matching.unpack(row.items)))
    return [{"weight": round(weight, 4), **recording_dict(rows[recording]),
             "reason": _reason([neighbours[who] for who in holders_of[recording]], popularity[recording], bool(mine)),
             "sketch": sketches.get(recording, [])}
            for weight, recording in kept if recording in rows]


def _neighbours(contributor: str, mine: set[int], held: dict[str, int], shared: dict[str, set[int]],
                rarity: dict[int, float], profiles: dict[str, tuple[float, ...]],
                versions: dict[str, int] | None = None) -> dict[str, Neighbour]:
    """The nearest DJs among those who hold something, by the blend of holdings and profile."""
    versions = versions or {}
    centred = _centred_parts(profiles, versions)
    me = centred.get(contributor)
    by_holdings = len(mine) / (len(mine) + HOLDINGS_HALF)
    candidates = []
    for who, size in held.items():
        common = shared.get(who, set())
        holdings = sum(rarity.get(recording, 0.0) for recording in common) / math.sqrt(len(mine) * size) if mine else 0.0
        profile = _profile_similarity(me, centred.get(who), versions.get(contributor) == versions.get(who)) \
            if me is not None else 0.0
        similarity = by_holdings * holdings + (1 - by_holdings) * max(0.0, profile)
        if similarity > 0:
            overlap = len(common) / len(mine) if mine else 0.0
            candidates.append((similarity, who, Neighbour(similarity, overlap, profile)))
    candidates.sort(key=lambda item: (-item[0], item[1]))
    return {who: neighbour for _, who, neighbour in candidates[:neighbours_for(len(held))]}


def _centred_parts(profiles: dict[str, tuple[float, ...]],
                   versions: dict[str, int] | None = None) -> dict[str, list[list[float] | None]]:
    """Each profile's parts minus the community's mean part, unit length (None: a part that is
    all zeros, as a missing embedding centroid is; []: a part equal to the mean, as in a
    community whose profiles are all alike). The embedding centroid's mean is taken among the
    profiles of its embedding version (``versions``; another version's embeddings are another
    space)."""
    if not profiles:
        return {}
    versions = versions or {}
    version_of = lambda who: versions.get(who, FIRST_EMBEDDING_VERSION)  # noqa: E731
    means: dict[int, list[list[float]]] = {}  # embedding version -> each part's mean
    for version in set(map(version_of, profiles)):
        for index, ((start, end), _) in enumerate(_PARTS):
            among = [vector for who, vector in profiles.items() if index != _EMBEDDING_PART or version_of(who) == version]
            present = [vector[start:end] for vector in among if any(vector[start:end])]
            means.setdefault(version, []).append(
                [sum(column) / len(present) for column in zip(*present)] if present else [0.0] * (end - start))
    result = {}
    for who, vector in profiles.items():
        parts: list[list[float] | None] = []
        for ((start, end), _), mean in zip(_PARTS, means[version_of(who)]):
            part = vector[start:end]
            if not any(part):
                parts.append(None)
                continue
            centred = [value - average for value, average in zip(part, mean)]
            norm = math.sqrt(sum(value * value for value in centred))
            parts.append([value / norm for value in centred] if norm > 1e-6 else [])  # []: the mean itself
        result[who] = parts
    return result


def _profile_similarity(a: list[list[float] | None] | None, b: list[list[float] | None] | None,
                        same_embedding: bool = True) -> float:
    """The weighted mean cosine of the parts both profiles have (the embedding centroids only
    when both come from one embedding version: ``same_embedding``)."""
    if a is None or b is None:
        return 0.0
    total = weights = 0.0
    for index, ((_, weight), x, y) in enumerate(zip(_PARTS, a, b)):
        if index == _EMBEDDING_PART and not same_embedding:
            continue
        if x is not None and y is not None:
            if not x or not y:  # at the mean: alike only another at the mean
                total += weight * (1.0 if not x and not y else 0.0)
            else:
                total += weight * sum(p * q for p, q in zip(x, y))
            weights += weight
    return total / weights if weights else 0.0


def _duplicates_of_mine(store: Store, db, recordings: list[int], mine: set[int]) -> set[int]:
    """Those of ``recordings`` whose fingerprints match one of a recording of ``mine`` at the
    look-up threshold (the same music, kept apart by the catalog's stricter attach threshold)."""
    where, params = store.backend.any_of("recording", recordings)
    prints = db.execute(f"SELECT recording, items, duration FROM fingerprints WHERE {where}", params).fetchall()
    queries = []
    for row in prints:
        items = matching.unpack(row.items)
        queries.append((items, row.duration, matching.index_terms(items)))
    found = store._candidates(lambda sql, p: db.execute(sql, p).fetchall(), queries) if queries else []
    return {row.recording for row, candidates in zip(prints, found)
            if any(c.recording in mine and c.score >= matching.LOOKUP_HIT for c in candidates)}


def _reason(holders: list[Neighbour], everyone: int, by_holdings: bool) -> str:
    """Why, in words: how many DJs hold it (``everyone``: at least ``MIN_HOLDERS``), how many of
    them are your neighbours and how near they are (an average: never one DJ's figure apart from
    the count). "held by 4 DJs whose libraries overlap yours by 31 %" when all of them are your
    neighbours, else "held by 5 DJs, 2 of them near you (their libraries overlap yours by 31 %)"
    (it used to say "held by 2 DJs" there, which read as if fewer than 3 held it)."""
    count = len(holders)
    if by_holdings:
        figure = round(100 * sum(h.overlap for h in holders) / count)
        apart = ("its library overlaps" if count == 1 else "their libraries overlap") + f" yours by {figure} %"
        together = f"whose libraries overlap yours by {figure} %"
    else:
        figure = round(100 * max(0.0, sum(h.profile for h in holders) / count))
        apart = ("its taste profile is" if count == 1 else "their taste profiles are") + f" {figure} % like yours"
        together = f"whose taste profiles are {figure} % like yours"
    if count >= everyone:
        return f"held by {count} DJs {together}"
    return f"held by {everyone} DJs, {count} of them near you ({apart})"
