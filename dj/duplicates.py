"""Duplicates: the same recording in several files, found by its fingerprint, not only by bytes.

Identical content (a copy in two folders) shares a content key. Different encodes of one
recording (MP3 and FLAC, another bitrate, a trimmed head) share none, but their Chromaprint
fingerprints match: candidates are the tracks whose fingerprint sketches (the 16 index terms
with the smallest hash, ``daemon/trackview.py``) share a term and whose durations are within
7 s; each candidate pair is confirmed with the full fingerprint score (AcoustID's method,
``catalog/matching.py``) at a stricter threshold than the catalog's (``SAME_RECORDING``). Each
group is ranked with the copy to keep first: lossless, then the higher bitrate, then the more
complete tags. Nothing is ever deleted.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from cratesense.catalog import matching
from cratesense.daemon.trackview import LOSSLESS_CODECS, unpack_terms
from cratesense.dj.collection import Collection, Track

_OWN_TAGS = ("artist", "title", "album", "isrc", "catalog_number")
COMMON_TERM = 50  # a term shared by more tracks than this says nothing (silence, hum)
# Stricter than the catalog's 0.6 (matching.SAME_RECORDING), which real mixes of one piece over
# the same backing track pass (0.63 on two soundtracks' variants: bench/duplicates.py). Real
# re-encodes score 0.89 or more (Opus 32k, AAC 64k), a 5 s trim of an MP3 96k 0.83 or more.
SAME_RECORDING = 0.75


def same_recording(first: list[int], second: list[int]) -> float | None:
    """The fingerprint score of two files' raw fingerprints when they hold one recording."""
    score = matching.score(first, second)
    return score if score >= SAME_RECORDING else None


@dataclass(frozen=True)
class Copy:
    path: str
    track: Track
    size: int
    bitrate_kbps: float | None
    keep: bool = False

    @property
    def lossless(self) -> bool:
        return (self.track.codec or "") in LOSSLESS_CODECS or (self.track.codec or "").startswith("pcm_")

    @property
    def tags_filled(self) -> int:
        """How many of the file's own tags say something (not counting what the catalog filled)."""
        return sum(1 for name in _OWN_TAGS if getattr(self.track, name) and name not in self.track.filled)


@dataclass(frozen=True)
class Group:
    copies: list[Copy]  # the one to keep first
    score: float  # the lowest fingerprint score that joined the group (1.0: identical files)


def _rank(copy: Copy) -> tuple:
    return (not copy.lossless, -(copy.bitrate_kbps or 0), -copy.tags_filled, copy.path)


def find_groups(collection: Collection) -> list[Group]:
    """Every group of two or more files holding the same recording, largest first."""
    rows = collection.reader.fingerprint_sketches()
    durations = {key: duration for key, _, duration in rows}
    by_term: dict[int, list[str]] = defaultdict(list)
    for key, sketch, _ in rows:
        for term in unpack_terms(sketch):
            by_term[term].append(key)
    candidates = set()
    for keys in by_term.values():
        if 1 < len(keys) <= COMMON_TERM:
            for index, first in enumerate(keys):
                for second in keys[index + 1:]:
                    if abs(durations[first] - durations[second]) <= matching.DURATION_TOLERANCE:
                        candidates.add((min(first, second), max(first, second)))
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.get(key, key) != key:
            key = parent[key]
        return key

    items: dict[str, list[int]] = {}
    joined: dict[str, float] = {}
    for first, second in sorted(candidates):
        for key in (first, second):
            if key not in items:
                items[key] = _items(collection, key)
        score = same_recording(items[first], items[second])
        if score is not None:
            a, b = root(first), root(second)
            if a != b:
                parent[a] = b
                joined[b] = min(score, joined.get(b, 1.0), joined.get(a, 1.0))
    members: dict[str, list[str]] = defaultdict(list)
    for key in {key for pair in candidates for key in pair}:
        members[root(key)].append(key)
    groups = []
    grouped: set[str] = set()
    for top, keys in members.items():
        if len(keys) > 1:
            groups.append(_group(collection, keys, joined.get(top, 1.0)))
            grouped.update(keys)
    for key, _, _ in rows:  # identical copies of one content (and no other encode)
        if key not in grouped:
            track = collection.track(key)
            if track is not None and track.copies > 1:
                groups.append(_group(collection, [key], 1.0))
    return sorted(groups, key=lambda group: (-len(group.copies), group.copies[0].path))


def _items(collection: Collection, key: str) -> list[int]:
    from cratesense.catalog.contract import ContractError, fingerprint_items

    try:
        return fingerprint_items("fingerprint", collection.reader.chromaprint(key) or "")
    except ContractError:
        return []


def _group(collection: Collection, keys: list[str], score: float) -> Group:
    copies = []
    for key in keys:
        track = collection.track(key)
        if track is None:
            continue
        for path, size in collection.files(key):
            bitrate = 8 * size / track.duration / 1000 if track.duration else None
            copies.append(Copy(path, track, size, round(bitrate, 1) if bitrate else None))
    copies.sort(key=_rank)
    copies[0] = Copy(copies[0].path, copies[0].track, copies[0].size, copies[0].bitrate_kbps, keep=True)
    return Group(copies, round(score, 3))


def group_json(group: Group) -> dict:
    return {"score": group.score, "files": [
        {"path": copy.path, "keep": copy.keep, "codec": copy.track.codec, "lossless": copy.lossless,
         "bitrate_kbps": copy.bitrate_kbps, "size": copy.size, "tags_filled": copy.tags_filled,
         "artist": copy.track.artist, "title": copy.track.title} for copy in group.copies]}
