"""Duplicates: the same recording in several files, found by its fingerprint, not only by bytes.

Identical content (a copy in two folders) shares a content key. Different encodes of one
recording (MP3 and FLAC, another bitrate, a trimmed head) share none, but their Chromaprint
fingerprints match: candidates are the tracks whose fingerprint sketches (the 16 index terms
with the smallest hash, ``daemon/trackview.py``) share a term and whose durations are within
7 s; each candidate pair is confirmed with the full fingerprint score (AcoustID's method,
``catalog/matching.py``) at a stricter threshold than the catalog's (``SAME_RECORDING``).

Each group is ranked with the best *source* first: where each copy's spectrum stops
(``analysis/cutoff.py``, from a minute of each file) tells a transcode: a lossless file that
stops where a lossy encoder stops was decoded from one (lossy to lossless); a high-bitrate lossy
file that stops where a low bitrate stops was made from one (lossy to lossy); and a copy that
stops a kilohertz or more below another holds less of the recording (so it cannot be the other's
source). An original comes before a transcode, then lossless before lossy, the higher bitrate,
the more complete tags; each reason is said in words. Nothing is ever deleted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from cratesense.catalog import matching
from cratesense.daemon.trackview import LOSSLESS_CODECS, unpack_terms
from cratesense.daemon.journal_read import LibraryEntry
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
    cutoff_hz: float | None = None  # where its spectrum stops (None: it runs on to the top)
    transcode: str | None = None  # why it looks made from another lossy file, in words
    less_complete: str | None = None  # why another copy holds more of the recording, in words

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
    """The copy to keep first: an original before a transcode (and before a copy that holds less
    of the recording than another), then lossless before lossy, the higher bitrate, the more
    complete tags."""
    return (copy.transcode is not None, copy.less_complete is not None, not copy.lossless, -(copy.bitrate_kbps or 0),
            -copy.tags_filled, copy.path)


# A lossless file whose spectrum stops below this (at a 44.1 kHz rate or more) was decoded from a
# lossy one: MP3 at 320 kb/s stops near 20.5 kHz, real recordings run on to the Nyquist frequency.
LOSSLESS_CUTOFF = 20_800.0
# A lossy file at this bitrate or more whose spectrum stops below LOSSY_CUTOFF was made from a
# lower-quality file: encoders at 192 kb/s and up keep at least ~19 kHz.
HIGH_BITRATE, LOSSY_CUTOFF = 192.0, 18_000.0
LESS_COMPLETE = 1_000.0  # Hz: a copy whose spectrum stops this much lower holds less of the recording


def _spectra(copies: list[Copy]) -> list[Copy]:
    """Each copy with where its spectrum stops, and what that says (analysis/cutoff.py)."""
    from cratesense.analysis.cutoff import measure_file
    from cratesense.dj.views import codec_name

    measured = []
    for copy in copies:
        found = measure_file(copy.path)
        cutoff, rate = found if found else (None, 0)
        transcode = None
        if cutoff is not None and rate >= 44_100:
            kind = codec_name(copy.track.codec) or "file"
            if copy.lossless and cutoff < LOSSLESS_CUTOFF:
                transcode = (f"a lossy-to-lossless transcode: this {kind}'s spectrum stops at {cutoff / 1000:.1f} kHz, "
                             "as a lossy encoder's does")
            elif not copy.lossless and (copy.bitrate_kbps or 0) >= HIGH_BITRATE and cutoff < LOSSY_CUTOFF:
                transcode = (f"a lossy-to-lossy transcode: a {copy.bitrate_kbps:.0f} kb/s {kind} whose spectrum stops at "
                             f"{cutoff / 1000:.1f} kHz, as a lower bitrate's does")
        measured.append(replace(copy, cutoff_hz=cutoff, transcode=transcode))
    tops = [(copy.cutoff_hz if copy.cutoff_hz is not None else float("inf"), copy) for copy in measured
            if copy.transcode is None]
    result = []
    for copy in measured:
        if copy.transcode is None and copy.cutoff_hz is not None and tops:
            best, fuller = max(tops, key=lambda item: item[0])
            if best - copy.cutoff_hz >= LESS_COMPLETE:
                other = codec_name(fuller.track.codec) or "other"
                top = "the top" if best == float("inf") else f"{best / 1000:.1f} kHz"
                copy = replace(copy, less_complete=f"its spectrum stops at {copy.cutoff_hz / 1000:.1f} kHz where the {other} "
                                                   f"copy's runs to {top}: less of the recording (a transcode of it, "
                                                   "or a lower-quality encode)")
        result.append(copy)
    return result


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


def duplicates_of(collection: Collection, key: str, others: Iterable[str],
                  entries: Mapping[str, LibraryEntry] | None = None) -> set[str]:
    """Those of ``others`` that hold the same recording as ``key`` (another encode, a trimmed
    copy): their fingerprint sketches share a term, their durations are within 7 s, and the full
    fingerprint score confirms it. So ``next``, ``playlist`` and ``similar`` know one recording
    in two files for what it is. ``entries``: library entries already read."""
    others = [other for other in others if other != key]
    entries = entries if entries is not None else collection.reader.entries([key, *others])
    mine = entries.get(key) or collection.reader.entries([key]).get(key)
    if mine is None or not mine.fingerprint_sketch:
        return set()
    terms = set(unpack_terms(mine.fingerprint_sketch))
    found: set[str] = set()
    my_items: list[int] | None = None
    for other in others:
        entry = entries.get(other)
        if entry is None or not entry.fingerprint_sketch or not terms & set(unpack_terms(entry.fingerprint_sketch)):
            continue
        if abs((entry.fingerprint_duration or 0.0) - (mine.fingerprint_duration or 0.0)) > matching.DURATION_TOLERANCE:
            continue
        my_items = my_items if my_items is not None else _items(collection, key)
        if same_recording(my_items, _items(collection, other)) is not None:
            found.add(other)
    return found


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
    copies = sorted(_spectra(copies), key=_rank)
    copies[0] = replace(copies[0], keep=True)
    return Group(copies, round(score, 3))


def group_json(group: Group) -> dict:
    from cratesense.dj.views import codec_name

    return {"score": group.score, "files": [
        {"path": copy.path, "keep": copy.keep, "codec": copy.track.codec, "format": codec_name(copy.track.codec),
         "lossless": copy.lossless, "bitrate_kbps": copy.bitrate_kbps, "size": copy.size,
         "cutoff_khz": None if copy.cutoff_hz is None else round(copy.cutoff_hz / 1000, 1),
         "transcode": copy.transcode, "less_complete": copy.less_complete, "tags_filled": copy.tags_filled,
         "artist": copy.track.artist, "title": copy.track.title, "label": copy.track.label} for copy in group.copies]}
