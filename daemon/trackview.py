"""The library view: one compact, query-ready row per track, derived from its analysis and the
catalog's consensus (pure: the journal stores the rows, in the same transactions as what they
derive from).

A DJ's questions (tracks at 124-128 BPM in 8A, what plays next, what sounds alike, which files
are the same recording) must be answered from a cold CLI in well under 200 ms on 100,000 tracks,
without numpy and without parsing 100,000 JSON analyses. So each row carries typed columns for
the filters, the embedding as 64 float32, and two sketches:

* ``sound_sketch``: 128 sign bits of random projections of the embedding (SimHash): the
  Hamming distance between two sketches estimates the angle between the embeddings, so the
  nearest neighbours are found among all rows with one XOR and a popcount each, then ranked
  exactly by cosine.
* ``fingerprint_sketch``: the 16 index terms of the Chromaprint fingerprint with the smallest
  hash (a bottom-k sketch). Two encodes of one recording share many of their terms, so they
  share some of these; different recordings almost never do. Duplicates are confirmed with the
  full fingerprint score (AcoustID's method, ``catalog/matching.py``).

Where the file's tags are empty and the catalog's consensus knows a value, the consensus fills
it, and ``filled`` names the field, so every view can mark it as coming from the catalog;
``backed_by`` says how many DJs stand behind that consensus, and ``catalog_camelot`` /
``catalog_bpm`` what it says where it disagrees with the file's own analysis (a key or a tempo
a DJ may want to check); ``key_strength`` how sure our own analysis is of its key (the faces
flag an uncertain one: ``analysis/constants.key_uncertain``).
"""

from __future__ import annotations

import functools
import random
import struct

import msgspec

from cratesense.analysis.constants import EMBEDDING_LENGTH, STAGE_VERSIONS, stage_versions
from cratesense.analysis.model import Consensus, TrackAnalysis
from cratesense.daemon.profile import TrackTaste

SOUND_SKETCH_BITS = 128
FINGERPRINT_SKETCH_TERMS = 16
BPM_DISAGREEMENT = 0.5  # BPM: tempi shown to 0.1 that differ by more disagree (half or double time does)


class LibraryRow(msgspec.Struct, frozen=True, kw_only=True):
    """One track's row of the library view: its fields are the table's columns (named once, here)."""

    content_key: str
    artist: str | None = None
    title: str | None = None
    album: str | None = None
    isrc: str | None = None
    catalog_number: str | None = None
    filled: str | None = None  # the fields the consensus filled, comma-separated
    duration: float | None = None
    bpm: float | None = None
    key: str | None = None
    camelot: str | None = None
    loudness: float | None = None
    replaygain: float | None = None
    true_peak: float | None = None
    beat_offset: float | None = None
    downbeat_offset: float | None = None
    beats_per_bar: int | None = None
    codec: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    tag_genre: str | None = None  # the genre the file's own tags say
    genres: str | None = None  # the sound model's genre words, comma-separated, strongest first
    moods: str | None = None
    sound_tags: str | None = None  # its voice and instrument words
    embedding: bytes | None = None  # EMBEDDING_LENGTH float32 (pack_embedding), today's version only
    sound_sketch: bytes | None = None
    fingerprint_sketch: bytes | None = None
    fingerprint_duration: float | None = None
    backed_by: int | None = None  # how many DJs the catalog's consensus on this track comes from
    catalog_camelot: str | None = None  # the consensus's key, where it disagrees with our analysis's
    catalog_bpm: float | None = None  # the consensus's tempo, where it disagrees with our analysis's
    energy: int | None = None  # 1-10
    phrases: str | None = None  # JSON of the analysis' phrases (encode_phrases)
    cues: str | None = None  # JSON of its cues
    # how sure our own analysis is of its key (the key stage's fitted probability); None where the
    # catalog's consensus filled the key or there is none
    key_strength: float | None = None

    def taste(self) -> TrackTaste:
        """What this track adds to the taste profile: what the library shows of it (our own
        descriptors, the catalog's consensus where ours are missing)."""
        return taste_of(self.bpm, self.camelot, self.loudness, self.embedding)


COLUMNS = LibraryRow.__struct_fields__
TASTE_COLUMNS = ("bpm", "camelot", "loudness", "embedding")  # what ``LibraryRow.taste`` reads


def taste_of(bpm: float | None, camelot: str | None, loudness: float | None, embedding: bytes | None) -> TrackTaste:
    return TrackTaste(bpm, camelot, loudness, list(unpack_embedding(embedding)) if embedding else None)


def library_row(content_key: str, track: TrackAnalysis, consensus: Consensus | None) -> LibraryRow:
    """The library's row for one track: the file's tags, our analysis, and the catalog's
    consensus where those are empty (named in ``filled``). The one derivation every journal write
    goes through; the taste profile is derived from the row (``LibraryRow.taste``)."""
    tags, descriptors = track.tags, track.descriptors
    metadata = consensus.metadata if consensus else None
    agreed = consensus.analysis if consensus else None
    filled: list[str] = []

    def text(name: str) -> str | None:
        ours = getattr(tags, name)
        if ours:
            return ours
        theirs = getattr(metadata, name) if metadata else None
        if theirs:
            filled.append(name)
        return theirs or None

    def measured(ours, theirs, name: str):
        """Our own descriptor; the consensus where ours was skipped or could not be found."""
        if ours is not None:
            return ours
        if theirs is not None:
            filled.append(name)
        return theirs

    artist, title, album, isrc, catalog_number = (text(name) for name in ("artist", "title", "album", "isrc",
                                                                          "catalog_number"))
    bpm = measured(descriptors.bpm, agreed.bpm if agreed else None, "bpm")
    key = measured(descriptors.key, agreed.key if agreed else None, "key")
    camelot = descriptors.camelot if descriptors.key else (agreed.camelot if agreed else None)
    loudness = measured(descriptors.loudness_lufs, agreed.loudness_lufs if agreed else None, "loudness")
    genres = measured(descriptors.genres, agreed.genres if agreed else None, "genres")
    moods = measured(descriptors.moods, agreed.moods if agreed else None, "moods")
    # Embeddings of another version mean something else: such a track has none until it is
    # analyzed again, so similar, next and the taste profile compare one version only.
    current = stage_versions(track.analyzer_version).get("embedding") == STAGE_VERSIONS["embedding"]
    embedding = descriptors.embedding if current else None
    # where other DJs' consensus says otherwise than our own analysis (ours is one vote of it)
    disputed_key = disputed_bpm = None
    if agreed is not None and consensus is not None and consensus.contributors > 1:
        if descriptors.camelot and agreed.camelot and agreed.camelot != descriptors.camelot:
            disputed_key = agreed.camelot
        if descriptors.bpm and agreed.bpm and abs(agreed.bpm - descriptors.bpm) > BPM_DISAGREEMENT:
            disputed_bpm = agreed.bpm
    return LibraryRow(
        content_key=content_key, artist=artist, title=title, album=album, isrc=isrc, catalog_number=catalog_number,
        filled=",".join(filled) or None, duration=track.audio.duration or track.fingerprint.duration,
        bpm=bpm, key=key, camelot=camelot, loudness=loudness, replaygain=descriptors.replaygain_db,
        true_peak=descriptors.true_peak_dbtp, beat_offset=descriptors.beat_offset,
        downbeat_offset=descriptors.downbeat_offset, beats_per_bar=descriptors.beats_per_bar,
        codec=track.audio.codec, sample_rate=track.audio.sample_rate, channels=track.audio.channels,
        tag_genre=tags.genre, genres=_words(genres), moods=_words(moods), sound_tags=_words(descriptors.sound_tags),
        embedding=pack_embedding(embedding) if embedding else None,
        sound_sketch=sound_sketch(embedding) if embedding else None,
        fingerprint_sketch=fingerprint_sketch(track.fingerprint.chromaprint),
        fingerprint_duration=track.fingerprint.duration,
        backed_by=consensus.contributors if consensus is not None and consensus.contributors else None,
        catalog_camelot=disputed_key, catalog_bpm=disputed_bpm,
        energy=descriptors.energy,
        phrases=_json(descriptors.phrases),
        cues=_json(descriptors.cues),
        key_strength=descriptors.key_strength if descriptors.key else None,
    )


def _json(value) -> str | None:
    return msgspec.json.encode(value).decode() if value else None


def _words(words) -> str | None:
    return ",".join(words) if words else None


def pack_embedding(embedding) -> bytes:
    return struct.pack(f"<{EMBEDDING_LENGTH}f", *embedding)


def unpack_embedding(blob: bytes) -> tuple[float, ...]:
    return struct.unpack(f"<{EMBEDDING_LENGTH}f", blob)


@functools.cache
def _hyperplanes() -> tuple[tuple[float, ...], ...]:
    """Fixed random directions (a constant seed: every install and every version of the
    sketch agree, so a stored sketch never needs recomputing for a new process)."""
    rng = random.Random(20261201)
    return tuple(tuple(rng.gauss(0.0, 1.0) for _ in range(EMBEDDING_LENGTH)) for _ in range(SOUND_SKETCH_BITS))


def sound_sketch(embedding) -> bytes:
    bits = 0
    for index, plane in enumerate(_hyperplanes()):
        if sum(p * e for p, e in zip(plane, embedding)) >= 0.0:
            bits |= 1 << index
    return bits.to_bytes(SOUND_SKETCH_BITS // 8, "little")


SKETCH_BYTES = SOUND_SKETCH_BITS // 8
_BYTE_POPCOUNTS = bytes(bin(value).count("1") for value in range(256))
_ONE_PER_SKETCH_BYTE = int.from_bytes(b"\x01" * SKETCH_BYTES, "little")


def hamming_distances(query: bytes, packed: bytes) -> bytes:
    """The bit distance from ``query`` to each sketch of ``packed`` (sketches end to end), one
    byte per sketch. Everything runs in C, which a Python loop over 100,000 sketches does not:
    one XOR of two big integers, a byte-wise popcount table, and one multiplication that adds
    each sketch's 16 byte counts into its last byte (a sum is at most 128, so no carry ever
    spills into a neighbour)."""
    count = len(packed) // SKETCH_BYTES
    differing = int.from_bytes(packed, "little") ^ int.from_bytes(query * count, "little")
    ones = differing.to_bytes(len(packed), "little").translate(_BYTE_POPCOUNTS)
    sums = (int.from_bytes(ones, "little") * _ONE_PER_SKETCH_BYTE).to_bytes(len(packed) + SKETCH_BYTES, "little")
    return sums[SKETCH_BYTES - 1 :: SKETCH_BYTES][:count]


def nearest(distances: bytes, count: int) -> list[int]:
    """The positions of the ``count`` smallest distances (ties at the cut in position order),
    found by C-level counts and searches over the bytes, never a loop over every sketch."""
    total = 0
    for cut in range(SOUND_SKETCH_BITS + 1):
        total += distances.count(cut)
        if total >= count:
            break
    closer = distances.translate(bytes(int(distance < cut) for distance in range(256)))
    return sorted(_positions(closer, 1, count) + _positions(distances, cut, count - closer.count(1)))


def _positions(data: bytes, value: int, limit: int) -> list[int]:
    found: list[int] = []
    start = 0
    while len(found) < limit and (position := data.find(value, start)) >= 0:
        found.append(position)
        start = position + 1
    return found


def cosine(a, b) -> float:
    """Embeddings are unit length: their dot product is the cosine."""
    return sum(x * y for x, y in zip(a, b))


def fingerprint_sketch(chromaprint: str | None) -> bytes | None:
    if not chromaprint:
        return None
    from cratesense.catalog import matching
    from cratesense.catalog.contract import ContractError, fingerprint_items

    try:
        items = fingerprint_items("fingerprint", chromaprint)
    except ContractError:
        return None
    terms = matching.sketch(items, FINGERPRINT_SKETCH_TERMS)  # the catalog's recommendations carry the same
    return struct.pack(f"<{len(terms)}I", *terms)


def unpack_terms(blob: bytes | None) -> tuple[int, ...]:
    return struct.unpack(f"<{len(blob) // 4}I", blob) if blob else ()
