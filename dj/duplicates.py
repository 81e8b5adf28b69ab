"""Duplicates: the same recording in several files, found by its fingerprint, not only by bytes;
and which copy to keep: the best *source*.

Identical content (a copy in two folders) shares a content key. Different encodes of one
recording (MP3 and FLAC, another bitrate, a trimmed head) share none, but their Chromaprint
fingerprints match: candidates are the tracks whose fingerprint sketches (the 16 index terms
with the smallest hash, ``daemon/trackview.py``) share a term and whose durations are within
7 s; each candidate pair is confirmed with the full fingerprint score (AcoustID's method,
``catalog/matching.py``) at a stricter threshold than the catalog's (``SAME_RECORDING``).
``Recordings`` answers the same question for ``next``, ``similar`` and ``playlist``, so one
recording in two files is one recording everywhere.

The copy to keep: an original over a transcode, then lossless over lossy, then the higher
bitrate, then the more complete tags. Where each copy's spectrum stops (the analysis' cutoff
stage, ``analysis/cutoff.py``) tells a transcode, and the reason says so:

* lossy to lossless: a lossless file that stops below ``LOSSLESS_EDGE`` was decoded from a
  lossy one (a lossless recording runs on to 20 kHz and more);
* lossy to lossy: a lossy file that stops well below what its codec keeps at its bitrate
  (``EDGES``) was made from a lower-quality file, e.g. a 320 kb/s MP3 that stops at 16 kHz,
  where the 128 kb/s MP3 it came from stopped; and an MP3 that stops below what its encoder
  usually keeps (``USUAL_EDGES``), just where a lower-bitrate copy of the group stops, was made
  from that copy (a 320 kb/s MP3 stopping at 19.3 kHz beside a 128 kb/s Vorbis that does);
* a copy whose spectrum stops ``LESS`` Hz or more below another copy's holds less of the
  recording (a lower-quality encode, or made from one), whatever its bitrate; only a lossless
  copy, an MP3 or a Vorbis can show that (``_holds_less``), and a lossless copy is only
  compared with lossless copies.

The rules only ever err towards keeping a lossless file: a lossless edge between
``LOSSLESS_EDGE`` and the top can be a mastering or resampling filter as well as a 320 kb/s
encoder's, so it proves nothing (bench/duplicates.py measures what that costs: FLACs decoded
from high-quality Vorbis files are kept over their original). Nothing is ever deleted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from cratesense.analysis.codecs import FILLS_THE_TOP, codec_name, is_lossless
from cratesense.catalog import matching
from cratesense.daemon.journal_read import LibraryEntry
from cratesense.daemon.trackview import unpack_terms
from cratesense.dj.collection import Collection, Track

_OWN_TAGS = ("artist", "title", "album", "isrc", "catalog_number")
COMMON_TERM = 50  # a term shared by more tracks than this says nothing (silence, hum)
# Stricter than the catalog's 0.6 (matching.SAME_RECORDING), which real mixes of one piece over
# the same backing track pass (0.63 on two soundtracks' variants: bench/duplicates.py). Real
# re-encodes score 0.89 or more (Opus 32k, AAC 64k), a 5 s trim of an MP3 96k 0.83 or more.
SAME_RECORDING = 0.75

LOSSLESS_EDGE = 19_500.0  # Hz: a lossless file stopping below this was decoded from a lossy one
# The least a lossy encoder keeps at a bitrate (kb/s for stereo), by codec: below this, the file
# was made from a lower-quality one. Measured with Debian's encoders on real music (LAME keeps
# ~16.8 kHz at 128 kb/s, ~18.9 at 192, ~20.2 at 320; libvorbis ~20.6 at 160), with a margin for
# other encoders; Opus is not listed: it fills its top octave whatever its source had.
EDGES = {
    "MP3": ((256, 19_000.0), (192, 18_000.0), (160, 17_000.0), (128, 15_000.0)),
    "AAC": ((192, 17_500.0),),
    "Vorbis": ((192, 17_500.0),),
}
# What an MP3 encoder usually keeps at a bitrate (LAME measured: 16.8, 18.9, 20.2 kHz): below it,
# and just where a lower-bitrate copy of the group stops (``SAME_EDGE``), an MP3 was made from
# that copy (two encodes from a lossless source stop where each encoder stops: apart).
USUAL_EDGES = {"MP3": ((256, 19_900.0), (192, 18_600.0), (160, 17_300.0), (128, 16_500.0))}
SAME_EDGE = 200.0  # Hz: two edges this close are one edge (measured: a transcode within 0-150 Hz of its source)
LESS = 1_000.0  # Hz: a copy whose spectrum stops this much below another's holds less of the recording
# s: a copy this much shorter than another is cut (an encoder's padding or a decoder's delay is
# ~0.05 s; copies joined into a group are within matching.DURATION_TOLERANCE, 7 s, of each other)
SHORTER = 1.0
EDGE_KEEPERS = frozenset({"MP3", "Vorbis"})  # lossy codecs whose encoders add nothing above their source's edge
_NOT_MEASURED = 0.0


def same_recording(first: list[int], second: list[int]) -> float | None:
    """The fingerprint score of two files' raw fingerprints when they hold one recording."""
    score = matching.score(first, second)
    return score if score >= SAME_RECORDING else None


@dataclass(frozen=True)
class Copy:
    path: str
    track: Track
    size: int
    bitrate_kbps: float | None  # as the stream's header states it, or from the file's size
    cutoff_hz: float | None = None  # where its spectrum stops (None: not measured)
    transcode: str | None = None  # why it is a transcode, when it is one
    holds_less: str | None = None  # why it holds less of the recording than another copy
    keep: bool = False

    @property
    def lossless(self) -> bool:
        return is_lossless(self.track.codec)

    @property
    def format(self) -> str:
        return codec_name(self.track.codec) or "?"

    @property
    def reach(self) -> float | None:
        """Where its spectrum stops, when that says what its source held (an Opus file fills
        its top octave whatever its source had)."""
        return None if self.cutoff_hz is None or self.track.codec in FILLS_THE_TOP else self.cutoff_hz

    @property
    def edge_found(self) -> bool:
        """Whether its spectrum stops below the top (half its sample rate)."""
        return self.cutoff_hz is not None and self.cutoff_hz < (self.track.sample_rate or 0) / 2 - 1

    @property
    def tags_filled(self) -> int:
        """How many of the file's own tags say something (not counting what the catalog filled)."""
        return sum(1 for name in _OWN_TAGS if getattr(self.track, name) and name not in self.track.filled)

    @property
    def stereo_kbps(self) -> float | None:
        """The bitrate as if the file were stereo (a mono file spends it all on one channel)."""
        if self.bitrate_kbps is None:
            return None
        return self.bitrate_kbps * (2 if self.track.channels == 1 else 1)


@dataclass(frozen=True)
class Group:
    copies: list[Copy]  # the one to keep first
    score: float  # the lowest fingerprint score that joined the group (1.0: identical files)


def _khz(hz: float) -> str:
    return f"{hz / 1000:.1f} kHz"


def judge(copies: list[Copy]) -> list[Copy]:
    """Each copy with what its spectrum says: a transcode (and which kind), or less of the
    recording than another copy; ranked with the copy to keep first (marked ``keep``)."""
    judged = [replace(copy, transcode=_transcode(copy, copies)) for copy in copies]
    judged = [replace(copy, holds_less=_holds_less(copy, judged)) for copy in judged]
    judged.sort(key=_rank)
    return [replace(copy, keep=index == 0) for index, copy in enumerate(judged)]


def _at(table: Mapping[str, tuple[tuple[int, float], ...]], copy: Copy) -> float | None:
    """The edge ``table`` gives for ``copy``'s codec at its bitrate (counted as stereo), if any."""
    if copy.stereo_kbps is None:
        return None
    return next((edge for kbps, edge in table.get(copy.format, ()) if copy.stereo_kbps >= kbps), None)


def _transcode(copy: Copy, copies: list[Copy]) -> str | None:
    """Why ``copy`` is a transcode, or None: a lossless file that stops where a lossy encoder
    stops; a lossy file that stops well below what its codec keeps at its bitrate; or one that
    stops below what its codec usually keeps, exactly where a lower-bitrate copy stops."""
    reach, name = copy.reach, copy.format
    if reach is None:
        return None
    if copy.lossless:
        if reach < LOSSLESS_EDGE and reach < (copy.track.sample_rate or 0) / 2 - LESS:
            return (f"a lossy-to-lossless transcode: this {name} stops at {_khz(reach)}, as a lossy encoder's "
                    "output does (a lossless recording runs on to 20 kHz and more)")
        return None
    floor = _at(EDGES, copy)
    if floor is not None and reach < floor:
        return (f"a lossy-to-lossy transcode: this {copy.bitrate_kbps:.0f} kb/s {name} stops at {_khz(reach)}, as "
                f"a lower bitrate does ({name} at this bitrate keeps at least {_khz(floor)}): it was made from a "
                "lower-quality file")
    usual = _at(USUAL_EDGES, copy)
    source = next((other for other in copies if other is not copy and not other.lossless and other.reach is not None
                   and abs(other.reach - reach) <= SAME_EDGE and (other.bitrate_kbps or 0) < (copy.bitrate_kbps or 0)),
                  None)
    if usual is not None and reach < usual and source is not None:
        return (f"a lossy-to-lossy transcode: this {copy.bitrate_kbps:.0f} kb/s {name} stops at {_khz(reach)}, just "
                f"where the {source.bitrate_kbps or 0:.0f} kb/s {source.format} copy stops ({name} at this bitrate "
                f"usually keeps {_khz(usual)}): it was made from that copy, or from the same lower-quality file")
    return None


def _holds_less(copy: Copy, copies: list[Copy]) -> str | None:
    """Why ``copy`` holds less of the recording than another copy, or None: it is shorter (a
    trimmed copy: ``SHORTER`` or more), or its spectrum stops lower. Only a copy whose
    edge is its source's can show that another holds less: a lossless file, an MP3, a Vorbis
    (their encoders cut at a lowpass and add nothing above it); FFmpeg's AAC encoder, like Opus,
    can put coding noise above its source's edge (measured: 22 kHz from a source stopping at
    20.6), and an MP3 in which no edge was found (every encoder has one) holds such noise too
    (LAME at 320 kb/s over a source stopping at 17 kHz, measured). And a lossless file is only
    ever compared with lossless files: where it still stops above ``LOSSLESS_EDGE``, a lossy
    copy reaching further proves nothing against it."""
    longest = max(copies, key=lambda other: other.track.duration or 0.0)
    if copy.track.duration and longest.track.duration and longest.track.duration - copy.track.duration >= SHORTER:
        return (f"it is {longest.track.duration - copy.track.duration:.1f} s shorter than the {longest.format} copy: "
                "part of the recording is cut off")
    if copy.reach is None:
        return None
    witnesses = [other for other in copies if other is not copy and other.reach is not None
                 and (other.lossless or (other.format in EDGE_KEEPERS and other.edge_found and not copy.lossless))]
    if not witnesses:
        return None
    best = max(witnesses, key=lambda other: other.reach or _NOT_MEASURED)
    top = best.reach or _NOT_MEASURED
    if copy.reach >= top - LESS:
        return None
    return (f"its spectrum stops at {_khz(copy.reach)} where the {best.format} copy's reaches {_khz(top)}: less of "
            "the recording (a lower-quality encode, or made from one)")


def _rank(copy: Copy) -> tuple:
    return (copy.transcode is not None, copy.holds_less is not None, not copy.lossless, -(copy.bitrate_kbps or 0),
            -(copy.reach or _NOT_MEASURED), -copy.tags_filled, copy.path)


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

    recordings = Recordings(collection)
    joined: dict[str, float] = {}
    for first, second in sorted(candidates):
        score = recordings.score(first, second)
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


class Recordings:
    """Which tracks hold the same recording as others (another encode, a trimmed copy), decided
    as ``find_groups`` decides it: a shared sketch term, durations within 7 s, and the full
    fingerprint score. For ``next``, ``similar`` and ``playlist``: a track's duplicate is never
    "what plays next", and never comes twice in a playlist. Fingerprints are read once per key."""

    def __init__(self, collection: Collection) -> None:
        self._collection = collection
        self._items: dict[str, list[int]] = {}
        self._sketches: dict[str, tuple[bytes, float]] = {}
        self._read_keys: set[str] = set()

    def score(self, first: str, second: str) -> float | None:
        """The fingerprint score of two tracks when they hold one recording, else None."""
        return same_recording(self._items_of(first), self._items_of(second))

    def duplicates(self, *, of: Iterable[str], among: Iterable[str]) -> set[str]:
        """Those of ``among`` that hold the same recording as one of ``of`` (content keys)."""
        of, among = list(of), list(among)
        self._read([*of, *among])
        sources = [(key, set(unpack_terms(self._sketches[key][0])), self._sketches[key][1]) for key in of
                   if key in self._sketches]
        found = set()
        for key in among:
            if key not in self._sketches:
                continue
            sketch, duration = self._sketches[key]
            terms = set(unpack_terms(sketch))
            for source, source_terms, source_duration in sources:
                if source != key and terms & source_terms and \
                        abs(duration - source_duration) <= matching.DURATION_TOLERANCE and \
                        self.score(source, key) is not None:
                    found.add(key)
                    break
        return found

    def know(self, entries: Mapping[str, LibraryEntry]) -> None:
        """Library entries already read (their fingerprint sketches): no need to read them again."""
        for key, entry in entries.items():
            if key not in self._read_keys:
                if entry.fingerprint_sketch and entry.fingerprint_duration is not None:
                    self._sketches[key] = (entry.fingerprint_sketch, entry.fingerprint_duration)
                self._read_keys.add(key)

    def _read(self, keys: list[str]) -> None:
        """The fingerprint sketches and durations of ``keys`` not read yet (one query)."""
        unread = [key for key in dict.fromkeys(keys) if key not in self._read_keys]
        if unread:
            self.know(self._collection.reader.entries(unread))
            self._read_keys.update(unread)

    def _items_of(self, key: str) -> list[int]:
        if key not in self._items:
            from cratesense.catalog.contract import ContractError, fingerprint_items

            try:
                self._items[key] = fingerprint_items("fingerprint", self._collection.reader.chromaprint(key) or "")
            except ContractError:
                self._items[key] = []
        return self._items[key]


def _group(collection: Collection, keys: list[str], score: float) -> Group:
    copies = []
    for key in keys:
        track = collection.track(key)
        analysis = collection.reader.track(key)
        if track is None or analysis is None:
            continue
        stated = analysis.audio.bitrate
        for path, size in collection.files(key):
            bitrate = stated / 1000 if stated else (8 * size / track.duration / 1000 if track.duration else None)
            copies.append(Copy(path, track, size, round(bitrate, 1) if bitrate else None,
                               cutoff_hz=analysis.descriptors.cutoff_hz))
    return Group(judge(copies), round(score, 3))


def group_json(group: Group) -> dict:
    return {"score": group.score, "files": [
        {"path": copy.path, "keep": copy.keep, "format": copy.format, "lossless": copy.lossless,
         "bitrate_kbps": copy.bitrate_kbps, "size": copy.size, "tags_filled": copy.tags_filled,
         "cutoff_khz": None if copy.cutoff_hz is None else round(copy.cutoff_hz / 1000, 1),
         "transcode": copy.transcode, "holds_less": copy.holds_less,
         "artist": copy.track.artist, "title": copy.track.title, "label": copy.track.label}
        for copy in group.copies]}
